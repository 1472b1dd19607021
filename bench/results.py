"""Every table of the docs' Results page (docs/results.md), from the shared GTZAN material, in one command.

    .venv/bin/python bench/results.py [--only table|cv] [--folds 0,1,2,3,4] [--models name,name] [--summarise]

1. Feature table: a 30-trial KerasTuner search for the MLP on the published table (fault-filtered split,
   valid only, tuning/mlp_table.yaml), the best config and a linear model each trained with 5 seeds and
   refitted on train + valid, and the 290-row submission of the ensemble valid prefers (the MLPs, or the
   MLPs and the linear models), from the refitted models. Prints the valid accuracy of each.
2. Audio: grouped 5-fold cross-validation on the 100 clips of gtzan_mini for the MLP on 30 s
   features, the MLP on 3 s segment features, the CNN on log-mel segments, ResNet50 (random
   weights, frozen: its ImageNet weights cannot be had here) and MobileNet 0.25 (ImageNet weights
   from ../shared vs random), frozen and with the top 3 blocks fine-tuned; musicnn (MSD and MTT weights
   from the musicnn wheel): linear probe on the track's mean embedding, frozen with a new head, and the
   mid-end and back-end fine-tuned; the training recipes (augmentation, cosine schedule, refit) and an
   ablation that leaves one augmentation out at a time; scikit-learn SVM and logistic regression on the
   30 s features, and logistic regression on musicnn embeddings, as references.
   Prints mean and spread over folds at segment and track level, and what each augmentation adds.
3. Ensembles (genre_tf.training.ensemble) of those runs, fold by fold, chosen on each fold's valid split (greedy
   forward selection, and equal weights): the musicnn probe with the refitted CNN, the two with the refitted 3 s
   MLP, and the selection over each family's best recipe. Each is set against its best member on the same fold.

All of it takes about 6 hours on 2 CPU cores, most of it the CNN variants (8 minutes per fold each).
Runs are ordinary run directories under saved_models/results/ (resumable: run it again after an
interruption); the summaries the Results page includes go to bench/results/ (*.md, *.csv, cv.png).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.extract.cache import write_atomic
from genre_tf.features.musicnn_input import PATCH_FRAMES

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "saved_models" / "results"  # run directories (git ignores them)
SUMMARY = REPO / "bench" / "results"  # the tables and plot the docs' Results page includes
MOBILENET = SHARED / "weights" / "mobilenet_v1_0.25_imagenet_notop.weights.h5"
IMAGES = ["model.channels=3", "model.image_size=[128, 128]"]
TRANSFER = [*IMAGES, "model.kind=transfer", "model.transfer.head_units=128", "model.transfer.dropout=0.5"]
MOBILENET_BASE = [*TRANSFER, "model.transfer.backbone=MobileNet", "model.transfer.alpha=0.25"]
FINE_TUNE = ["train.epochs=30", "train.fine_tune_epochs=20", "train.fine_tune_learning_rate=0.0001"]
MUSICNN = ["model.kind=transfer", "model.transfer.weights=pretrained"]
MSD, MTT = "model.transfer.backbone=MSD_musicnn", "model.transfer.backbone=MTT_musicnn"
HEAD = ["model.transfer.head_units=128", "model.transfer.dropout=0.5", "train.epochs=60", "train.patience=10"]
# The linear probe of MIR benchmarks: an L2-regularised softmax layer on each track's mean embedding.
PROBE = ["model.level=track", "model.transfer.head_units=0", "model.transfer.dropout=0", "model.transfer.l2=0.001",
         "train.batch_size=20", "train.learning_rate=0.01", "train.epochs=300", "train.patience=40"]  # fmt: skip

# Training recipes for models learning from scratch: SpecAugment masks, gain, time crops and mixup on the
# mel images; feature noise and mixup on the feature rows; a cosine schedule with a warm-up epoch.
SPEC_AUGMENT = ["augment.time_masks=2", "augment.time_mask_frames=16", "augment.freq_masks=2",
                "augment.freq_mask_bands=16"]  # fmt: skip
IMAGE_AUGMENT = [*SPEC_AUGMENT, "augment.gain_db=6", "augment.time_shift=0.5", "augment.mixup_alpha=0.2"]
COSINE = ["train.schedule=cosine", "train.warmup_epochs=1"]
REFIT = ["train.refit=true"]

TABLE_AUGMENT = ["augment.feature_noise=0.2", "augment.mixup_alpha=0.2"]
MLP_30S = ["model.kind=mlp", "model.level=track", "model.mlp.units=128", "model.mlp.dropout=0.5", "train.epochs=300",
           "train.patience=40", "train.batch_size=16"]  # fmt: skip
MLP_3S = ["model.kind=mlp", "model.level=segment", "model.mlp.units=256", "model.mlp.dropout=0.5", "train.epochs=100",
          "train.patience=15"]  # fmt: skip
CNN = ["model.kind=cnn", "model.image_size=[128, 128]", "model.cnn.filters=16"]
CNN_AUGMENTED = [*CNN, "train.epochs=60", "train.patience=15", *IMAGE_AUGMENT, *COSINE]
MOBILENET_TOP3 = [*MOBILENET_BASE, f"model.transfer.weights={MOBILENET}", "model.transfer.trainable_blocks=3",
                  *FINE_TUNE]  # fmt: skip

# name -> overrides of configs/gtzan_mini.yaml
EXPERIMENTS = {
    "mlp_30s": MLP_30S,
    "mlp_3s": MLP_3S,
    "cnn": [*CNN, "train.epochs=40", "train.patience=10"],
    "resnet50_random_frozen": [*TRANSFER, "model.transfer.weights=null", "train.epochs=60"],
    "mobilenet_imagenet_frozen": [*MOBILENET_BASE, f"model.transfer.weights={MOBILENET}", "train.epochs=60"],
    "mobilenet_imagenet_top3": MOBILENET_TOP3,
    "mobilenet_random_frozen": [*MOBILENET_BASE, "model.transfer.weights=null", "train.epochs=60"],
    "mobilenet_random_top3": [*MOBILENET_BASE, "model.transfer.weights=null", "model.transfer.trainable_blocks=3",
                              *FINE_TUNE],
    "cnn_augmented": CNN_AUGMENTED,
    "mlp_3s_augmented": [*MLP_3S, *TABLE_AUGMENT, *COSINE],
    "musicnn_msd_probe": [*MUSICNN, MSD, *PROBE],
    "musicnn_mtt_probe": [*MUSICNN, MTT, *PROBE],
    "musicnn_msd_frozen": [*MUSICNN, MSD, *HEAD],
    "musicnn_mtt_frozen": [*MUSICNN, MTT, *HEAD],
    "musicnn_msd_top4": [*MUSICNN, MSD, *HEAD, "model.transfer.trainable_blocks=4", *FINE_TUNE],
    # After the epochs are chosen on valid, refit on train + valid (80 tracks, as the "4 folds" references).
    # The 30 s MLP's scaler is the one valid chose (quantile 0.78 against standard 0.76, mean over folds).
    "mlp_30s_refit": [*MLP_30S, *REFIT],
    "mlp_30s_quantile_refit": [*MLP_30S, "model.mlp.scaler=quantile", *REFIT],
    "mlp_3s_augmented_refit": [*MLP_3S, *TABLE_AUGMENT, *COSINE, *REFIT],
    "mobilenet_imagenet_top3_refit": [*MOBILENET_TOP3, *COSINE, *REFIT],
    "musicnn_msd_frozen_refit": [*MUSICNN, MSD, *HEAD, *COSINE, *REFIT],
}  # fmt: skip
# Ablation: the augmented CNN and 3 s MLP with one augmentation left out each; what an augmentation adds is
# what the full recipe loses without it.
IMAGE_AUGMENTATIONS = {"masks": SPEC_AUGMENT, "gain": ["augment.gain_db=6"], "crops": ["augment.time_shift=0.5"],
                       "mixup": ["augment.mixup_alpha=0.2"]}  # fmt: skip
TABLE_AUGMENTATIONS = {"noise": ["augment.feature_noise=0.2"], "mixup": ["augment.mixup_alpha=0.2"]}
for full, augmentations in (("cnn_augmented", IMAGE_AUGMENTATIONS), ("mlp_3s_augmented", TABLE_AUGMENTATIONS)):
    for part, keys in augmentations.items():
        EXPERIMENTS[f"{full}_no_{part}"] = [o for o in EXPERIMENTS[full] if o not in keys]
# The refitted CNN takes the recipe that valid prefers among the ablation's (mean valid track accuracy over the 5
# folds): without SpecAugment masks 0.88, the full recipe 0.83, without gain 0.85, crops 0.82, mixup 0.79. Its
# valid accuracy swings by up to 35 points between epochs while the learning rate is high, so a refit stopping where
# the first fit's curve stood at the chosen epoch lands anywhere on that swing: it anneals over its own epochs.
EXPERIMENTS["cnn_augmented_no_masks_refit"] = [*EXPERIMENTS["cnn_augmented_no_masks"], *REFIT,
                                               "train.refit_schedule=anneal"]  # fmt: skip
EXPERIMENTS["cnn_augmented_no_masks_refit_follow"] = [*EXPERIMENTS["cnn_augmented_no_masks"], *REFIT]  # the default
TRACK_LEVEL = {name for name, overrides in EXPERIMENTS.items() if "model.level=track" in overrides}

# Ensembles of the runs above, fold by fold (genre_tf.training.ensemble: weights chosen on each fold's valid split
# alone, a refitted member judged there by its model chosen on valid). The family pool takes each family's recipe with
# the best mean track accuracy in the table above (both MLPs tie): 30 s and 3 s MLP, CNN, MobileNet, musicnn.
ENSEMBLE_MEMBERS = {
    "probe_cnn": ["musicnn_msd_probe", "cnn_augmented_no_masks_refit"],
    "probe_cnn_mlp3s": ["musicnn_msd_probe", "cnn_augmented_no_masks_refit", "mlp_3s_augmented_refit"],
    "family_best": ["mlp_30s_quantile_refit", "mlp_3s_augmented_refit", "cnn_augmented_no_masks_refit",
                    "mobilenet_imagenet_top3_refit", "musicnn_msd_frozen_refit"],
}  # fmt: skip
ENSEMBLES = {
    f"ensemble_{members}_{selection}": (runs, selection)
    for members, runs in ENSEMBLE_MEMBERS.items()
    for selection in ("greedy", "equal")
}


def run_fold(name: str, overrides: list[str], fold: int) -> dict:
    from genre_tf.config import load_config
    from genre_tf.training.fit import train

    cfg = load_config(REPO / "configs" / "gtzan_mini.yaml", [*overrides, f"data.fold={fold}", f"output_dir={OUT}"])
    return train(cfg, OUT / f"{name}_fold{fold}", verbose=0)


def musicnn_embeddings() -> pd.DataFrame:
    """Each gtzan_mini track's mean MSD_musicnn embedding (200-d penultimate of its 3 s segments), by track id."""
    from genre_tf.config import load_config
    from genre_tf.inputs.examples import load_examples, split_data
    from genre_tf.inputs.recipe import InputRecipe
    from genre_tf.models import build_model
    from genre_tf.models.transfer import split_at_boundary

    cfg = load_config(REPO / "configs" / "gtzan_mini.yaml", [*MUSICNN, MSD])
    segments = load_examples(cfg, progress=False).frame
    data = split_data(segments, InputRecipe.of(cfg), sorted(segments.label.unique()), None)
    embed, _ = split_at_boundary(build_model(cfg.model, (PATCH_FRAMES, 96), 10), 0)  # patch -> penultimate
    embeddings = embed.predict(data.batches(64), verbose=0)
    return pd.DataFrame(embeddings, index=segments.track_id).groupby(level=0).mean()


