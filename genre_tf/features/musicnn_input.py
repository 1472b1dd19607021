"""musicnn's input representation: a compressed log-mel spectrogram of 16 kHz mono audio, cut into patches.

Reproduces the musicnn 0.1.0 package's `batch_data` (Pons & Serra 2019) with librosa 0.11 defaults: a power mel
spectrogram (512-sample Hann window, 256-sample hop, zero-padded centred frames, 96 Slaney mel bands up to 8 kHz),
rounded to float16 as the package did, then `log10(10000 * x + 1)` evaluated in float32. Frames are 16 ms apart,
so the networks' 187-frame patch covers 3 s. Arrays are (time, mel): frames along the first axis, as the
networks read them.

No TensorFlow here: this module runs in extraction worker processes.
"""

from __future__ import annotations

import librosa
import numpy as np

from genre_tf.features.mel import sparse_mel_filter_bank
from genre_tf.features.resampling import soxr_hq

MUSICNN_MODELS = ("MSD_musicnn", "MTT_musicnn")  # the pretrained networks (genre_tf.models.musicnn)
MUSICNN_SAMPLE_RATE = 16000  # Hz
N_FFT = 512  # samples (32 ms)
HOP_LENGTH = 256  # samples (16 ms)
N_MELS = 96
PATCH_FRAMES = 187  # 187 hops of 16 ms: the 3 s the networks were trained on
LOG_SCALE = 10000.0  # musicnn's "logC" compression: log10(C * mel power + 1) with C = 10^4


def mel_power(y: np.ndarray) -> np.ndarray:
    """(frames, 96) mel power of a mono 16 kHz waveform, rounded to float16 as musicnn's recipe does (cached so)."""
    stft = librosa.stft(np.asarray(y, dtype=np.float32), n_fft=N_FFT, hop_length=HOP_LENGTH, pad_mode="constant")
    power = np.abs(stft) ** 2
    mel = sparse_mel_filter_bank(MUSICNN_SAMPLE_RATE, N_FFT, N_MELS, 0.0, MUSICNN_SAMPLE_RATE / 2) @ power
    return mel.T.astype(np.float16)


def compress(power: np.ndarray) -> np.ndarray:
    """musicnn's log10(10^4 x + 1) of (float16-rounded) mel power, in float32.

    The log is taken in float32 because float16 overflows to inf once 10^4 * power exceeds 65504.
    """
    return np.log10(np.float32(LOG_SCALE) * power.astype(np.float32) + np.float32(1.0))


def log_mel(y: np.ndarray) -> np.ndarray:
    """(frames, 96) float32 compressed log-mel of a mono 16 kHz waveform, one frame per 256 samples (centred)."""
    return compress(mel_power(y))


def patch_frames(segment_seconds: float) -> int:
    """Frames of a patch that covers one segment: 187 for musicnn's 3 s."""
    return int(segment_seconds * MUSICNN_SAMPLE_RATE / HOP_LENGTH)


def first_frame(start: int, sr: int) -> int:
    """The first 16 kHz frame centred at or after sample `start` of audio at `sr`: where a segment's patch begins."""
    return -(-start * MUSICNN_SAMPLE_RATE // (sr * HOP_LENGTH))


def to_musicnn_rate(y: np.ndarray, sr: int) -> np.ndarray:
    """A waveform at `sr` resampled to musicnn's 16 kHz (soxr_hq, as `audio.load_track` resamples)."""
    if sr == MUSICNN_SAMPLE_RATE:
        return y
    return soxr_hq(y, sr, MUSICNN_SAMPLE_RATE)


def segment_patches(y: np.ndarray, sr: int, segments: list[tuple[int, int]], frames: int) -> np.ndarray:
    """(n_segments, frames, 96) float16 mel power of each segment of a waveform at `sr`, from one 16 kHz pass.

    A segment's patch starts at the first 16 kHz frame centred at or after its start; frames past the end of
    the track are silent (zero power), as in the mel images.
    """
    y = to_musicnn_rate(y, sr)
    starts = [first_frame(start, sr) for start, _ in segments]
    if not starts:
        return np.zeros((0, frames, N_MELS), np.float16)
    power = mel_power(y)
    silence = np.zeros((max(0, max(starts) + frames - len(power)), N_MELS), np.float16)
    return patches(np.concatenate([power, silence]), starts, frames)


def patches(log_mel: np.ndarray, starts: np.ndarray | list[int], frames: int = PATCH_FRAMES) -> np.ndarray:
    """(n, frames, 96) patches of a (time, 96) log-mel starting at the given frame indices (16 ms each)."""
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    if starts.size and (starts.min() < 0 or starts.max() + frames > log_mel.shape[0]):
        raise ValueError(
            f"patch starts must lie in 0..{log_mel.shape[0] - frames} for {frames}-frame patches "
            f"of a {log_mel.shape[0]}-frame log-mel, got {starts.min()}..{starts.max()}"
        )
    return log_mel[starts[:, None] + np.arange(frames)]
