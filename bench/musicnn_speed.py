"""Benchmark: clips per second of musicnn's input and embedding, against the musicnn package's own preprocessing.

For each 30 s gtzan_mini clip, single process, the recipes alternating clip by clip:
- this project's input: the audio decoded as `prepare` does (22050 Hz), then `musicnn_input.segment_patches`
  (16 kHz resampling, mel power, float16) for non-overlapping 3 s segments;
- the package's input: `batch_data(path, 187, 187)` of musicnn 0.1.0's extractor.py, as written there
  (`librosa.load(sr=16000)`, melspectrogram, float16, log10, patches concatenated one by one), with the log in
  float32 as the package computed it under NumPy 1 (importing extractor.py would switch TensorFlow's eager
  execution off, so its function is restated here);
- the embedding: the Keras port's 200-d penultimate features of those patches (MSD_musicnn, batch 64).
The package's own embedding runs in a TF1 session, which this process cannot open; the port's agreement with
it is tested in tests/test_musicnn.py. Last, the cost of training the whole network from scratch (the random
twin: every block and BatchNorm training), in seconds per 256 patches.

    .venv/bin/python bench/musicnn_speed.py --clips 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import librosa
import numpy as np
from result_table import record  # bench/result_table.py, beside this script

from genre_tf.config import AudioConfig
from genre_tf.features.audio import load_track, segment_bounds
from genre_tf.features.musicnn_input import PATCH_FRAMES, compress, segment_patches

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def package_batch_data(path: Path, n_frames: int = PATCH_FRAMES, overlap: int = PATCH_FRAMES) -> np.ndarray:
    """musicnn 0.1.0's `extractor.batch_data`, as written there (log in float32, as under NumPy 1)."""
    audio, sr = librosa.load(path, sr=16000)
    audio_rep = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=256, n_fft=512, n_mels=96).T
    audio_rep = audio_rep.astype(np.float16)
    audio_rep = np.log10(10000 * audio_rep.astype(np.float32) + 1)
    batch = None
    for time_stamp in range(0, audio_rep.shape[0] - n_frames + 1, overlap):
        patch = np.expand_dims(audio_rep[time_stamp : time_stamp + n_frames, :], axis=0)
        batch = patch if batch is None else np.concatenate((batch, patch), axis=0)
    return batch


def our_patches(path: Path, audio: AudioConfig) -> np.ndarray:
    """The patches `prepare` caches for a clip (mel power, float16), log-compressed as the model's first layer does."""
    y = load_track(path, audio)
    return compress(segment_patches(y, audio.sample_rate, segment_bounds(len(y), audio), PATCH_FRAMES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    args = parser.parse_args()
    paths = sorted((SHARED_DATA / "gtzan_mini").glob("*/*.flac"))[: args.clips]
    if not paths:
        raise SystemExit(f"error: no gtzan_mini clips under {SHARED_DATA}")
    from genre_tf.models.musicnn import load_musicnn, weights_cache_dir

    network = load_musicnn("MSD_musicnn", weights_cache_dir(), dropout=0.0)
    embed = network.get_layer("backend_penultimate_bn").output
    import keras

    embedder = keras.Model(network.input, embed)
    embedder.predict(np.zeros((1, PATCH_FRAMES, 96), np.float32), verbose=0)  # build once, outside the timing
    audio = AudioConfig(segment_seconds=3.0)
    our_patches(paths[0], audio), package_batch_data(paths[0])  # one-off set-up (the resampler's ~1 s) untimed
    seconds = {"ours": 0.0, "package": 0.0, "embedding": 0.0}
    patches = 0
    for i, path in enumerate(paths):
        order = ("ours", "package") if i % 2 == 0 else ("package", "ours")
        for recipe in order:
            start = time.perf_counter()
            batch = our_patches(path, audio) if recipe == "ours" else package_batch_data(path)
            seconds[recipe] += time.perf_counter() - start
            if recipe == "ours":
                ours = batch
        start = time.perf_counter()
        embedder.predict(ours, batch_size=64, verbose=0)
        seconds["embedding"] += time.perf_counter() - start
        patches += len(ours)
    n = len(paths)
    print(f"{n} clips of 30 s, {patches} patches of 3 s, single process")
    for name, label in (("ours", "genre_tf input"), ("package", "musicnn package input")):
        print(f"{label:24s} {1000 * seconds[name] / n:7.1f} ms/clip  {n / seconds[name]:6.2f} clips/s")
    print(f"{'embedding (Keras port)':24s} {1000 * seconds['embedding'] / n:7.1f} ms/clip  "
          f"{n / seconds['embedding']:6.2f} clips/s")  # fmt: skip
    total = seconds["ours"] + seconds["embedding"]
    print(f"{'input + embedding':24s} {1000 * total / n:7.1f} ms/clip  {n / total:6.2f} clips/s")
    twin = twin_seconds_per_256(np.resize(ours, (64, *ours.shape[1:])))
    print(f"random twin training: {twin:.1f} s per 256 patches")
    row = {"clips": n, "patches": patches}
    for name, label in (("ours", "genre_tf input"), ("package", "musicnn package input"), ("embedding", "embedding")):
        row |= {f"{label} ms/clip": round(1000 * seconds[name] / n, 1), f"{label} clips/s": round(n / seconds[name], 2)}
    row |= {"input + embedding clips/s": round(n / total, 2), "random twin training s per 256 patches": round(twin, 1)}
    record("musicnn_speed", [row], key=["clips"])


def twin_seconds_per_256(patches: np.ndarray) -> float:
    """Seconds of `fit` per 256 patches for musicnn trained whole from random weights (after one warm-up step)."""
    from genre_tf.config import ModelConfig, TransferConfig
    from genre_tf.models import build_model

    twin = TransferConfig(backbone="MSD_musicnn", weights=None, trainable_blocks=5, batch_norm="train", head_units=0)
    model = build_model(ModelConfig(kind="transfer", transfer=twin), patches.shape[1:], 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    power = (10.0**patches - 1.0) / 10000.0  # the cached input, before the model's log compression
    labels = np.zeros(len(power), int)
    model.fit(power[:32], labels[:32], batch_size=32, verbose=0)
    start = time.perf_counter()
    model.fit(power, labels, batch_size=32, verbose=0)
    return (time.perf_counter() - start) * 256 / len(power)


if __name__ == "__main__":
    main()
