"""Evaluate a run at segment and track level: accuracy, per-class and macro precision / recall / F1.

Track level aggregates a track's segments twice: by mean probability and by majority vote.
Writes metrics.json, report.md and confusion_matrix.png into the run directory. In a refitted run (`train.refit`)
the valid split is judged with the model chosen on it before the refit (`chosen/`), since the refitted model
trained on valid; every other split with the run's (refitted) model. An ensemble run (genre_tf.training.ensemble) is
judged by its members' track probabilities, weighted as it chose them.
"""

from __future__ import annotations

import json

import numpy as np

from genre_tf.evaluation import plots
from genre_tf.evaluation.calibration import (
    calibrated,
    calibration_record,
    confidence_bins,
    fit_temperature,
    risk_coverage,
)
from genre_tf.evaluation.metrics import evaluate_predictions, headline, track_level
from genre_tf.evaluation.predictions import predict_split
from genre_tf.evaluation.unknown import fit_unknown
from genre_tf.extract.cache import write_atomic
from genre_tf.inputs.examples import load_examples
from genre_tf.run import RunDir

LEVELS = ("segment", "track_mean", "track_vote")


def refit_sentence(refit: dict) -> str:
    """What report.md says of a refitted run's model and of which model each split's figures are."""
    per_phase = ", ".join(f"{phase} {epochs}" for phase, epochs in refit["epochs"].items())
    total = sum(refit["epochs"].values())
    return (
        f"The final model was refitted on train + valid ({refit['tracks']} tracks, {refit['examples']} examples) "
        f"for the {total} epoch{'s' * (total != 1)} chosen on valid (per phase: {per_phase}). The valid figures are "
        "those of the model chosen on valid before the refit (chosen/model.keras); the other splits' are the "
        "refitted model's."
    )


def ensemble_lines(ensemble: dict) -> list[str]:
    """What report.md says of an ensemble: what chose it, then each member's weight, pooling and figures alone."""
    members = ensemble["members"]
    if ensemble["selection"] == "greedy":
        how = (
            f"greedy forward selection with replacement (Caruana et al. 2004; {ensemble['rounds']} rounds, the best "
            f"prefix kept) over the valid track-level predictions of {len(ensemble['candidates'])} candidate runs, "
            "by valid track accuracy, ties by valid log loss"
        )
    else:
        how = f"equal weights over {len(members)} runs, nothing selected"
    chosen = [c["name"] for c in ensemble["candidates"] if c["judged_by"] != "model.keras"]
    by_chosen = (
        f" The refitted runs ({', '.join(chosen)}) trained on valid, so their models chosen on valid before the refit "
        "(chosen/) stood for them in the choice and in the valid figures; their refitted models make the other splits'."
        if chosen
        else ""
    )
    runs = f"{len(members)} run{'s' * (len(members) != 1)}"
    lines = [
        f"An ensemble of {runs}, chosen on valid (never on test) by {how}.{by_chosen} Each member pools a "
        "track's segments its own way (mean: of their probabilities; logits: softmax of their mean logits, a probe's "
        "way), and the ensemble's track probabilities are the weighted mean of its members'.",
        "",
        "| candidate | model | pooling | weight | valid track acc. alone | valid log loss alone | test track acc. |",
        "|---" * 7 + "|",
    ]
    for c in ensemble["candidates"]:
        test = c.get("test_track_accuracy")
        lines.append(
            f"| {c['name']} | {c['model']} | {c['pooling']} | {c['weight']:.3f} | {c['valid_track_accuracy']:.3f} "
            f"| {c['valid_log_loss']:.3f} | {'' if test is None else f'{test:.3f}'} |"
        )
    return lines


def calibration_lines(calibration: dict | None) -> list[str]:
    """The report's calibration section: the temperature, each split's calibration error before and after."""
    if not calibration:
        return []
    lines = [
        "",
        "## Calibration",
        "",
        f"Track probabilities are calibrated by temperature scaling, T = {calibration['temperature']:.3f} (fitted on "
        "valid; T > 1 softens an over-confident model). The expected calibration error (ECE, 15 bins) is the mean gap "
        "between confidence and accuracy; lower is better. reliability.png and risk_coverage.png/.csv are beside "
        "this report.",
        "",
        "| split | tracks | ECE before | ECE after | log loss before | log loss after |",
        "|---" * 6 + "|",
    ]
    for split, c in calibration.items():
        if isinstance(c, dict) and c.get("tracks"):
            lines.append(
                f"| {split} | {c['tracks']} | {c['ece_before']:.3f} | {c['ece_after']:.3f} | {c['nll_before']:.3f} "
                f"| {c['nll_after']:.3f} |"
            )
    return lines


def markdown_report(name: str, metrics: dict, classes: list[str]) -> str:
    """report.md: headline table per split and level, then per-class figures at track level."""
    lines = [f"# Run {name}", ""]
    if "refit" in metrics:
        lines += [refit_sentence(metrics["refit"]), ""]
    if "ensemble" in metrics:
        lines += [*ensemble_lines(metrics["ensemble"]), ""]
    lines += ["| split | level | n | accuracy | balanced acc. | macro P | macro R | macro F1 |", "|---" * 8 + "|"]
    for split, result in metrics["splits"].items():
        for level in LEVELS:
            if level in result:
                m = result[level]
                lines.append(
                    f"| {split} | {level} | {m['n']} | {m['accuracy']:.3f} | {m['balanced_accuracy']:.3f} "
                    f"| {m['macro_precision']:.3f} "
                    f"| {m['macro_recall']:.3f} | {m['macro_f1']:.3f} |"
                )
    for split, result in metrics["splits"].items():
        level = "track_mean" if "track_mean" in result else "segment"
        if missing := result[level].get("without_support"):
            lines += [
                "",
                f"The {split} split has no {', '.join(missing)} example: its macro figures average the "
                f"other {len(classes) - len(missing)} genres.",
            ]
    for split, result in metrics["splits"].items():
        level = "track_mean" if "track_mean" in result else "segment"
        lines += ["", f"## {split}, {level}: per class", "", "| class | precision | recall | F1 | support |"]
        lines.append("|---" * 5 + "|")
        for name in classes:
            c = result[level]["per_class"][name]
            lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    lines += calibration_lines(metrics.get("calibration"))
    extra = {k: v for k, v in metrics.items() if k not in ("splits", "ensemble", "calibration")}  # tables above
    lines += ["", "## Run", "", "```json", json.dumps(extra, indent=1), "```", ""]
    return "\n".join(lines)


