"""Compare runs: a markdown and CSV table and a bar chart across run directories.

python -m genre_tf.compare saved_models/* [--output saved_models/comparison]

The table goes beside the runs (their common folder's comparison.md, .csv and .png) unless --output names a path.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from genre_tf.config.console import add_verbose_argument, quiet_console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument(
        "--output", type=Path, help="path without suffix (default: comparison in the runs' common folder)"
    )
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    if args.output is None:  # beside the runs, wherever the command runs from
        args.output = Path(os.path.commonpath([p.resolve().parent for p in args.runs])) / "comparison"
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.evaluation.compare import comparison_table, write_comparison

    table, ignored = comparison_table(sorted(args.runs))
    for path in ignored:
        print(f"ignored {path}: not a finished run")
    if table.empty:
        raise SystemExit("error: no finished runs among the given directories")
    print(write_comparison(table, args.output))
    print(f"written to {args.output}.md, .csv and .png")


if __name__ == "__main__":
    main()
