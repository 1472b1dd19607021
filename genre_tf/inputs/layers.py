"""The preprocessing recipes as Keras layers (keras.ops only): for tf.data pipelines and for exported models.

`LogMelImage` computes, from a waveform, the same [0, 1] images the cache stores as PNGs (before their 16-bit
rounding); `MelImage` makes any such image the model's input (size and channels), in training and in export.
`MusicnnMelPower` computes the float16-rounded mel power that the cache stores as musicnn patches
(`genre_tf.features.musicnn_input.mel_power`). `Resample` brings a waveform to the rate a recipe reads, close to (not
equal to) the soxr resampling of `genre_tf.features.audio`. `StandardScaling` and `QuantileScaling` apply a run's
feature-table scaler (`genre_tf.features.scaling`) to feature rows. Tests pin each one to the recipe it repeats.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from genre_tf.config import MelConfig
from genre_tf.features import musicnn_input
from genre_tf.features.mel import AMIN, db_to_unit, mel_filter_bank, mel_fmax
from genre_tf.features.resampling import resampling_kernel


@keras.saving.register_keras_serializable(package="genre_tf")
class MelImage(keras.layers.Layer):
    """A [0, 1] mel image (..., n_mels, frames, 1) resized to `image_size`, with 1 or 3 channels.

    3 channels repeat the image, or stack it with its time delta and delta-delta (`channel_mode: deltas`).
    """

    def __init__(self, image_size: tuple[int, int], channels: int = 1, channel_mode: str = "repeat", **kwargs):
        super().__init__(**kwargs)
        self.image_size = tuple(image_size)
        self.channels = channels
        self.channel_mode = channel_mode

    def call(self, unit):
        image = ops.image.resize(unit, self.image_size, interpolation="bilinear")
        if self.channels == 1:
            return image
        if self.channel_mode == "repeat":
            return ops.repeat(image, 3, axis=-1)
        delta = _time_delta(image)
        return ops.concatenate([image, delta, _time_delta(delta)], axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "image_size": list(self.image_size),
            "channels": self.channels,
            "channel_mode": self.channel_mode,
        }


def _time_delta(image):
    """Central difference along time (width), edges repeated, as librosa's delta with width 3."""
    padded = ops.concatenate([image[..., :1, :], image, image[..., -1:, :]], axis=-2)
    return (padded[..., 2:, :] - padded[..., :-2, :]) / 2.0