def sklearn_fold(fold: int, embeddings: pd.DataFrame) -> dict:
    """SVM and logistic regression on standardised 30 s features, and logistic regression on the tracks' mean
    musicnn embeddings, same folds (fit on train, or train + valid, only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from genre_tf.config import load_config
    from genre_tf.extract.prepared import prepare
    from genre_tf.features.analysis import FEATURE_COLUMNS
    from genre_tf.features.representations import FEATURES

    cfg = load_config(REPO / "configs" / "gtzan_mini.yaml", [f"data.fold={fold}"])
    tracks = prepare(cfg, progress=False, names=(FEATURES,)).tracks
    test = tracks[tracks.split == "test"]
    # "4 folds": train + valid, as scikit-learn needs no early stopping; "3 folds": the networks' training data.
    training = {"4 folds": tracks[tracks.split != "test"], "3 folds": tracks[tracks.split == "train"]}
    scores = {}
    for name, model in (("svm", SVC(C=10)), ("logreg", LogisticRegression(C=0.1, max_iter=5000))):
        for folds, train in training.items():
            fitted = make_pipeline(StandardScaler(), model).fit(train[FEATURE_COLUMNS], train.label)
            scores[f"sklearn_{name} ({folds})"] = float((fitted.predict(test[FEATURE_COLUMNS]) == test.label).mean())
    for folds, train in training.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        fitted = model.fit(embeddings.loc[train.track_id], train.label)
        correct = fitted.predict(embeddings.loc[test.track_id]) == test.label.to_numpy()
        scores[f"sklearn_logreg_musicnn ({folds})"] = float(correct.mean())
    return scores


def record_fold(row: dict) -> None:
    """Put one fold's row into bench/results/cv_folds.csv, read again just before, so that runs of other models
    in other processes keep their rows."""
    path = SUMMARY / "cv_folds.csv"
    kept = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["model", "fold"])
    kept = kept[~((kept.model == row["model"]) & (kept.fold == row["fold"]))]
    rows = pd.concat([kept, pd.DataFrame([row])], ignore_index=True)
    write_atomic(path, rows.to_csv(index=False).encode())


def with_members(names: list[str]) -> list[str]:
    """The names, each ensemble preceded by the member experiments it needs (each once, in order)."""
    expanded = []
    for name in names:
        for needed in [*ENSEMBLES[name][0], name] if name in ENSEMBLES else [name]:
            if needed not in expanded:
                expanded.append(needed)
    return expanded


def ensemble_fold(name: str, fold: int) -> tuple[dict, float]:
    """Choose and evaluate one fold's ensemble of its members' runs of that fold; (its metrics, seconds taken)."""
    import time

    from genre_tf.config import EnsembleConfig
    from genre_tf.training.ensemble import build_ensemble

    members, selection = ENSEMBLES[name]
    cfg = EnsembleConfig(
        name=f"{name}_fold{fold}",
        output_dir=OUT,
        members=[OUT / f"{member}_fold{fold}" for member in members],
        selection=selection,
    )
    start = time.perf_counter()
    metrics = build_ensemble(cfg, overwrite=True)  # cheap, and always from the members' runs as they are now
    return metrics, time.perf_counter() - start


def fold_row(name: str, fold: int) -> dict:
    """Train (or find) one fold's run of an experiment, or choose an ensemble over its members' runs; its row."""
    print(f"fold {fold}: {name}", flush=True)
    if name in ENSEMBLES:
        metrics, seconds = ensemble_fold(name, fold)
        weights = {m["name"].removesuffix(f"_fold{fold}"): m["weight"] for m in metrics["ensemble"]["members"]}
        extra = {"train_seconds": seconds, "weights": " + ".join(f"{w:.2f} {m}" for m, w in weights.items())}
    else:
        metrics = run_fold(name, EXPERIMENTS[name], fold)
        extra = {"epochs": metrics.get("epochs"), "train_seconds": metrics.get("train_seconds")}
    head = metrics["headline"]["test"]
    track_level = name in TRACK_LEVEL or name in ENSEMBLES  # an ensemble pools tracks, as a probe does
    return {
        "model": name,
        "fold": fold,
        "segment_accuracy": np.nan if track_level else head["segment_accuracy"],
        "track_accuracy": head["track_accuracy"],
        "valid_track_accuracy": metrics["headline"]["valid"]["track_accuracy"],  # what chose the recipe
        "track_vote_accuracy": head["track_vote_accuracy"],
        "macro_f1": head["macro_f1"],
        **extra,
    }


def cross_validation(folds: list[int], names: list[str], with_sklearn: bool) -> pd.DataFrame:
    """Every fold of the named experiments and ensembles (and the scikit-learn references), merged into
    bench/results/cv_folds.csv. Fold by fold, so that an interrupted run leaves whole folds."""
    embeddings = musicnn_embeddings() if with_sklearn else None
    for fold in folds:
        if with_sklearn:
            for name, score in sklearn_fold(fold, embeddings).items():
                record_fold({"model": name, "fold": fold, "segment_accuracy": np.nan, "track_accuracy": score})
        for name in with_members(names):
            record_fold(fold_row(name, fold))
    return pd.read_csv(SUMMARY / "cv_folds.csv")


def ensembles_against_members(folds: pd.DataFrame) -> pd.DataFrame:
    """Per ensemble and fold: its test track accuracy against its best member's on that fold (the best in
    hindsight, by test), the weights valid chose; then the means over the folds where the ensemble ran."""
    accuracy = folds.set_index(["model", "fold"]).track_accuracy
    rows = []
    for name, (members, _) in ENSEMBLES.items():
        ran = []
        for fold in sorted(folds[folds.model == name].fold):
            alone = {member: accuracy.get((member, fold), np.nan) for member in members}
            best = max(alone, key=lambda m: (alone[m], -members.index(m)))
            weights = folds[(folds.model == name) & (folds.fold == fold)].weights.iloc[0]
            ran.append({"ensemble": name, "fold": str(fold), "track_accuracy": accuracy[(name, fold)],
                        "best_member": best, "best_member_accuracy": alone[best],
                        "gain": accuracy[(name, fold)] - alone[best], "weights": weights})  # fmt: skip
        if ran:
            mean = {key: np.mean([row[key] for row in ran]) for key in ("track_accuracy", "best_member_accuracy")}
            mean["gain"] = mean["track_accuracy"] - mean["best_member_accuracy"]
            rows += [*ran, {"ensemble": name, "fold": "mean", **mean, "best_member": "", "weights": ""}]
    return pd.DataFrame(rows)


def summarise_cv(folds: pd.DataFrame) -> pd.DataFrame:
    sklearn = ("svm", "logreg", "logreg_musicnn")
    order = [f"sklearn_{m} ({n} folds)" for m in sklearn for n in (4, 3)] + list(EXPERIMENTS) + list(ENSEMBLES)
    stats = folds.groupby("model").agg(
        folds=("fold", "count"),
        segment_mean=("segment_accuracy", "mean"),
        segment_std=("segment_accuracy", "std"),
        track_mean=("track_accuracy", "mean"),
        track_std=("track_accuracy", "std"),
        track_vote_mean=("track_vote_accuracy", "mean"),
        macro_f1_mean=("macro_f1", "mean"),
        train_seconds_mean=("train_seconds", "mean"),
    )
    return stats.reindex([m for m in order if m in stats.index]).reset_index()


# The training recipes, before and after: per family, the earlier recipe, the recipes that improved on it, and what
# changed (recipes.md).
RECIPES = [
    ("MLP, 30 s features", "mlp_30s", ["mlp_30s_refit", "mlp_30s_quantile_refit"],
     "quantile scaler (valid's choice), refit"),
    ("MLP, 3 s features", "mlp_3s", ["mlp_3s_augmented", "mlp_3s_augmented_refit"],
     "feature noise 0.2, mixup 0.2, cosine schedule with one warm-up epoch; refit"),
    ("CNN from scratch", "cnn", ["cnn_augmented", "cnn_augmented_no_masks", "cnn_augmented_no_masks_refit"],
     "gain up to 6 dB, time crops up to half a hop, mixup 0.2, cosine schedule, SpecAugment 2 x 16 frames and "
     "2 x 16 bands (dropped after the ablation); refit with its schedule squeezed into the chosen epochs "
     "(`train.refit_schedule: anneal`)"),
    ("MobileNet, ImageNet, top 3 blocks fine-tuned", "mobilenet_imagenet_top3", ["mobilenet_imagenet_top3_refit"],
     "cosine schedule, refit"),
    ("MSD_musicnn frozen, new head", "musicnn_msd_frozen", ["musicnn_msd_frozen_refit"], "cosine schedule, refit"),
]  # fmt: skip


def recipes(summary: pd.DataFrame) -> pd.DataFrame:
    """Per family of RECIPES: test track accuracy, mean ± std over the folds (and segment accuracy where there is
    one), of the earlier recipe and of those after it."""
    stats = summary.set_index("model")

    def figure(name: str) -> str:
        if name not in stats.index:
            return ""
        row = stats.loc[name]
        segment = "" if np.isnan(row.segment_mean) else f", segment {row.segment_mean:.3f}"
        return f"{row.track_mean:.2f} ± {row.track_std:.2f}{segment} (`{name}`)"

    rows = [
        {"model": label, "before": figure(before), "after": "; ".join(filter(None, map(figure, after))),
         "what changed": changed}
        for label, before, after, changed in RECIPES
    ]  # fmt: skip
    return pd.DataFrame(rows)


TEST_TRACKS_PER_FOLD = 20  # gtzan_mini: 100 tracks in 5 folds


def ensembles_against_musicnn(folds: pd.DataFrame) -> pd.DataFrame:
    """Per ensemble: its mean test track accuracy against the musicnn model of its pool, the member a user would pick
    alone, and the test tracks it gains or loses against it fold by fold."""
    accuracy = folds.set_index(["model", "fold"]).track_accuracy
    rows = []
    for name, (members, _) in ENSEMBLES.items():
        ran = sorted(folds[folds.model == name].fold)
        alone = next(member for member in members if member.startswith("musicnn"))
        if not ran or any((alone, fold) not in accuracy.index for fold in ran):
            continue
        gained = [round((accuracy[(name, fold)] - accuracy[(alone, fold)]) * TEST_TRACKS_PER_FOLD) for fold in ran]
        rows.append({"ensemble": name, "mean": np.mean([accuracy[(name, fold)] for fold in ran]),
                     "musicnn alone": alone, "its mean": np.mean([accuracy[(alone, fold)] for fold in ran]),
                     "folds": ", ".join(map(str, ran)),
                     "tracks gained per fold": " / ".join(f"{n:+d}" if n else "0" for n in gained)})  # fmt: skip
    return pd.DataFrame(rows)


def ablation(folds: pd.DataFrame) -> pd.DataFrame:
    """Per augmentation: the recipe's track and segment accuracy with and without it, on the folds where the full
    recipe and every one of its ablations ran (so that the rows of a recipe compare alike)."""
    rows = []
    for full, augmentations in (("cnn_augmented", IMAGE_AUGMENTATIONS), ("mlp_3s_augmented", TABLE_AUGMENTATIONS)):
        variants = {part: folds[folds.model == f"{full}_no_{part}"].set_index("fold") for part in augmentations}
        with_all = folds[folds.model == full].set_index("fold")
        shared = with_all.index
        for without in variants.values():
            shared = shared.intersection(without.index)
        for part, without in variants.items():
            if shared.empty:
                continue
            row = {"recipe": full, "augmentation": part, "folds": ", ".join(map(str, sorted(shared)))}
            for level in ("track", "segment"):
                a, b = with_all.loc[shared, f"{level}_accuracy"], without.loc[shared, f"{level}_accuracy"]
                row |= {f"{level}_with": a.mean(), f"{level}_without": b.mean(), f"{level}_added": (a - b).mean()}
            rows.append(row)
    return pd.DataFrame(rows)


TABLE = REPO / "configs" / "gtzan_table.yaml"
TABLE_SEARCH = "gtzan_table_search"
# A linear softmax model on the same standardised rows: a second family for the table's ensembles.
TABLE_LINEAR = ["model.mlp.hidden_layers=0", "train.optimizer=adamw", "train.weight_decay=0.01"]
SEEDS = range(5)


def table_runs(config: Path, prefix: str, overrides: list[str]) -> list:
    """One run per seed of a table config, refitted on train + valid after its epochs are chosen on valid."""
    from genre_tf.config import load_config
    from genre_tf.run import RunDir
    from genre_tf.training.fit import train

    runs = []
    for seed in SEEDS:
        cfg = load_config(config, [*overrides, "train.refit=true", f"seed={seed}", f"output_dir={OUT}",
                                   f"name={prefix}_seed{seed}"])  # fmt: skip
        run = RunDir(OUT / cfg.name)
        if not run.finished:
            train(cfg, run.path, verbose=0, eval_splits=("valid",))
        runs.append(run)
    return runs


def valid_accuracy(runs: list, valid: pd.DataFrame) -> float:
    """Valid track accuracy of the runs' averaged probabilities, from the models chosen on valid (not the refits,
    which trained on valid)."""
    from genre_tf.evaluation.predictions import predict_frame

    probs = np.mean([predict_frame(run.chosen, valid)[1] for run in runs], axis=0)
    return float((np.array(runs[0].classes)[probs.argmax(axis=1)] == valid.label.to_numpy()).mean())


def sklearn_table_valid(examples) -> float:
    """Logistic regression on the same standardised train rows, judged on valid: the simple baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, valid = examples.split("train"), examples.split("valid")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    fitted = model.fit(train[examples.feature_columns], train.label)
    return float((fitted.predict(valid[examples.feature_columns]) == valid.label).mean())


