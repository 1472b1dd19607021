"""Evaluate a run at segment and track level: accuracy, per-class and macro precision / recall / F1.

python -m genre_tf.evaluate --run saved_models/demo_cnn [--split test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genre_tf.config import ConfigError, check_data_paths, exit_config_error
from genre_tf.config.console import add_verbose_argument, quiet_console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run directory, e.g. saved_models/demo_mlp")
    parser.add_argument("--split", action="append", choices=["train", "valid", "test"], help="default: valid and test")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.evaluation.metrics import format_headline
    from genre_tf.evaluation.report import evaluate_run
    from genre_tf.run import RunDir
    from genre_tf.training.ensemble import evaluate_ensemble

    run = RunDir(args.run)
    if problem := run.problem:
        raise SystemExit(f"error: {problem}")
    try:
        if run.is_ensemble:  # its members' data is checked as each is loaded
            metrics = evaluate_ensemble(run, args.split or ["valid", "test"])
        else:
            check_data_paths(run.config.data)  # a run is loaded without its data; evaluating reads that data again
            metrics = evaluate_run(run, args.split or ["valid", "test"])
    except ConfigError as err:
        exit_config_error(err)
    print(format_headline(metrics))
    print(f"written to {run.report_file}")


if __name__ == "__main__":
    main()
