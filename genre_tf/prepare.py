"""Build the feature and mel-image caches for a config and print a summary.

python -m genre_tf.prepare --config configs/demo.yaml [--jobs N] [--representations all]
python -m genre_tf.prepare --config configs/demo.yaml --engine beam [--beam-options "..."] [--output DIR]
"""

from __future__ import annotations

import argparse

from genre_tf.config import Config, ConfigError, add_config_arguments, config_from_args, exit_config_error
from genre_tf.config.console import add_verbose_argument, quiet_console
from genre_tf.data.index import Index
from genre_tf.features import representations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.prepare", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: cache.jobs, 0 = all cores)")
    parser.add_argument(
        "--representations",
        default="model",
        help="what to compute: model (what the config's model reads), all, or a comma-separated list of "
        f"{', '.join(representations.ALL)}",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "beam"),
        default="local",
        help="local: this machine's processes, into the cache (default); beam: an Apache Beam pipeline, into shards "
        "(needs pip install 'genre_tf[beam]')",
    )
    parser.add_argument(
        "--beam-options",
        default="--runner=DirectRunner",
        help="--engine beam: Beam pipeline options as one string, given as --beam-options='--runner=... ...'",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="--engine beam: the shards' folder, any path tf.io.gfile writes (default: <cache.dir>/shards/<name>); "
        "train reads it with data.shards: FOLDER",
    )
    parser.add_argument(
        "--shards", type=int, default=None, help="--engine beam: shard files (default: 1 per 256 tracks)"
    )
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.extract.prepared import (
        chosen_representations,
        config_index,
        format_summary,
        genre_counts,
        genre_lines,
        prepare,
        prepared_dir,
        write_prepared,
    )

    if args.engine == "local" and (args.output or args.shards):
        parser.error("--output and --shards are for --engine beam; the local engine writes the cache")
    cfg = config_from_args(args)
    try:
        names = chosen_representations(args.representations, cfg)
        if args.engine == "beam":
            index = config_index(cfg)
            print("\n".join(genre_lines(genre_counts(index.tracks))), flush=True)  # Beam splits before decoding
            prepare_on_beam(index, cfg, names, args.output, args.beam_options, args.shards)
            return
        prepared = prepare(cfg, jobs=args.jobs, names=names)
    except ConfigError as err:
        exit_config_error(err)
    out_dir = prepared_dir(cfg)
    write_prepared(prepared, cfg, out_dir)
    print(format_summary(prepared))
    print(f"written to {out_dir}")


def prepare_on_beam(
    index: Index, cfg: Config, names: tuple[str, ...], output: str | None, beam_options: str, n_shards: int | None
) -> None:
    """The Beam engine (genre_tf.extract.beam): the index analysed on a Beam runner into shards."""
    try:  # Lazy: Apache Beam is an optional dependency (genre_tf[beam]), imported only for --engine beam.
        from genre_tf.extract import beam
    except ImportError as err:
        raise SystemExit(f"prepare --engine beam needs Apache Beam ({err}): pip install 'genre_tf[beam]'") from None
    output = output or beam.default_output(cfg)
    manifest = beam.run_pipeline(index, cfg, names, output, beam_options, n_shards)
    print(beam.summary(manifest, output))
    print(f"train from them with --set data.shards={output}")


if __name__ == "__main__":
    main()
