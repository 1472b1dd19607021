"""Compare runs: a markdown and CSV table and a bar chart across run directories.

python -m genre_tf.compare saved_models/* [--output saved_models/comparison]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--output", type=Path, default=Path("saved_models/comparison"), help="path without suffix")
    args = parser.parse_args(argv)
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.evaluation import plots
    from genre_tf.evaluation.compare import comparison_table, to_markdown

    table, ignored = comparison_table(sorted(args.runs))
    for path in ignored:
        print(f"ignored {path}: not a finished run")
    if table.empty:
        raise SystemExit("error: no finished runs among the given directories")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output.with_suffix(".csv"), index=False)
    markdown = to_markdown(table)
    args.output.with_suffix(".md").write_text(markdown + "\n")
    series = {k: table[k].tolist() for k in ("valid_track_acc", "test_segment_acc", "test_track_acc")}
    plots.comparison_png(table["run"].tolist(), series, args.output.with_suffix(".png"))
    print(markdown)
    print(f"written to {args.output}.md, .csv and .png")


if __name__ == "__main__":
    main()
