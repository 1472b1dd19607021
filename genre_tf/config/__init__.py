"""The typed experiment config: its schema, YAML loading with `--set key=value` overrides, and argparse helpers.

One typed config is the single source of truth of a run: it is saved with every run directory, and a run is
reproduced from its saved config alone.
"""
