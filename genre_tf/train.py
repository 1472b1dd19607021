"""Train a model from a config into a run directory, resumable, then evaluate it.

    python -m genre_tf.train --config configs/resnet.yaml [--set train.epochs=3] [--name RUN] [--overwrite]

The run directory `<output_dir>/<run>/` gets config.yaml, model.keras (best epoch on the valid
split), history.csv, metrics.json, report.md, confusion_matrix.png, loss_curves.png, skipped.csv
and TensorBoard logs (`tensorboard --logdir saved_models`). Killed and started again with the same
command, a run resumes after its last completed epoch. With `train.refit: true` the final model.keras is
retrained on train + valid for the epochs chosen on valid; chosen/ keeps the chosen model, refit/ the refit's
history (genre_tf.training.fit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genre_tf.config import ConfigError, add_config_arguments, config_from_args, exit_config_error
from genre_tf.config.console import add_verbose_argument, quiet_console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.train", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--name", help="run name (default: the config's name)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run of this name first")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument(
        "--evaluate", default="valid,test", help="splits evaluated after training (a tuner trial: valid)"
    )
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    cfg = config_from_args(args)
    # Lazy: TensorFlow loads once the config is checked, so a config error is one line and instant.
    from genre_tf.evaluation.metrics import format_headline
    from genre_tf.training.fit import interrupted_line, train

    run_dir = Path(cfg.output_dir) / (args.name or cfg.name)
    try:
        splits = tuple(args.evaluate.split(","))
        metrics = train(cfg, run_dir, args.overwrite, 0 if args.quiet else 2, eval_splits=splits)
    except ConfigError as err:
        exit_config_error(err)
    except KeyboardInterrupt:  # Ctrl-C: the last epoch's backup is on disk; no traceback
        print(interrupted_line(cfg, run_dir), file=sys.stderr)
        raise SystemExit(130) from None
    if "headline" in metrics:
        print(format_headline(metrics))
    print(f"run written to {run_dir}")


if __name__ == "__main__":
    main()
