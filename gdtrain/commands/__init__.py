"""The commands: the CLI (cli.py, the entry point) and what it shows and writes.

Everything here may import every layer below (core, data, config, run, sweep, api);
nothing below imports this package (tests/test_layout.py checks). Only this layer
prints with rich or names command-line flags.
"""