def feature_table() -> pd.DataFrame:
    """Search the MLP on valid; refit its best config and a linear model with 5 seeds each; submit the ensemble
    that valid prefers (the MLPs alone, or the MLPs and the linear models) from the refitted models."""
    from genre_tf.config import load_config
    from genre_tf.inputs.examples import load_examples

    command = [sys.executable, "-m", "genre_tf.tune", "--config", str(TABLE), "--space", "tuning/mlp_table.yaml",
               "--max-trials", "30", "--name", TABLE_SEARCH]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    mlp = table_runs(REPO / "tuning" / TABLE_SEARCH / "best.yaml", "table_mlp", [])
    linear = table_runs(TABLE, "table_linear", TABLE_LINEAR)
    examples = load_examples(load_config(TABLE), progress=False)
    valid = examples.split("valid")
    rows = [(f"MLP, seed {seed}", valid_accuracy([run], valid)) for seed, run in zip(SEEDS, mlp, strict=True)]
    ensembles = {"MLP x5": mlp, "linear x5": linear, "MLP x5 + linear x5": mlp + linear}
    rows += [(name, valid_accuracy(runs, valid)) for name, runs in ensembles.items()]
    rows.append(("scikit-learn logistic regression", sklearn_table_valid(examples)))
    chosen = max(["MLP x5", "MLP x5 + linear x5"], key=dict(rows).get)  # ties keep the MLPs alone
    test = SHARED / "gtzan_features" / "features_30_sec_test.csv"
    command = [sys.executable, "-m", "genre_tf.predict", *sum((["--run", str(r.path)] for r in ensembles[chosen]), []),
               str(test), "--output", str(SUMMARY / "gtzan_table_submission.csv")]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    table = pd.DataFrame(rows, columns=["model", "valid_accuracy"])
    table["submitted"] = np.where(table.model == chosen, "yes (refitted on train + valid)", "")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["table", "cv"])
    parser.add_argument("--summarise", action="store_true", help="only rewrite the cv summaries from cv_folds.csv")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument(
        "--models", help="comma-separated experiments to (re)run, `sklearn` for the references; others keep their rows"
    )
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"error: the shared GTZAN material is not at {SHARED}")
    OUT.mkdir(parents=True, exist_ok=True)
    SUMMARY.mkdir(parents=True, exist_ok=True)
    if args.summarise:  # after a run of some folds or models, or an edit of the tables' code: no training
        write_cv_summaries(pd.read_csv(SUMMARY / "cv_folds.csv"))
        return
    from genre_tf.evaluation.compare import to_markdown

    if args.only in (None, "table"):
        table = feature_table()
        (SUMMARY / "table.md").write_text(to_markdown(table) + "\n")
        print("GTZAN feature table, fault-filtered valid split (197 tracks):")
        print(to_markdown(table))
    if args.only in (None, "cv"):
        names = args.models.split(",") if args.models else [*EXPERIMENTS, *ENSEMBLES]
        unknown = [n for n in names if n not in EXPERIMENTS and n not in ENSEMBLES and n != "sklearn"]
        if unknown:
            known = ", ".join([*EXPERIMENTS, *ENSEMBLES])
            raise SystemExit(f"error: unknown experiment(s) {', '.join(unknown)}; known: {known}")
        with_sklearn = args.models is None or "sklearn" in names
        names = [name for name in names if name != "sklearn"]
        folds = cross_validation([int(f) for f in args.folds.split(",")], names, with_sklearn)
        write_cv_summaries(folds)


