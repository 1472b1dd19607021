"""The log-mel image recipe, defined once: dB <-> [0, 1] mapping, 16-bit PNG scale, Slaney mel filter bank.

Training reads log-mel images from the cache (16-bit PNGs written by `genre_tf.features.analysis`); export computes them
in the graph (`genre_tf.inputs.layers`). Both take every constant and mapping from here, and a test pins
the in-graph log-mel to the cached images. No TensorFlow in this module: extraction workers import it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import librosa
import numpy as np
import scipy.sparse

from genre_tf.config import MelConfig

PNG_MAX = 65535  # a mel image's [0, 1] scale maps onto the full range of a 16-bit PNG
AMIN = 1e-10  # power floor before the logarithm, as librosa.power_to_db


def db_to_unit(db: Any, mel: MelConfig, clip: Callable = np.clip) -> Any:
    """dB in [mel.db_floor, mel.db_ceiling] -> [0, 1], clipped; `clip` is np.clip or keras.ops.clip."""
    return (clip(db, mel.db_floor, mel.db_ceiling) - mel.db_floor) / (mel.db_ceiling - mel.db_floor)


def unit_to_db(unit: Any, mel: MelConfig) -> Any:
    """[0, 1] -> dB, the inverse of `db_to_unit` inside the clipped range."""
    return mel.db_floor + unit * (mel.db_ceiling - mel.db_floor)


@functools.lru_cache(maxsize=32)
def mel_filter_bank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's Slaney mel filter bank (n_mels, 1 + n_fft // 2) float32, read-only: the one every mel uses."""
    bank = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=32)
def sparse_mel_filter_bank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> scipy.sparse.csr_array:
    """`mel_filter_bank` as a sparse matrix: each band covers a few FFT bins, so a dense product is ~40x waste."""
    return scipy.sparse.csr_array(mel_filter_bank(sr, n_fft, n_mels, fmin, fmax))


def mel_fmax(mel: MelConfig, sr: int) -> float:
    """The top of the mel range: mel.fmax, or Nyquist when unset."""
    return sr / 2 if mel.fmax is None else mel.fmax
