"""An ensemble of runs as one run: members of any families, weighted by a choice made on valid alone.

The config (config.EnsembleConfig) names the members: finished run directories, or configs of runs that are trained
first (or found finished) in `train`'s run directory, output_dir/name. They must share classes and the tracks of the
valid and test splits. Each member predicts the valid split and pools each track's segments its own way (the mean of
their probabilities, or a probe's softmax of their mean logits); a refitted member is judged there by its model chosen
on valid (chosen/), since its refitted model trained on valid. From those valid track probabilities alone come the
weights: equal, or greedy forward selection with replacement (Caruana et al. 2004). The ensemble's track probabilities
are the weighted mean of its members'; the test split is predicted by the members' own models and judged once.

The run directory <output_dir>/<name>/ holds config.yaml (the ensemble's config), classes.json, ensemble.json
(members with weight and pooling, the candidates' valid figures, the selection's rounds), members/<member>/ (a copy of
each chosen member's run directory: config, classes, scaler, model, metrics, and chosen/ of a refitted one, so that
the ensemble moves and ships as one folder; `RunDir.members` reads them back), metrics.json, report.md and the
confusion matrices. evaluate, predict and compare take it like any run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from genre_tf.config import (
    ConfigError,
    EnsembleConfig,
    check_data_paths,
    load_config,
    load_ensemble_config,
    save_config,
    to_dict,
)
from genre_tf.evaluation.compare import describe_model
from genre_tf.evaluation.pooling import PROBABILITY_FLOOR, track_pooling, weighted_mean
from genre_tf.evaluation.predictions import in_track_order, predict_frame
from genre_tf.evaluation.report import record_split, write_metrics
from genre_tf.extract.cache import write_atomic
from genre_tf.inputs.examples import load_examples
from genre_tf.run import RunDir
from genre_tf.training.fit import train

if TYPE_CHECKING:
    from genre_tf.inputs.examples import Examples

SPLITS = ("valid", "test")  # the splits every member must share: valid chooses, test judges
MEMBER_PARTS = ("config_file", "classes_file", "scaler_file", "model_file", "metrics_file")  # what a copy keeps


def member_run(path: Path) -> RunDir:
    """The finished run a member entry names: a run directory, or a config whose run is trained first (resumed, or
    found finished)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        cfg = load_config(path)
        run_dir = Path(cfg.output_dir) / cfg.name
        print(f"member {path}: run {run_dir}", flush=True)
        train(cfg, run_dir, verbose=0)
        return RunDir(run_dir)
    run = RunDir(path)
    if run.is_ensemble:
        raise ConfigError("members", f"{path} is an ensemble; list its members instead")
    if not (run.model_file.is_file() and run.finished):
        raise ConfigError("members", f"{path} is not a finished run directory (model.keras and metrics.json)")
    return run


def load_members(runs: list[RunDir]) -> list[Examples]:
    """Each run's labeled examples, made by its own recipe; ConfigError unless they share classes and split."""
    examples = []
    for run in runs:
        try:
            check_data_paths(run.config.data)
            examples.append(load_examples(run.config, progress=False))
        except ConfigError as err:  # named with the member whose data it is
            raise ConfigError("members", f"{run.path}: {err}") from None
    check_members(runs, examples)
    return examples


def check_members(runs: list[RunDir], examples: list[Examples]) -> None:
    """The runs share classes and the tracks of the valid and test splits, and valid holds tracks to choose on."""
    first, first_examples = runs[0], examples[0]
    if first_examples.split("valid").empty:
        raise ConfigError("members", f"{first.path} has no valid split to choose the ensemble on")
    for run, run_examples in zip(runs[1:], examples[1:], strict=True):
        if run.classes != first.classes:
            raise ConfigError(
                "members", f"{run.path} has other classes than {first.path} ({run.classes} vs {first.classes})"
            )
        for split in SPLITS:
            ours, theirs = set(first_examples.split(split).track_id), set(run_examples.split(split).track_id)
            if ours != theirs:
                differ = sorted(ours ^ theirs)
                raise ConfigError(
                    "members",
                    f"{run.path}'s {split} split holds other tracks than {first.path}'s ({len(differ)} differ: "
                    f"{', '.join(map(str, differ[:3]))})",
                )


