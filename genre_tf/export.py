"""Export a run as a self-contained SavedModel folder or TFLite file: audio in, class probabilities out.

python -m genre_tf.export --run saved_models/gtzan_cnn --format saved_model   # <run>/export/saved_model/
python -m genre_tf.export --run saved_models/gtzan_cnn --format tflite        # <run>/export/<run>.tflite
python -m genre_tf.export --run DIR --format tflite --output genres.tflite
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory")
    parser.add_argument("--format", required=True, help="saved_model (a folder) or tflite (a file)")
    parser.add_argument("--output", type=Path, help="default: <run>/export/saved_model or <run>/export/<run>.tflite")
    args = parser.parse_args(argv)
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.run import RunDir
    from genre_tf.serving.export import FORMATS, check_output, check_run, default_output, describe, export
    from genre_tf.serving.export_ensemble import check_ensemble, describe_ensemble

    if args.format not in FORMATS:
        raise SystemExit(f"error: --format must be saved_model or tflite, got {args.format!r}")
    run = RunDir(args.run)
    if run.is_ensemble:
        check_ensemble(run)
    else:
        check_run(run)
    output = args.output or default_output(run, args.format)
    check_output(output, args.format)
    metadata = export(run, args.format, output, progress=lambda line: print(line, flush=True))
    print("\n".join((describe_ensemble if run.is_ensemble else describe)(metadata)))


if __name__ == "__main__":
    main()
