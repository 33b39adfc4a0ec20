"""The math of training: models, losses, the step's parts (penalties, clipping, optimizers,
moving average), schedules, initializers, batching, evaluation and the trainer.

Nothing here reads files, YAML or the terminal, or knows about run directories or
commands: the core imports only itself and gdtrain.errors (tests/test_layout.py checks).
Its components get plain values (a resolved config's sections, arrays), never a config
file; what needs a file, such as model.init.from, is given a reader by the caller.
"""
