"""Export a run as a self-contained SavedModel folder or TFLite file: audio in, class probabilities out.

python -m genre_tf.export --run saved_models/gtzan_cnn --format saved_model   # <run>/export/saved_model/
python -m genre_tf.export --run saved_models/gtzan_cnn --format tflite        # <run>/export/<run>.tflite
python -m genre_tf.export --run DIR --format tflite --output genres.tflite
python -m genre_tf.export --run DIR --format tflite --quantize float16     # half the bytes, close answers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genre_tf.config import ConfigError
from genre_tf.config.console import add_verbose_argument, quiet_console
from genre_tf.run import RunDir

# TFLite weights: float16 holds the answers (bench/quantize.py; docs: Export); dynamic-range and full-integer int8
# were measured there to change them (a musicnn probe's probabilities by up to 0.82, 1 top-1 in 10 or all), so
# they are not offered.
QUANTIZE = ("none", "float16")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory")
    parser.add_argument("--format", required=True, help="saved_model (a folder) or tflite (a file)")
    parser.add_argument("--output", type=Path, help="default: <run>/export/saved_model or <run>/export/<run>.tflite")
    parser.add_argument(
        "--quantize", choices=QUANTIZE, default="none", help="tflite: float16 stores the weights in half the bytes"
    )
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    run = RunDir(args.run)
    check_ensemble(run) if run.is_ensemble else check_run(run)  # before TensorFlow loads: errors stay one line
    # Lazy: the library (TensorFlow) loads once the run is checked, so --help and a bad run are one line and instant.
    from genre_tf.serving.export import FORMATS, check_output, default_output, describe, export
    from genre_tf.serving.export_ensemble import describe_ensemble

    if args.format not in FORMATS:
        raise SystemExit(f"error: --format must be saved_model or tflite, got {args.format!r}")
    if args.quantize != "none" and args.format != "tflite":
        raise SystemExit(f"error: --quantize {args.quantize} is for --format tflite")
    output = args.output or default_output(run, args.format)
    check_output(output, args.format)
    metadata = export(run, args.format, output, lambda line: print(line, flush=True), args.quantize)
    print("\n".join((describe_ensemble if run.is_ensemble else describe)(metadata)))


def check_run(run: RunDir) -> None:
    """A run that can be exported, or a one-line error."""
    if problem := run.problem:
        raise SystemExit(f"error: {problem}")
    try:
        run.config  # noqa: B018  (reads and validates config.yaml)
    except ConfigError as err:
        raise SystemExit(f"error: {run.config_file}: {err}") from None


def check_ensemble(run: RunDir) -> None:
    """An ensemble run whose members can be loaded, or a one-line error."""
    for member in run.members():
        if problem := member.run.problem:
            raise SystemExit(f"error: {problem}")


if __name__ == "__main__":
    main()
