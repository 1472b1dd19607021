"""Write genres into your music files' tags, only where the run is sure enough: a dry run first, every change logged.

python -m genre_tf.tag --run saved_models/musicnn ~/Music                # the plan: what it would write, or why not
python -m genre_tf.tag --run RUN ~/Music --write [--log tags.log.csv]    # write it (mutagen); again after a kill
python -m genre_tf.tag --undo tags.log.csv                                 # restore every old value

`--precision 0.9` (default) picks the confidence threshold on the run's valid split so that the genres written are
right 9 times in 10; a file below it, already tagged (unless --overwrite), unreadable or in a format without tags
(.au) is left alone with its reason. mp3 and wav get ID3v2.4 (TCON), flac and ogg Vorbis comments; the calibrated
confidence, and a musicnn run's top tags, go in custom fields (genre_tf_confidence, musicnn_tags). Each file is
tagged in a copy whose decoded audio must equal the original's, then renamed over it, keeping its permissions and
modification time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genre_tf.config.console import add_compute_argument, add_verbose_argument, quiet_console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.tag", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run (or ensemble run) that was evaluated on valid")
    parser.add_argument("inputs", nargs="*", type=Path, help="audio files and folders")
    parser.add_argument("--write", action="store_true", help="apply the plan (default: a dry run that changes nothing)")
    parser.add_argument("--log", type=Path, default=Path("genre_tf-tags.log.csv"), help="where every change goes")
    parser.add_argument("--plan", type=Path, default=Path("genre_tf-tags.plan.csv"), help="where the plan goes")
    parser.add_argument("--precision", type=float, default=0.9, help="how often the genres written must be right")
    parser.add_argument("--overwrite", action="store_true", help="replace a genre a file already has")
    parser.add_argument("--field", default="genre", help="the tag field to write (genre: TCON / GENRE)")
    parser.add_argument("--undo", type=Path, metavar="LOG", help="restore the values a log says were there")
    add_compute_argument(parser)
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    if args.undo is None and (args.run is None or not args.inputs):
        parser.error("give --run and the files or folders to tag (or --undo LOG)")
    if not 0.0 < args.precision <= 1.0:
        parser.error(f"--precision must be in (0, 1], got {args.precision}")
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise SystemExit(f"error: no such file or folder: {', '.join(missing)}")
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.serving import tagging

    if args.undo is not None:
        print("\n".join(tagging.undo_lines(args.undo)))
        return
    tagging.tag_files(
        args.run, args.inputs, args.write, args.log, args.plan, args.precision, args.overwrite, args.field, args.compute
    )


if __name__ == "__main__":
    main()
