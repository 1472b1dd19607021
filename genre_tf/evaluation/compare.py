"""Compare runs: a markdown and CSV table and a bar chart across run directories."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genre_tf import models
from genre_tf.evaluation import plots
from genre_tf.run import RunDir


def describe_model(run: RunDir) -> str:
    """The parameters that tell runs of one family apart."""
    if run.is_ensemble:  # its members and their weights
        return " + ".join(f"{member.run.path.name} {member.weight:.2f}" for member in run.members())
    return models.family(run.config.model).describe(run.config.model)


def comparison_row(run: RunDir) -> dict:
    metrics = run.metrics()
    head = metrics.get("headline", {})
    valid, test = head.get("valid", {}), head.get("test", {})
    return {
        "run": run.path.name,
        "model": metrics.get("model"),
        "parameters": describe_model(run),
        "params": metrics.get("params"),
        "trainable_params": metrics.get("trainable_params"),
        "valid_segment_acc": valid.get("segment_accuracy"),
        "valid_track_acc": valid.get("track_accuracy"),
        "test_segment_acc": test.get("segment_accuracy"),
        "test_track_acc": test.get("track_accuracy"),
        "test_balanced_acc": test.get("balanced_accuracy"),
        "test_macro_f1": test.get("macro_f1"),
        "epochs": metrics.get("epochs"),
        "train_seconds": metrics.get("train_seconds"),
    }


def comparison_table(run_dirs: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """One row per finished run; the directories that are not finished runs are named."""
    rows, ignored = [], []
    for path in run_dirs:
        run = RunDir(path)
        if run.finished and run.config_file.is_file():
            rows.append(comparison_row(run))
        elif path.is_dir():
            ignored.append(str(path))
    return pd.DataFrame(rows), ignored


def to_markdown(table: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            if v != v:  # NaN: no such figure for this row
                return ""
            return f"{v:.3f}" if 0.01 <= abs(v) <= 1 else f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def write_comparison(table: pd.DataFrame, output: Path) -> str:
    """The table as output.csv and output.md, and a bar chart of its accuracies as output.png; returns the markdown."""
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output.with_suffix(".csv"), index=False)
    markdown = to_markdown(table)
    output.with_suffix(".md").write_text(markdown + "\n")
    series = {k: table[k].tolist() for k in ("valid_track_acc", "test_segment_acc", "test_track_acc")}
    plots.comparison_png(table["run"].tolist(), series, output.with_suffix(".png"))
    return markdown
