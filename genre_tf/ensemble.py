"""An ensemble of runs as one run: members of any families, weighted by a choice made on valid alone.

python -m genre_tf.ensemble --config configs/ensemble.yaml [--set selection=equal] [--overwrite]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genre_tf.config import ConfigError, add_config_arguments, exit_config_error, load_ensemble_config
from genre_tf.config.console import add_verbose_argument, quiet_console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.ensemble", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run of this name first")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    try:
        cfg = load_ensemble_config(args.config, args.overrides)
    except ConfigError as err:
        exit_config_error(err)
    # Lazy: TensorFlow loads once the config is checked, so --help and a config error are one line and instant.
    from genre_tf.evaluation.metrics import format_headline
    from genre_tf.training.ensemble import build_ensemble

    try:
        metrics = build_ensemble(cfg, args.overwrite)
    except ConfigError as err:
        exit_config_error(err)
    print(format_headline(metrics))
    print(f"run written to {Path(cfg.output_dir) / cfg.name}")


if __name__ == "__main__":
    main()
