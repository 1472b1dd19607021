"""PNG plots written next to the numbers: confusion matrices, loss curves, comparison bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def confusion_matrix_png(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """Counts in each cell, rows = true class, shaded by row-normalised rate."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.0 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="rate (row-normalised)")
    _save(fig, path)


def loss_curves_png(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch for train and valid; phase changes marked."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h.get(metric) for h in history], label="train")
        ax.plot(epochs, [h.get(f"val_{metric}") for h in history], label="valid")
        phases = [h.get("phase") for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(epochs[i] - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def comparison_png(names: list[str], series: dict[str, list[float]], path: Path) -> None:
    """Grouped bars: one group per run, one bar per metric."""
    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4.5))
    for k, (label, values) in enumerate(series.items()):
        values = [np.nan if v is None else v for v in values]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    _save(fig, path)


def reliability_png(before, after, title: str, path: Path) -> None:
    """Accuracy against confidence per bin (`calibration.confidence_bins`), before and after calibration; the
    diagonal is perfect calibration, and each point's size is its share of the tracks."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated perfectly")
    for table, label, marker in ((before, "before", "o"), (after, "after temperature scaling", "s")):
        filled = table[table.tracks > 0]
        sizes = 20 + 300 * filled.tracks / max(int(filled.tracks.sum()), 1)
        ax.plot(filled.confidence, filled.accuracy, marker=marker, label=label)
        ax.scatter(filled.confidence, filled.accuracy, s=sizes, alpha=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    _save(fig, path)


def risk_coverage_png(curve, title: str, path: Path) -> None:
    """Accuracy of the tracks kept against the share kept (`calibration.risk_coverage`)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(curve.coverage, curve.accuracy, where="post")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of tracks kept, most confident first)")
    ax.set_ylabel("accuracy of the tracks kept")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _save(fig, path)
