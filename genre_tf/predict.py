"""Predict genres with a trained run: audio files, folders or a feature table; a Kaggle-style submission.

python -m genre_tf.predict --run saved_models/demo_cnn song.mp3            # top-k genres of one file
python -m genre_tf.predict --run DIR data/test/ --output submission.csv   # id,class per track
python -m genre_tf.predict --run DIR features_30_sec_test.csv --output submission.csv
python -m genre_tf.predict --run A --run B --run C INPUT...              # average several runs
python -m genre_tf.predict --run saved_models/ENSEMBLE INPUT...            # an ensemble run: its weights
python -m genre_tf.predict --run DIR library/ --output results.csv        # again after a kill: resumes
python -m genre_tf.predict --run DIR other/ --output results.csv --overwrite  # replace an output of other inputs
python -m genre_tf.predict --model genres.tflite library/ --output results.csv  # LiteRT, no TensorFlow
python -m genre_tf.predict --run DIR --runtime litert library/            # the run's exported .tflite on LiteRT
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Only the standard library before the runtime is known: `--model X.tflite` runs in a venv with only ai-edge-litert,
# numpy, soundfile and soxr (`serving.litert`).
from genre_tf.flags import add_compute_argument, add_verbose_argument


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", help="a finished run; several: average them")
    parser.add_argument("--model", type=Path, help="an exported .tflite file, run on LiteRT (no TensorFlow)")
    parser.add_argument(
        "--runtime",
        choices=("tensorflow", "litert"),
        help="litert: the run's exported .tflite (export --format tflite) on LiteRT; default: tensorflow, or "
        "litert with --model",
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="audio files, folders, or one feature table .csv")
    parser.add_argument("--output", type=Path, help="write id,class CSV here, chunk by chunk; again: resume")
    parser.add_argument(
        "--overwrite", action="store_true", help="with --output: replace an output of other runs or inputs"
    )
    parser.add_argument("--top-k", type=int, default=3, help="genres printed per track")
    parser.add_argument("--probabilities", action="store_true", help="add one probability column per class")
    parser.add_argument("--tags", action="store_true", help="also print the musicnn backbone's own top 5 tags")
    parser.add_argument(
        "--chunk-tracks", type=int, default=64, help="with --output: tracks analysed and written at a time"
    )
    parser.add_argument("--cache-dir", type=Path, help="a table run's cache entries go here, not its cache.dir")
    add_compute_argument(parser)
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.model is not None or args.runtime == "litert":
        return predict_litert(parser, args)
    if not args.run:
        parser.error("give --run (a finished run) or --model (an exported .tflite file)")
    # The library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    # Lazy: the console filter goes in before TensorFlow loads.
    from genre_tf.config.console import quiet_console

    quiet_console(args.verbose)
    # Lazy: TensorFlow loads after the filter is in.
    from genre_tf.serving.predict_command import predict_runs

    predict_runs(parser, args)


def predict_litert(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--model X.tflite`, or `--run RUN --runtime litert`: the exported file on LiteRT, TensorFlow never imported."""
    if args.model is not None and args.run:
        parser.error("give --model or --run, not both")
    if args.runtime == "tensorflow":
        parser.error("--model is a .tflite file, which runs on LiteRT: leave out --runtime tensorflow")
    needs_tf = (("--tags", args.tags), ("--cache-dir", args.cache_dir), ("--compute", args.compute != "float32"))
    refused = [flag for flag, given in needs_tf if given]
    if refused:
        parser.error(f"{', '.join(refused)} needs --run on TensorFlow, not a .tflite file on LiteRT")
    # Lazy: numpy, soundfile, soxr and ai-edge-litert only.
    from genre_tf.serving.litert import exported_tflite, predict_files

    if args.run and len(args.run) > 1:
        parser.error("--runtime litert takes one --run (export an ensemble run to average several)")
    model = args.model if args.model is not None else exported_tflite(args.run[0])
    if not model.is_file():
        found = "no such file" if args.model is not None else "the run has no exported TFLite file"
        hint = (
            ""
            if args.model is not None
            else f"; export it: python -m genre_tf.export --run {args.run[0]} --format tflite"
        )
        raise SystemExit(f"error: {model}: {found}{hint}")
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise SystemExit(f"error: no such file or folder: {', '.join(missing)}")
    predict_files(model, args.inputs, args.output, args.top_k, args.probabilities)


if __name__ == "__main__":
    main()
