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

# Nothing of genre_tf is imported here before the runtime is known: `--model X.tflite` runs in a venv with only
# ai-edge-litert, numpy, soundfile and soxr (`serving.litert`).


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
    parser.add_argument(
        "--compute",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: matmuls and convolutions in bfloat16 on CPUs with AMX / AVX512-BF16 (faster, not equal)",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's native log lines too")
    args = parser.parse_args(argv)
    if args.model is not None or args.runtime == "litert":
        return predict_litert(parser, args)
    if not args.run:
        parser.error("give --run (a finished run) or --model (an exported .tflite file)")
    # Lazy: the console filter goes in before TensorFlow loads.
    from genre_tf.config.console import quiet_console

    quiet_console(args.verbose)
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.run import RunDir
    from genre_tf.serving.compute import use_compute
    from genre_tf.serving.musicnn_tags import tag_examples, tag_lines, write_tags
    from genre_tf.serving.predict import (
        expand_runs,
        predict_to_file,
        predict_tracks,
        print_skipped,
        reads_table,
        top_k_lines,
        write_at_once,
    )
    from genre_tf.serving.submission import SubmissionFile, made_by, submission

    use_compute(args.compute)
    if args.chunk_tracks < 1:
        parser.error(f"--chunk-tracks must be 1 or more, got {args.chunk_tracks}")
    given = [RunDir(path) for path in args.run]
    for run in given:
        if problem := run.problem:
            raise SystemExit(f"error: {problem}")
    runs, weights = expand_runs(given)  # the models that predict
    for run in runs:
        if problem := run.problem:
            raise SystemExit(f"error: {problem}")
    classes = runs[0].classes
    if any(run.classes != classes for run in runs):
        raise SystemExit("error: the runs were trained on different classes and cannot be averaged")
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise SystemExit(f"error: no such file or folder: {', '.join(missing)}")
    tagged = None
    if args.output and not reads_table(args.inputs):
        made = made_by(runs, args.probabilities, weights, args.inputs)
        output = SubmissionFile(args.output, classes, args.probabilities, made)
        if args.overwrite:
            output.remove()
        tracks, probs = predict_to_file(given, args.inputs, output, args.chunk_tracks, args.cache_dir)
        kept, written, unknown = output.kept, output.written, None  # unknown tracks: their rows say so
    else:
        # A single musicnn run's graph gives the genres and its tagger's tags in one pass over the audio.
        tagged = tag_examples(runs[0], args.inputs) if args.tags and len(runs) == 1 else None
        made = predict_tracks(given, args.inputs, args.cache_dir, None if tagged is None else [tagged])
        tracks, probs, skipped, unknown = made.tracks, made.probs, made.skipped, made.unknown
        print_skipped(skipped)
        if args.output:
            write_at_once(args.output, submission(classes, tracks, probs, args.probabilities), skipped)
        kept, written = 0, len(tracks)
    if args.output:
        print(f"{kept} rows kept, {written} written to {args.output}")
    if not args.output or written <= 10:
        print("\n".join(top_k_lines(classes, tracks, probs, args.top_k, unknown)))
    if args.tags:
        examples = tagged if tagged is not None else tag_examples(runs[0], args.inputs)
        print("\n".join(tag_lines(runs[0], examples)))
        if args.output:  # beside the genres: results.tags.csv, id and the top 5 tags with their probabilities
            written = write_tags(args.output, runs[0], examples)
            print(f"tags written to {written}")


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
