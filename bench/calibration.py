"""How far each family's confidence can be trusted on gtzan_mini, before and after temperature scaling.

Trains (or finds) each model of `--models` on the grouped 5-fold cross-validation (`--folds`) and reads what its
evaluation wrote: the temperature fitted on valid, and on the fold's test tracks the expected calibration error
(15 bins) and log loss before and after, and the risk-coverage curve (accuracy of the most confident tracks kept).
Rows go to bench/results/calibration.csv and .md; the folds' curves to bench/results/risk_coverage.png.

    .venv/bin/python bench/calibration.py [--models mlp_30s,mlp_3s,musicnn_msd_probe] [--folds 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import result_table  # noqa: E402
from results import EXPERIMENTS, OUT, REPO  # noqa: E402


def trained(name: str, fold: int):
    from genre_tf.config import load_config
    from genre_tf.run import RunDir
    from genre_tf.training.fit import train

    overrides = [*EXPERIMENTS[name], f"data.fold={fold}", f"output_dir={OUT}"]
    run = RunDir(OUT / "calibration" / f"{name}_fold{fold}")
    from genre_tf.evaluation.report import evaluate_run

    train(load_config(REPO / "configs" / "gtzan_mini.yaml", overrides), run.path, verbose=0)
    evaluate_run(run, ["valid", "test"])  # the calibration of this code, also for a run trained before it
    return run


def accuracy_at(curve: pd.DataFrame, coverage: float) -> float:
    """Accuracy of the most confident tracks making up `coverage` of the fold (the first curve row reaching it)."""
    return float(curve.accuracy[curve.coverage >= coverage - 1e-9].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp_30s,mlp_3s,musicnn_msd_probe")
    parser.add_argument("--folds", default="0,1,2,3,4")
    args = parser.parse_args()
    rows, curves = [], {}
    for name in args.models.split(","):
        for fold in [int(f) for f in args.folds.split(",")]:
            run = trained(name, fold)
            metrics, curve = run.metrics(), pd.read_csv(run.risk_coverage_csv)
            test = metrics["calibration"]["test"]
            rows.append(
                {
                    "model": name,
                    "fold": fold,
                    "temperature": metrics["calibration"]["temperature"],
                    "test_tracks": test["tracks"],
                    "test_track_accuracy": round(metrics["splits"]["test"]["track_mean"]["accuracy"], 3)
                    if "track_mean" in metrics["splits"]["test"]
                    else round(metrics["splits"]["test"]["segment"]["accuracy"], 3),
                    "ece_before": round(test["ece_before"], 3),
                    "ece_after": round(test["ece_after"], 3),
                    "log_loss_before": round(test["nll_before"], 3),
                    "log_loss_after": round(test["nll_after"], 3),
                    "accuracy_top_50pct": round(accuracy_at(curve, 0.5), 3),
                    "accuracy_top_80pct": round(accuracy_at(curve, 0.8), 3),
                }
            )
            curves[(name, fold)] = curve
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    means = table.drop(columns="fold").groupby("model", sort=False).mean(numeric_only=True).round(3).reset_index()
    means.insert(1, "fold", "mean")
    result_table.record("calibration", [*rows, *means.to_dict("records")], key=["model", "fold"])
    plot(curves, result_table.RESULTS / "risk_coverage.png")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {}
    for (name, _), curve in curves.items():
        colour = colours.setdefault(name, f"C{len(colours)}")
        ax.step(curve.coverage, curve.accuracy, where="post", color=colour, alpha=0.6,
                label=name if name not in ax.get_legend_handles_labels()[1] else None)  # fmt: skip
    ax.set_xlabel("coverage (share of test tracks kept, most confident first)")
    ax.set_ylabel("accuracy of the tracks kept")
    ax.set_ylim(0, 1.02)
    ax.set_title("gtzan_mini, calibrated, one line per fold")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"written {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
