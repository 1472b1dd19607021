"""Compare runs: a markdown and CSV table and a bar chart across run directories.

python -m genre_tf.compare saved_models/* [--output saved_models/comparison]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genre_tf.config.console import add_verbose_argument, quiet_console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--output", type=Path, default=Path("saved_models/comparison"), help="path without suffix")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
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