def evaluate_run(run: RunDir, splits: list[str], model=None, examples=None, extra: dict | None = None) -> dict:
    """Evaluate a run's model on the given splits (valid: the chosen model of a refitted run) and write metrics.json,
    report.md, PNGs."""
    cfg = run.config
    model = model or run.load_model()
    judges = {split: (run, model) for split in splits}
    if run.refitted and "valid" in splits:  # its own scaler too: the chosen model's was fitted on train alone
        judges["valid"] = (run.chosen, run.chosen.load_model())
    examples = examples or load_examples(cfg, progress=False)
    metrics = {"run": run.path.name, "model": cfg.model.kind, "classes": run.classes, "splits": {}}
    if run.metrics_file.is_file():  # keep what training recorded (epochs, time, parameters)
        metrics.update({k: v for k, v in run.metrics().items() if k not in ("splits", "headline")})
    metrics.update(extra or {})
    tracks = {}
    for split in splits:
        frame = examples.split(split)
        if frame.empty:
            continue
        tracks[split] = record_split(run, metrics, split, *predict_split(*judges[split], frame, cfg.train.batch_size))
    if "valid" in tracks and not examples.split("train").empty:  # what "unknown" is measured from (evaluation.unknown)
        metrics["unknown"] = fit_unknown(
            run, model, examples.split("train"), examples.split("valid"), cfg.train.batch_size
        )
    return write_metrics(run, metrics, tracks)


def record_split(
    run: RunDir, metrics: dict, split: str, track_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One split's figures into metrics["splits"], and its confusion matrix PNG (test's has no suffix); returns the
    split's track probabilities and labels, which `write_metrics` calibrates."""
    result = evaluate_predictions(track_ids, labels, probs, run.classes)
    metrics["splits"][split] = result
    level = "track_mean" if "track_mean" in result else "segment"
    suffix = "" if split == "test" else f"_{split}"
    plots.confusion_matrix_png(
        np.array(result[level]["confusion"]),
        run.classes,
        f"{run.path.name}: {split}, {level.replace('_', ' ')}",
        run.path / f"confusion_matrix{suffix}.png",
    )
    return track_level(track_ids, labels, probs)


def calibrate(run: RunDir, metrics: dict, tracks: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Fit the run's temperature on its valid tracks where valid was evaluated (else keep the one it has), record
    each split's calibration error before and after, and write the reliability diagram and the risk-coverage curve
    (CSV and PNG) of test, or of the last split evaluated."""
    if "valid" in tracks:
        probs, labels = tracks["valid"]
        temperature = fit_temperature(probs, labels)
        after = calibrated(probs, temperature)
        record = {
            "temperature": temperature,
            "fitted_on": "valid",
            "tracks": len(labels),
            # What `tag --precision` picks its threshold from: each valid track's calibrated confidence and whether
            # its top genre was right.
            "valid_confidence": [round(float(c), 6) for c in after.max(axis=1)],
            "valid_correct": [bool(c) for c in after.argmax(axis=1) == labels],
        }
        write_atomic(run.calibration_file, json.dumps(record, indent=1).encode())
        run.__dict__.pop("temperature", None)  # the cached value is the old file's
    temperature = run.temperature
    metrics["calibration"] = {"temperature": temperature}
    metrics["calibration"] |= {split: calibration_record(*pair, temperature) for split, pair in tracks.items()}
    if not tracks:
        return
    split = "test" if "test" in tracks else list(tracks)[-1]
    probs, labels = tracks[split]
    after = calibrated(probs, temperature)
    title = f"{run.path.name}: {split} tracks"
    plots.reliability_png(confidence_bins(probs, labels), confidence_bins(after, labels), title, run.reliability_png)
    curve = risk_coverage(after, labels)
    write_atomic(run.risk_coverage_csv, curve.to_csv(index=False).encode())
    plots.risk_coverage_png(curve, f"{title} (calibrated)", run.risk_coverage_png)


def write_metrics(run: RunDir, metrics: dict, tracks: dict | None = None) -> dict:
    """Calibration (`calibrate`, from the splits' track probabilities where given), the headline of the recorded
    splits, report.md, the loss curves of a trained run, and metrics.json last."""
    if tracks is not None:
        calibrate(run, metrics, tracks)
    metrics["headline"] = {split: headline(result) for split, result in metrics["splits"].items()}
    write_atomic(run.report_file, markdown_report(run.path.name, metrics, run.classes).encode())
    if run.history():
        plots.loss_curves_png(run.history(), run.loss_png)
    # Last and whole: metrics.json marks the run finished, so it appears only once every other artefact is there.
    write_atomic(run.metrics_file, json.dumps(metrics, indent=1).encode())
    return metrics
