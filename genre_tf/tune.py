"""KerasTuner search over a config's hyperparameters; the objective is the valid split only.

python -m genre_tf.tune --config configs/demo.yaml --space tuning/mlp.yaml [--tuner random|bayesian|hyperband]
                        [--max-trials N] [--name NAME]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from genre_tf.config import ConfigError, add_config_arguments, config_from_args, exit_config_error
from genre_tf.config.console import add_verbose_argument, quiet_console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.tune", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--space", required=True, type=Path, help="search space, e.g. tuning/mlp.yaml")
    parser.add_argument("--tuner", choices=["random", "bayesian", "hyperband"], default="random")
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--name", help="search name (default: <config name>_<space name>)")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    cfg = config_from_args(args)
    # Lazy: TensorFlow loads once the config is checked, so --help and a config error are one line and instant.
    from genre_tf.evaluation.compare import to_markdown
    from genre_tf.training.tuner import make_tuner, read_space, summarise

    try:
        params = read_space(args.space, cfg)
        out_dir = Path("tuning") / (args.name or f"{cfg.name}_{args.space.stem}")
        tuner = make_tuner(args.tuner, cfg, params, out_dir, args.max_trials)
        tuner.search()
    except ConfigError as err:
        exit_config_error(err)
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief":
        table = summarise(tuner, cfg, params, out_dir)
        print(to_markdown(table))
        print(f"best config: {out_dir / 'best.yaml'}; trials: {out_dir / 'trials.md'}")


if __name__ == "__main__":
    main()
