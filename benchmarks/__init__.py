"""Speed benchmarks: gdtrain against minimal NumPy loops and PyTorch (run `make bench`)."""
