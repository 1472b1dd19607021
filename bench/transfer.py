"""Benchmark: seconds per training epoch of a ResNet50 transfer model, plain `fit` against the frozen-boundary cache.

Both paths train the same model on the same synthetic 16-bit mel PNGs in the same run, through the trainer's own
pipeline (`train_dataset`). The plain path decodes and resizes every image and runs the whole backbone forward
every epoch, plus the backward pass through the trainable blocks; the cached path computes the activations at the
boundary once (the one-off cost, reported apart) and every epoch runs only the trainable blocks and the head on
them. The first epoch of each fit traces the graph and is not counted. Weights are random (`weights: null`): the
cost of a pass does not depend on the values of the weights.

    .venv/bin/python bench/transfer.py --images 256 --size 96 --blocks 0 1 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from result_table import record  # bench/result_table.py, beside this script

from genre_tf.config import CacheConfig, Config, MelConfig, ModelConfig, TrainConfig, TransferConfig
from genre_tf.features.analysis import encode_mel_png
from genre_tf.inputs.examples import split_data
from genre_tf.inputs.pipeline import image_input_shape, train_dataset
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.models import build_model
from genre_tf.training.boundary import boundary_split, cut_at_boundary

CLASSES = [f"genre{i}" for i in range(10)]
TARGETS = {0: 50.0, 1: 3.0}  # blocks -> minimum speed-up per epoch


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def write_mels(root: Path, n: int, size: int, seed: int) -> pd.DataFrame:
    """n mel-like PNGs (size bands x size frames): a per-class spectral tilt and band, plus noise."""
    rng = np.random.default_rng(seed)
    mel = MelConfig()
    bands = np.linspace(0.0, 1.0, size)[:, None]
    rows = []
    for i in range(n):
        label = i % len(CLASSES)
        tilt = mel.db_ceiling - 60.0 * bands * (1 + label / len(CLASSES))
        band = 25.0 * np.exp(-(((bands - label / len(CLASSES)) / 0.05) ** 2))
        image = tilt + band + rng.normal(0.0, 6.0, (size, size))
        path = root / f"mel_{i:05d}.png"
        path.write_bytes(encode_mel_png(np.flipud(image), mel))
        rows.append({"track_id": f"t{i // 10}", "label": CLASSES[label], "mel_path": str(path)})
    return pd.DataFrame(rows)


def fit_seconds(model: keras.Model, loader, n: int, cfg: Config, epochs: int) -> float:
    """Median seconds of the epochs after the first (which traces) of one fit."""
    loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, metrics=["accuracy"])  # as train.py compiles
    ds, steps = train_dataset(loader, n, cfg.train.batch_size, cfg.seed, 0, epochs + 1)
    timer = EpochTimer()
    model.fit(ds, epochs=epochs + 1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return statistics.median(timer.seconds[1:])


def bench_blocks(cfg: Config, frame: pd.DataFrame, blocks: int, args: argparse.Namespace) -> dict:
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    model_cfg = replace(cfg.model, transfer=replace(cfg.model.transfer, trainable_blocks=blocks))
    cfg = replace(cfg, model=model_cfg)
    model = build_model(model_cfg, image_input_shape(model_cfg), len(CLASSES))
    plain = fit_seconds(
        model, split_data(frame, InputRecipe.of(cfg), CLASSES, None).loader, len(frame), cfg, args.plain_epochs
    )
    cut = cut_at_boundary(model, blocks, model_cfg)  # plain training moved only the top: the key is the same
    started = time.perf_counter()
    boundary_split(cut, frame, InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False)
    compute = time.perf_counter() - started
    started = time.perf_counter()
    data = boundary_split(cut, frame, InputRecipe.of(cfg), CLASSES, cfg.train.batch_size, cfg.cache.dir, progress=False)
    load = time.perf_counter() - started
    cached = fit_seconds(cut.top, data.loader, len(frame), cfg, args.cached_epochs)
    shape = cut.frozen.output.shape[1:]
    return {
        "blocks": blocks,
        "boundary": cut.layer,
        "activations": "x".join(map(str, shape)),
        "cache MB": round(len(frame) * int(np.prod(shape)) * 4 / 2**20, 1),
        "plain s/epoch": round(plain, 3),
        "cached s/epoch": round(cached, 4),
        "speed-up": round(plain / cached, 1),
        "cache compute s": round(compute, 2),
        "cache load s": round(load, 3),
        "break-even epochs": round(compute / max(plain - cached, 1e-9), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="synthetic mel images")
    parser.add_argument("--size", type=int, default=96, help="image height and width (mel bands and frames)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 1, 3], help="trainable_blocks to compare")
    parser.add_argument("--plain-epochs", type=int, default=3, help="timed epochs of plain fit (after one warm-up)")
    parser.add_argument("--cached-epochs", type=int, default=5, help="timed epochs on the cache (after one warm-up)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "mels").mkdir()
        frame = write_mels(Path(tmp) / "mels", args.images, args.size, seed=0)
        cfg = Config(
            model=ModelConfig(
                kind="transfer", image_size=[args.size, args.size], channels=3, transfer=TransferConfig(weights=None)
            ),
            cache=CacheConfig(dir=Path(tmp) / "cache"),
            train=TrainConfig(batch_size=args.batch_size),
        )
        print(f"ResNet50 (weights null), {args.images} images of {args.size}x{args.size}x3, batch {args.batch_size}")
        rows = [bench_blocks(cfg, frame, blocks, args) for blocks in args.blocks]
    print(pd.DataFrame(rows).to_string(index=False))
    record("transfer", [{"images": args.images, "size": args.size, **row} for row in rows], key=["images", "size"])
    for row in rows:
        target = TARGETS.get(row["blocks"])
        verdict = f" (target >= {target:g}x: {'met' if row['speed-up'] >= target else 'MISSED'})" if target else ""
        print(f"trainable_blocks={row['blocks']}: cached epoch {row['speed-up']:g}x faster{verdict}")


if __name__ == "__main__":
    main()