def judge(run: RunDir, split: str) -> RunDir:
    """The run whose model predicts a split: a refitted run's chosen model on valid (the refit trained on it)."""
    return run.chosen if split == "valid" and run.refitted else run


def split_probabilities(
    runs: list[RunDir], examples: list[Examples], split: str
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(track ids, their labels as class indices, each run's track probabilities in that order) of one split."""
    tracks, labels, probs = None, None, []
    for run, run_examples in zip(runs, examples, strict=True):
        frame = run_examples.split(split)
        run_tracks, run_probs = predict_frame(judge(run, split), frame)
        if tracks is None:
            tracks = run_tracks
            label = pd.Series(frame.label.to_numpy(), index=frame.track_id).groupby(level=0, sort=False).first()
            labels = label.loc[tracks].map(run.classes.index).to_numpy()
        probs.append(in_track_order(tracks, run_tracks, run_probs, run))
    return tracks, labels, probs


def track_score(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, log loss) of track probabilities against the tracks' labels (class indices)."""
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    log_loss = float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], PROBABILITY_FLOOR))))
    return accuracy, log_loss


def greedy_selection(probs: list[np.ndarray], labels: np.ndarray, rounds: int) -> tuple[np.ndarray, list[dict]]:
    """Forward selection with replacement (Caruana et al. 2004): each round adds the candidate (again, if it is
    already in) whose addition scores best (accuracy, then lower log loss; the first candidate on a tie); the
    best-scoring prefix of the rounds is kept, the shortest on a tie. Returns how often each candidate is in it,
    and the rounds."""
    total, counts = np.zeros_like(probs[0]), np.zeros(len(probs), dtype=int)
    best, best_counts, trace = None, None, []
    for size in range(1, rounds + 1):
        scores = [track_score((total + p) / size, labels) for p in probs]
        keys = [(accuracy, -round(log_loss, 12)) for accuracy, log_loss in scores]  # float noise is no gain
        pick = max(range(len(probs)), key=lambda i: (keys[i], -i))
        total += probs[pick]
        counts[pick] += 1
        trace.append({"round": size, "added": pick, "valid_track_accuracy": scores[pick][0],
                      "valid_log_loss": scores[pick][1]})  # fmt: skip
        if best is None or keys[pick] > best:
            best, best_counts = keys[pick], counts.copy()
    return best_counts, trace


