"""The log-mel image recipe as Keras layers (keras.ops only): for tf.data pipelines and for exported models.

`LogMelImage` computes, from a waveform, the same [0, 1] images the cache stores as PNGs (before their 16-bit
rounding); `MelImage` makes any such image the model's input (size and channels), in training and in export.
"""

from __future__ import annotations

import keras
from keras import ops

from genre_tf.config import MelConfig
from genre_tf.preprocessing import AMIN, db_to_unit, mel_filter_bank, mel_fmax


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
        return ops.flip(ops.transpose(unit, (0, 2, 1)), axis=1)[..., None]

    def get_config(self) -> dict:
        mel = {k: getattr(self.mel, k) for k in MelConfig.__dataclass_fields__}
        return {
            **super().get_config(),
            "sample_rate": self.sample_rate,
            "mel": mel,
            "pad_mode": self.pad_mode,
        }
