"""gdtrain: gradient descent from YAML configs, with NumPy, TF1-exact."""

__version__ = "0.1.0"