def write_cv_summaries(folds: pd.DataFrame) -> None:
    """The tables and plot of the fold rows: cv.csv / .md / .png, recipes.md, ensembles_musicnn.md, ablation.md and
    ensembles.md in bench/results/, each printed."""
    from genre_tf.evaluation import plots
    from genre_tf.evaluation.compare import to_markdown

    summary = summarise_cv(folds)
    summary.to_csv(SUMMARY / "cv.csv", index=False)
    (SUMMARY / "cv.md").write_text(to_markdown(summary) + "\n")
    series = {"track (mean prob.)": summary.track_mean.tolist(), "segment": summary.segment_mean.tolist()}
    plots.comparison_png(summary.model.tolist(), series, SUMMARY / "cv.png")
    print("gtzan_mini, grouped 5-fold cross-validation (test fold accuracy, mean and std over folds):")
    print(to_markdown(summary))
    before_after = recipes(summary)
    (SUMMARY / "recipes.md").write_text(to_markdown(before_after) + "\n")
    print("Training recipes, before and after (test track accuracy, mean ± std over folds):")
    print(to_markdown(before_after))
    parts = ablation(folds)
    (SUMMARY / "ablation.md").write_text(to_markdown(parts.round(3)) + "\n")
    print("What each augmentation adds (the recipe with it minus without it, same folds):")
    print(to_markdown(parts.round(3)))
    against = ensembles_against_members(folds)
    (SUMMARY / "ensembles.md").write_text(to_markdown(against.round(3)) + "\n")
    print("Ensembles against their best member, fold by fold (test track accuracy):")
    print(to_markdown(against.round(3)))
    musicnn = ensembles_against_musicnn(folds)
    (SUMMARY / "ensembles_musicnn.md").write_text(to_markdown(musicnn.round(3)) + "\n")
    print("Ensembles against the musicnn model of their pool (test track accuracy; tracks per fold):")
    print(to_markdown(musicnn.round(3)))


if __name__ == "__main__":
    main()