def weights_of(cfg: EnsembleConfig, probs: list[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Each candidate's weight (summing to 1), chosen on valid; and the greedy rounds (none for equal weights)."""
    if cfg.selection == "equal":
        return np.full(len(probs), 1.0 / len(probs)), []
    counts, trace = greedy_selection(probs, labels, cfg.rounds)
    return counts / counts.sum(), trace


def member_names(runs: list[RunDir]) -> list[str]:
    """A folder name under members/ per run: its run name, numbered where two runs share one."""
    names = [run.path.name for run in runs]
    return [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]


def copy_member(run: RunDir, target: RunDir) -> None:
    """What predicting and evaluating a run reads, and chosen/ of a refitted one; the model last."""
    pairs = [(run, target), (run.chosen, target.chosen)] if run.refitted else [(run, target)]
    for source, copy in pairs:
        copy.path.mkdir(parents=True, exist_ok=True)
        for part in MEMBER_PARTS:
            if getattr(source, part).is_file():
                shutil.copyfile(getattr(source, part), getattr(copy, part))


def prepare_run_dir(run: RunDir, cfg: EnsembleConfig, overwrite: bool) -> None:
    """A run directory belongs to one ensemble config: refuse another run's; clear what a stopped build left."""
    if overwrite and run.path.exists():
        shutil.rmtree(run.path)
    if run.model_file.is_file():
        raise ConfigError("name", f"{run.path} holds a trained run; pick another name")
    if run.config_file.is_file():
        saved, new = to_dict(load_ensemble_config(run.config_file)), to_dict(cfg)
        changed = sorted(key for key in saved.keys() | new.keys() if saved.get(key) != new.get(key))
        if changed:
            raise ConfigError(
                "name", f"{run.path} holds another ensemble ({', '.join(changed)} differ); pass --overwrite"
            )
    if not run.finished:  # a stopped build's copies: made again from the members chosen this time
        shutil.rmtree(run.members_dir, ignore_errors=True)


def candidate(run: RunDir, name: str, valid: np.ndarray, weight: float, labels: np.ndarray) -> dict:
    """What ensemble.json and the report say of a candidate run: its model, pooling, weight, valid figures alone, and
    which model made them."""
    accuracy, log_loss = track_score(valid, labels)
    return {
        "name": name,
        "source": str(run.path),
        "model": f"{run.config.model.kind}: {describe_model(run)}",
        "pooling": track_pooling(run),
        "weight": float(weight),
        "valid_track_accuracy": accuracy,
        "valid_log_loss": log_loss,
        "judged_by": "chosen/model.keras" if run.refitted else "model.keras",
    }


def build_ensemble(cfg: EnsembleConfig, overwrite: bool = False) -> dict:
    """Choose the ensemble of `cfg` on valid, write its run directory and evaluate it; returns its metrics."""
    run = RunDir(Path(cfg.output_dir) / cfg.name)
    prepare_run_dir(run, cfg, overwrite)
    if run.finished:
        print(f"{run.path} is already finished; pass --overwrite to choose it again")
        return run.metrics()
    runs = [member_run(Path(path)) for path in cfg.members]
    examples = load_members(runs)
    tracks, labels, valid = split_probabilities(runs, examples, "valid")
    weights, trace = weights_of(cfg, valid, labels)
    names = member_names(runs)
    candidates = [candidate(*args, labels) for args in zip(runs, names, valid, weights, strict=True)]
    kept = [i for i, weight in enumerate(weights) if weight > 0]
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config_file)
    write_atomic(run.classes_file, json.dumps(runs[0].classes).encode())
    for i in kept:
        copy_member(runs[i], RunDir(run.members_dir / names[i]))
    record = {
        "selection": cfg.selection,
        "rounds": cfg.rounds if cfg.selection == "greedy" else None,
        "members": [{k: candidates[i][k] for k in ("name", "weight", "pooling", "source")} for i in kept],
        "candidates": candidates,
        "trace": [{**step, "added": names[step["added"]]} for step in trace],
    }
    write_atomic(run.ensemble_file, json.dumps(record, indent=1).encode())
    valid_members = (tracks, labels, [valid[i] for i in kept])
    return evaluate_ensemble(run, list(SPLITS), [examples[i] for i in kept], {"valid": valid_members})


def evaluate_ensemble(
    run: RunDir,
    splits: list[str],
    examples: list[Examples] | None = None,
    known: dict[str, tuple[np.ndarray, np.ndarray, list[np.ndarray]]] | None = None,
) -> dict:
    """Evaluate an ensemble run on the given splits from its members' predictions (`known`: those already made, by
    split) and write metrics.json, report.md and the confusion matrices, as evaluate.evaluate_run does for a model."""
    members = run.members()
    runs = [member.run for member in members]
    weights = np.array([member.weight for member in members])
    examples = examples or load_members(runs)
    record = run.ensemble()
    metrics = {"run": run.path.name, "model": "ensemble", "classes": run.classes, "splits": {}, "ensemble": record}
    params = [member.run.metrics().get("params") if member.run.finished else None for member in members]
    if all(p is not None for p in params):
        metrics["params"] = int(sum(params))
    alone = {c["name"]: c for c in record["candidates"]}
    by_track = {}
    for split in splits:
        if examples[0].split(split).empty:
            continue
        tracks, labels, probs = (known or {}).get(split) or split_probabilities(runs, examples, split)
        for member, member_probs in zip(members, probs, strict=True):
            alone[member.run.path.name][f"{split}_track_accuracy"] = track_score(member_probs, labels)[0]
        by_track[split] = record_split(run, metrics, split, tracks, weighted_mean(probs, weights), labels)
    return write_metrics(run, metrics, by_track)  # an ensemble calibrates its average
