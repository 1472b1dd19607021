"""The in-graph resampler's filter: a Kaiser-windowed sinc laid out as one matrix per block of samples.

`audio.load_track` and `musicnn_input.to_musicnn_rate` resample with soxr (`soxr_hq`), which no graph holds. Exported
audio models resample in the graph instead (`preprocessing.layers.Resample`), by a band-limited interpolation
designed to come close to soxr_hq, whose band ends steeply: to 16 kHz, soxr_hq passes 7.4 kHz whole, 7.6 kHz at
0.72, 7.8 kHz at 0.06; this filter 1.00, 0.79 and 0.04, and above 7.9 kHz nothing (its stopband lies about 100 dB
down, so the mel bands above a 16 kHz clip's 8 kHz stay as empty as soxr leaves them). Below 7.4 kHz both are flat:
they differ in the top 8 % of the band (measured in tests/test_export.py and bench/export_rates.py). The longer
filter costs 0.65 to 1.8 MB of matrix per rate and 26 to 65 ms per 30 s clip on 2 cores.

A rational ratio out/in = L/M repeats its pattern every L output samples, which read M input samples; a block of
`block_out` outputs (a multiple of L) reads `block_in` inputs plus the filter's reach on both sides. Each output of
a block is one dot product with that stretch of input, so the whole resampling is one matrix product of the
input's blocks by a constant (`block_in + 2 * reach`, `block_out`) matrix: reshapes, a concatenation and a matmul,
every one a TFLite builtin. No TensorFlow here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import soxr

ZERO_CROSSINGS = 96  # of the sinc on each side of an output sample: the filter's length, its transition's width
ROLLOFF = 0.958  # the sinc's cutoff (half gain) as a fraction of the lower Nyquist frequency, near soxr_hq's
KAISER_BETA = 10.0  # the window's shape: a stopband about 100 dB down (at 5, 50 dB: a visible leak in mel images)
MIN_BLOCK_SAMPLES = 256  # input samples per block at least: fewer, and the filter's reach dominates each block


@dataclass(frozen=True)
class ResamplingKernel:
    """A block matrix that resamples `block_in` input samples (and `reach` on each side) to `block_out` outputs.

    Output j of block b is at input position (b * block_in + j * block_in / block_out); its input frame starts at
    input sample b * block_in - reach (zeros before the start and past the end of the waveform).
    """

    input_rate: int
    output_rate: int
    block_in: int
    block_out: int
    reach: int  # input samples the filter reads on each side
    matrix: np.ndarray  # (block_in + 2 * reach, block_out) float32, read-only


@functools.lru_cache(maxsize=16)
def resampling_kernel(input_rate: int, output_rate: int) -> ResamplingKernel:
    """The resampling matrix from `input_rate` to `output_rate` Hz (both whole numbers)."""
    g = math.gcd(input_rate, output_rate)
    up, down = output_rate // g, input_rate // g
    cutoff = ROLLOFF * min(1.0, output_rate / input_rate)  # in cycles per input sample, times 2
    reach = math.ceil(ZERO_CROSSINGS / cutoff)
    # Blocks long enough that the filter's reach fits in one block (the next block's head completes a frame).
    repeats = math.ceil(max(MIN_BLOCK_SAMPLES, 2 * reach) / down)
    block_in, block_out = down * repeats, up * repeats
    matrix = np.zeros((block_in + 2 * reach, block_out), np.float64)
    for j in range(block_out):
        position = j * down / up  # in input samples from the block's start
        first = math.floor(position) - reach + 1
        taps = np.arange(first, first + 2 * reach)
        x = taps - position
        window = np.i0(KAISER_BETA * np.sqrt(np.clip(1.0 - (x / (reach + 1)) ** 2, 0.0, None))) / np.i0(KAISER_BETA)
        matrix[taps + reach, j] = cutoff * np.sinc(cutoff * x) * window
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return ResamplingKernel(input_rate, output_rate, block_in, block_out, reach, matrix)


def resampled_length(n_samples: int, input_rate: int, output_rate: int) -> int:
    """Samples after resampling: ceil(n * out / in), as librosa.resample gives."""
    return -(-n_samples * output_rate // input_rate)


def soxr_hq(y: np.ndarray, rate: int, to: int) -> np.ndarray:
    """`y` at `rate` resampled to `to` by soxr at high quality, trimmed or zero-padded to ceil(n * to / rate) samples:
    what librosa.resample(res_type="soxr_hq") returns, sample for sample, without importing librosa."""
    if rate == to:
        return y
    out = soxr.resample(y, rate, to, quality="soxr_hq")
    n = int(np.ceil(len(y) * (float(to) / rate)))  # librosa's length, in its arithmetic
    out = out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))
    return np.asarray(out, dtype=y.dtype)