@keras.saving.register_keras_serializable(package="genre_tf")
class LogMelImage(keras.layers.Layer):
    """Waveforms (batch, samples) -> [0, 1] log-mel images (batch, n_mels, frames, 1), highest band in row 0.

    A centred STFT of mel.n_fft / mel.hop_length with a periodic Hann window (librosa.stft), power, the Slaney
    filter bank as a constant, 10 log10 with ref 1.0 and no top_db, then the dB mapping of the cached PNGs.
    """

    def __init__(self, sample_rate: int, mel: dict, pad_mode: str = "reflect", **kwargs):
        super().__init__(**kwargs)
        self.sample_rate, self.pad_mode = sample_rate, pad_mode
        self.mel = MelConfig(**mel)
        m = self.mel
        bank = mel_filter_bank(sample_rate, m.n_fft, m.n_mels, m.fmin, mel_fmax(m, sample_rate))
        self.filter_bank = ops.convert_to_tensor(bank.T)  # (bins, n_mels)

    def call(self, waveforms):
        n_fft, hop = self.mel.n_fft, self.mel.hop_length
        padded = ops.pad(waveforms, [[0, 0], [n_fft // 2, n_fft // 2]], mode=self.pad_mode)
        real, imag = ops.stft(padded, n_fft, hop, n_fft, window="hann", center=False)
        power = ops.matmul(real * real + imag * imag, self.filter_bank)  # (batch, frames, n_mels)
        db = 10.0 * ops.log10(ops.maximum(power, AMIN))
        unit = db_to_unit(db, self.mel, clip=ops.clip)
        return ops.expand_dims(ops.flip(ops.transpose(unit, (0, 2, 1)), axis=1), -1)

    def get_config(self) -> dict:
        mel = {k: getattr(self.mel, k) for k in MelConfig.__dataclass_fields__}
        return {
            **super().get_config(),
            "sample_rate": self.sample_rate,
            "mel": mel,
            "pad_mode": self.pad_mode,
        }


@keras.saving.register_keras_serializable(package="genre_tf")
class MusicnnMelPower(keras.layers.Layer):
    """16 kHz waveforms (batch, samples) -> musicnn's mel power (batch, frames, 96), float16-rounded, as float32.

    `musicnn_input.mel_power` in keras.ops: a centred, zero-padded STFT of 512 / 256 with a periodic Hann window,
    power, 96 Slaney bands up to 8 kHz; then rounded to float16, as the cache stores the patches.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        m = musicnn_input
        bank = mel_filter_bank(m.MUSICNN_SAMPLE_RATE, m.N_FFT, m.N_MELS, 0.0, m.MUSICNN_SAMPLE_RATE / 2)
        self.filter_bank = ops.convert_to_tensor(bank.T)  # (bins, 96)

    def call(self, waveforms):
        n_fft, hop = musicnn_input.N_FFT, musicnn_input.HOP_LENGTH
        padded = ops.pad(waveforms, [[0, 0], [n_fft // 2, n_fft // 2]])
        real, imag = ops.stft(padded, n_fft, hop, n_fft, window="hann", center=False)
        power = ops.matmul(real * real + imag * imag, self.filter_bank)
        return ops.cast(ops.cast(power, "float16"), "float32")


@keras.saving.register_keras_serializable(package="genre_tf")
class Resample(keras.layers.Layer):
    """Waveforms (batch, samples) at `input_rate` -> (batch, ceil(samples * output_rate / input_rate)) at
    `output_rate`: the windowed-sinc interpolation of `preprocessing.resampling`, one matrix product per block."""

    def __init__(self, input_rate: int, output_rate: int, **kwargs):
        super().__init__(**kwargs)
        self.input_rate, self.output_rate = int(input_rate), int(output_rate)
        self.kernel = resampling_kernel(self.input_rate, self.output_rate)
        self.matrix = ops.convert_to_tensor(self.kernel.matrix)

    def call(self, waveforms):
        k = self.kernel
        batch, n = ops.shape(waveforms)[0], ops.shape(waveforms)[1]
        # ceil(n * out / in) without n * out, which overflows int32 past 13 minutes at 22050 -> 16000 Hz
        whole, rest = n // k.block_in, n % k.block_in
        n_out = whole * k.block_out + (rest * k.block_out + k.block_in - 1) // k.block_in
        blocks = (n_out + k.block_out - 1) // k.block_out
        # reach zeros before the waveform, and after it up to one block beyond the last, whose head ends its frame
        tail = ops.zeros((batch, (blocks + 1) * k.block_in - k.reach - n), waveforms.dtype)
        padded = ops.concatenate([ops.zeros((batch, k.reach), waveforms.dtype), waveforms, tail], axis=1)
        rows = ops.reshape(padded, (batch, blocks + 1, k.block_in))
        frames = ops.concatenate([rows[:, :-1], rows[:, 1:, : 2 * k.reach]], axis=2)
        out = ops.reshape(ops.matmul(frames, self.matrix), (batch, blocks * k.block_out))
        return out[:, :n_out]

    def get_config(self) -> dict:
        return {**super().get_config(), "input_rate": self.input_rate, "output_rate": self.output_rate}


@keras.saving.register_keras_serializable(package="genre_tf")
class StandardScaling(keras.layers.Layer):
    """Feature rows (batch, columns) -> (x - mean) / std: `scaling.FeatureScaler.transform` in the graph."""

    def __init__(self, mean: list[float], std: list[float], **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]

    def call(self, rows):
        mean = ops.convert_to_tensor(self.mean, rows.dtype)
        return (rows - mean) / ops.convert_to_tensor(self.std, rows.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


# sklearn's QuantileTransformer maps inputs within 1e-7 of the fitted range's ends to its ends, and clips the normal
# quantiles at those of 1e-7 - eps and 1 - (1e-7 - eps).
BOUNDS_THRESHOLD = 1e-7
NORMAL_CLIP = 5.199337582605575


@keras.saving.register_keras_serializable(package="genre_tf")
class QuantileScaling(keras.layers.Layer):
    """Feature rows (batch, columns) -> rank-Gauss values: `scaling.QuantileScaler.transform` in the graph.

    As sklearn: each column's value is interpolated in its fitted quantiles (ascending, and descending, averaged, so
    repeated quantiles map to their middle), set to the end of the fitted range within 1e-7 of it, then sent through
    the normal quantile function. Interpolation by comparisons and sums only, so every step is a TFLite builtin.
    """

    def __init__(self, quantiles: list[list[float]], references: list[float], **kwargs):
        super().__init__(**kwargs)
        self.quantiles = [[float(v) for v in row] for row in quantiles]  # (n_quantiles, columns)
        self.references = [float(v) for v in references]
        q = np.asarray(self.quantiles)
        self.lowest, self.highest = _range_ends(q[0], q[-1])

    def call(self, rows):
        q = ops.convert_to_tensor(self.quantiles, rows.dtype)
        r = ops.convert_to_tensor(self.references, rows.dtype)
        up = _interp(rows, q, r)
        down = _interp(-rows, -ops.flip(q, axis=0), -ops.flip(r, axis=0))
        p = 0.5 * (up - down)
        p = ops.where(rows >= ops.convert_to_tensor(self.highest, rows.dtype), 1.0, p)
        p = ops.where(rows <= ops.convert_to_tensor(self.lowest, rows.dtype), 0.0, p)
        return ops.clip(normal_quantile(p), -NORMAL_CLIP, NORMAL_CLIP)  # p of 0 and 1 land beyond the clip

    def get_config(self) -> dict:
        return {**super().get_config(), "quantiles": self.quantiles, "references": self.references}


def _range_ends(first: np.ndarray, last: np.ndarray) -> tuple[list[float], list[float]]:
    """Per column, the largest float32 x with x - 1e-7 < first and the smallest with x + 1e-7 > last (in float64).

    sklearn tests its 1e-7 margin in float64; near large values the margin is below float32's resolution, so the
    test is settled here for float32 inputs, once, instead of in the graph.
    """
    margin = BOUNDS_THRESHOLD
    below = _last_float32((first + margin).astype(np.float32), lambda x: x - margin < first, -np.inf)
    above = _last_float32((last - margin).astype(np.float32), lambda x: x + margin > last, np.inf)
    return below.tolist(), above.tolist()


def _last_float32(guess: np.ndarray, holds: Callable[[np.ndarray], np.ndarray], outward: float) -> np.ndarray:
    """Of `guess` and its two float32 neighbours, the innermost one for which `holds`, which holds towards `outward`.

    The guess is the limit of `holds` rounded to float32, so the answer is one of the three.
    """
    candidates = [np.nextafter(guess, np.float32(outward)), guess, np.nextafter(guess, np.float32(-outward))]
    result = candidates[0]
    for candidate in candidates[1:]:
        result = np.where(holds(candidate.astype(np.float64)), candidate, result)
    return result


def _interp(x, xp, fp):
    """np.interp of each column: x (batch, columns), xp (n, columns) ascending per column, fp (n,) shared."""
    n = xp.shape[0]
    at_or_below = ops.sum(ops.cast(xp[None] <= x[:, None], "int32"), axis=1)  # np.interp's bracketing index + 1
    j = ops.clip(at_or_below - 1, 0, n - 2)
    pick = ops.cast(ops.arange(n - 1)[None, :, None] == j[:, None], x.dtype)  # one-hot over the n - 1 intervals
    x0, x1 = ops.sum(pick * xp[None, :-1], axis=1), ops.sum(pick * xp[None, 1:], axis=1)
    f0 = ops.sum(pick * fp[None, :-1, None], axis=1)
    f1 = ops.sum(pick * fp[None, 1:, None], axis=1)
    width = x1 - x0  # > 0 inside the range: the bracketing quantiles differ there
    inside = f0 + (f1 - f0) * (x - x0) / ops.where(width > 0, width, 1.0)
    return ops.where(at_or_below == 0, fp[0], ops.where(at_or_below >= n, fp[-1], inside))


# Wichura's PPND7 (Applied Statistics algorithm AS 241, 1988), the normal quantile function to about 1e-7, made for
# single precision: its central coefficients are all positive, so float32 loses nothing to cancellation. In place
# of scipy's ndtri, which neither keras.ops nor TFLite's builtins offer.
_CENTRAL = 0.425  # |p - 0.5| up to this: the central formula in r = 0.180625 - (p - 0.5)^2
_CENTRAL_NUM = (59.109374720, 159.29113202, 50.434271938, 3.3871327179)
_CENTRAL_DEN = (67.187563600, 78.757757664, 17.895169469, 1.0)
_NEAR_TAIL_NUM = (0.17023821103, 1.3067284816, 2.7568153900, 1.4234372777)  # sqrt(-log(tail p)) up to 5
_NEAR_TAIL_DEN = (0.12021132975, 0.73700164250, 1.0)
_FAR_TAIL_NUM = (0.017337203997, 0.42868294337, 3.0812263860, 6.6579051150)
_FAR_TAIL_DEN = (0.012258202635, 0.24197894225, 1.0)


def _poly(coefficients: tuple[float, ...], x):
    """Horner's rule, highest power first."""
    result = coefficients[0]
    for c in coefficients[1:]:
        result = result * x + c
    return result


def normal_quantile(p):
    """The standard normal's quantile function (scipy.stats.norm.ppf) for p in [0, 1], in keras.ops."""
    q = p - 0.5
    r = 0.180625 - q * q
    central = q * _poly(_CENTRAL_NUM, r) / _poly(_CENTRAL_DEN, r)
    t = ops.sqrt(-ops.log(ops.maximum(ops.minimum(p, 1.0 - p), 1e-30)))  # p of 0 or 1: about -/+11, not inf
    near, far = t - 1.6, t - 5.0
    tail = ops.where(
        t <= 5.0,
        _poly(_NEAR_TAIL_NUM, near) / _poly(_NEAR_TAIL_DEN, near),
        _poly(_FAR_TAIL_NUM, far) / _poly(_FAR_TAIL_DEN, far),
    )
    return ops.where(ops.abs(q) <= _CENTRAL, central, ops.where(q < 0, -tail, tail))
