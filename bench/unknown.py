"""How well "unknown" separates music a run never learned from music it did, against the maximum-probability baseline.

For the musicnn probe on gtzan_mini (grouped 5-fold, `--folds`), the known tracks are a fold's test tracks, and the
unknown ones, in turn:
- leave-one-genre-out: a run trained on 9 genres, the 10th genre's tracks (every genre, one run each);
- speech: the shared espeak-ng clips;
- noise: white and pink noise, 30 s each (`--noise` clips of each);
- silence: digital silence and hiss at -60 dBFS, 30 s each (`--noise` clips of each);
- demo: the package's synthetic demo genres;
- and the reverse, GTZAN: a probe trained on the demo genres, gtzan_mini's tracks as the unknown ones (demo test
  tracks known).
Per set: the area under the ROC curve of the unknown score (`evaluation.unknown`, cosine distance to the 5th nearest
training track) and of 1 - the calibrated maximum probability, and at the run's threshold (95 % of valid known) the
share of known tracks called unknown, of unknown tracks caught, and the precision of the flag (of the tracks called
unknown, the share that are). Rows go to bench/results/unknown.csv and .md; their means over the folds (the ten
left-out genres pooled into one row per fold first) to bench/results/unknown_cv.csv and .md.

    .venv/bin/python bench/unknown.py [--folds 0] [--logo-folds 0] [--noise 10] [--skip-logo]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import result_table  # noqa: E402
from results import MSD, MUSICNN, OUT, PROBE, REPO, SHARED  # noqa: E402

MODEL = "musicnn_msd_probe"
SR = 22050


def train_run(name: str, overrides: list[str]):
    from genre_tf.config import load_config
    from genre_tf.run import RunDir
    from genre_tf.training.fit import train

    cfg = load_config(REPO / "configs" / "gtzan_mini.yaml", [*MUSICNN, MSD, *PROBE, *overrides, f"output_dir={OUT}"])
    from genre_tf.evaluation.report import evaluate_run

    run = RunDir(OUT / "unknown" / name)
    train(cfg, run.path, verbose=0)
    if not (run.unknown_file.is_file() and run.calibration_file.is_file()):  # a run found evaluated before them
        evaluate_run(run, ["valid", "test"])
    return run


def scored(run, frame_or_paths, model) -> tuple[np.ndarray, np.ndarray]:
    """(unknown scores, 1 - calibrated max probability) per track of a frame of examples, or of audio paths."""
    from genre_tf.data.index import index_paths
    from genre_tf.evaluation.calibration import calibrated
    from genre_tf.evaluation.predictions import predict_frame
    from genre_tf.evaluation.unknown import embed_frame, knn_scores, load_unknown
    from genre_tf.inputs.examples import examples_for_index

    frame = frame_or_paths
    if isinstance(frame_or_paths, list):
        frame = examples_for_index(index_paths(frame_or_paths), run.config, progress=False).frame
    tracks, embeddings = embed_frame(run, model, frame, run.config.train.batch_size)
    reference, record = load_unknown(run)
    scores = knn_scores(embeddings, reference, record["k"])
    prob_tracks, probs = predict_frame(run, frame, model)
    order = {t: i for i, t in enumerate(prob_tracks)}
    confidence = calibrated(probs, run.temperature).max(axis=1)[[order[t] for t in tracks]]
    return scores, 1.0 - confidence


def row(name: str, fold: int, run, known, unknown) -> dict:
    from genre_tf.evaluation.unknown import auroc, load_unknown

    threshold = load_unknown(run)[1]["threshold"]
    (known_knn, known_msp), (out_knn, out_msp) = known, unknown
    return {
        "model": MODEL,
        "fold": fold,
        "unknown": name,
        "known_tracks": len(known_knn),
        "unknown_tracks": len(out_knn),
        "auroc_unknown_score": round(auroc(known_knn, out_knn), 3),
        "auroc_max_probability": round(auroc(known_msp, out_msp), 3),
        "known_called_unknown": round(float(np.mean(known_knn > threshold)), 3),
        "unknown_caught": round(float(np.mean(out_knn > threshold)), 3),
        "unknown_precision": round(flag_precision(known_knn > threshold, out_knn > threshold), 3),
    }


def flag_precision(known_flagged: np.ndarray, unknown_flagged: np.ndarray) -> float:
    """Of the tracks called unknown, the share that are (NaN when none is called unknown)."""
    flagged = known_flagged.sum() + unknown_flagged.sum()
    return float(unknown_flagged.sum() / flagged) if flagged else float("nan")


def fold_means(frame) -> list[dict]:
    """Per unknown set, the mean and standard deviation over folds; the left-out genres pooled per fold first."""
    left_out = frame["unknown"].str.startswith("left-out")
    frame["unknown"] = frame["unknown"].where(~left_out, "left-out genre (10 pooled)")
    metrics = ["auroc_unknown_score", "auroc_max_probability", "known_called_unknown", "unknown_caught",
               "unknown_precision"]  # fmt: skip
    per_fold = frame.groupby(["unknown", "fold"], sort=False)[[m for m in metrics if m in frame]].mean()
    out = []
    for name, folds in per_fold.groupby(level=0, sort=False):
        summary = {"model": MODEL, "unknown": name, "folds": len(folds)}
        for metric in per_fold.columns:
            summary[metric] = f"{folds[metric].mean():.3f} ± {folds[metric].std(ddof=0):.3f}"
        out.append(summary)
    return out


def write_clips(folder: Path, n: int, seed: int, make) -> list[Path]:
    """`n` 30 s WAV clips of each kind `make(rng)` gives ({kind: signal}), named `<kind>_NN.wav`."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        for kind, signal in make(rng).items():
            path = folder / f"{kind}_{i:02d}.wav"
            sf.write(path, np.clip(signal, -1, 1).astype(np.float32), SR)
            paths.append(path)
    return paths


