"""`python -m genre_tf.predict --run RUN ...` on TensorFlow: the command's work once its arguments are read
(`genre_tf.predict` parses them, and runs `--model X.tflite` on LiteRT without this module)."""

from __future__ import annotations

import argparse

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


def predict_runs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Predict the inputs with the runs (`--run`, averaged), print and write the answers as the arguments say."""
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