def noise(rng) -> dict[str, np.ndarray]:
    """White noise, and brown-ish noise (integrated white noise) high-passed by subtracting its moving average."""
    white = rng.normal(0, 0.1, 30 * SR)
    pink = np.cumsum(rng.normal(0, 0.02, 30 * SR))
    return {"white": white, "pink": pink - np.convolve(pink, np.ones(2205) / 2205, mode="same")}


def silence(rng) -> dict[str, np.ndarray]:
    """Digital silence (refused while decoding, as silent) and hiss at -60 dBFS."""
    return {"silence": np.zeros(30 * SR), "hiss": rng.normal(0, 0.001, 30 * SR)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0")
    parser.add_argument("--noise", type=int, default=10)
    parser.add_argument("--skip-logo", action="store_true", help="no leave-one-genre-out runs")
    parser.add_argument("--logo-folds", help="the folds with leave-one-genre-out runs (default: --folds)")
    args = parser.parse_args()
    from genre_tf.data.demo import generate_demo
    from genre_tf.data.index import GTZAN_GENRES
    from genre_tf.inputs.examples import load_examples

    scratch = OUT / "unknown" / "inputs"  # a fixed place: the runs trained on its folders are found again
    scratch.mkdir(parents=True, exist_ok=True)
    noises = write_clips(scratch, args.noise, 0, noise)
    silences = write_clips(scratch, args.noise, 1, silence)
    demo = generate_demo(scratch / "demo", tracks_per_genre=10, seconds=30.0, sample_rate=SR)
    speech = sorted((SHARED / "speech").glob("*.flac"))
    folds = [int(f) for f in args.folds.split(",")]
    for fold in folds:  # the sets every fold's own run answers first: one run (and the reverse's) per fold
        run = train_run(f"{MODEL}_fold{fold}", [f"data.fold={fold}"])
        model = run.load_model()
        test = load_examples(run.config, progress=False).split("test")
        known = scored(run, test, model)
        rows = []
        for name, paths in (("speech", speech), ("noise", noises), ("silence", silences), ("demo genres", demo)):
            rows.append(row(name, fold, run, known, scored(run, paths, model)))
            print(rows[-1], flush=True)
        # The reverse: a probe on the demo genres; gtzan_mini is the unknown music.
        demo_run = train_run(
            f"demo_probe_fold{fold}", [f"data.root={scratch / 'demo'}", "data.source=folder", f"data.fold={fold}"]
        )
        demo_model = demo_run.load_model()
        demo_test = load_examples(demo_run.config, progress=False).split("test")
        gtzan = sorted((SHARED / "gtzan_mini").rglob("*.flac"))
        rows.append(row("GTZAN (run on demo genres)", fold, demo_run, scored(demo_run, demo_test, demo_model),
                        scored(demo_run, gtzan, demo_model)))  # fmt: skip
        print(rows[-1], flush=True)
        save(rows)
    logo_folds = folds if args.logo_folds is None else [int(f) for f in args.logo_folds.split(",")]
    for fold in [] if args.skip_logo else logo_folds:  # ten runs a fold: saved fold by fold
        rows = []
        for genre in GTZAN_GENRES:
            rows.append(leave_one_out(genre, fold, scratch))
            print(rows[-1], flush=True)
        save(rows)


def save(rows: list[dict]) -> None:
    """Rows into unknown.csv (replacing those of the same model, fold and set), then the means over folds again."""
    import pandas as pd

    result_table.record("unknown", rows, key=["model", "fold", "unknown"])
    every_fold = pd.read_csv(result_table.RESULTS / "unknown.csv")
    result_table.record("unknown_cv", fold_means(every_fold), key=["model", "unknown"])


def leave_one_out(genre: str, fold: int, scratch: Path) -> dict:
    """A probe on the other 9 genres (links to gtzan_mini), its fold's test tracks known, `genre`'s 10 unknown."""
    from genre_tf.inputs.examples import load_examples

    root = scratch / f"without_{genre}"
    root.mkdir(exist_ok=True)
    for folder in (SHARED / "gtzan_mini").iterdir():
        if folder.is_dir() and folder.name != genre and not (root / folder.name).exists():
            (root / folder.name).symlink_to(folder.resolve())
    run = train_run(f"{MODEL}_without_{genre}_fold{fold}", [f"data.root={root}", f"data.fold={fold}"])
    model = run.load_model()
    test = load_examples(run.config, progress=False).split("test")
    left_out = sorted((SHARED / "gtzan_mini" / genre).glob("*.flac"))
    result = row(f"left-out genre: {genre}", fold, run, scored(run, test, model), scored(run, left_out, model))
    return result


if __name__ == "__main__":
    main()
