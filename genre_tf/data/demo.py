"""Synthetic demo audio, so `make demo` and the tests run offline without a real data set.

Each made-up genre is a `Style`: a tempo range, 16-step drum, bass and chord patterns, an oscillator
and filter for the tonal parts, a harmony (mode and chord progressions) and a noise floor. Every track
samples its own tempo, key, mode, filter cutoff, mix levels and noise from the style's ranges, and its
patterns drop and add hits at random, so genres overlap (house and techno share a four-on-the-floor
pulse, chiptune and techno bright square waves, ambient and folk soft textures) and a classifier has to
learn rather than read one feature.
Rendering is vectorised numpy: a voice is one phase accumulator over per-sample frequencies.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


@dataclass(frozen=True)
class Style:
    """How one demo genre sounds; each (low, high) range is sampled per track."""

    bpm: tuple[float, float]
    kick: str  # 16 steps per bar: "x" hit, "o" hit half the time, "." rest
    snare: str
    hat: str
    bass: str
    chords: str  # steps where the chord is struck; it then decays over `decay` seconds
    decay: float
    waves: tuple[str, ...]  # oscillators for chords and lead, one picked per track
    cutoff: tuple[float, float]  # low-pass on bass, chords and lead, Hz
    minor: float  # probability of a minor key
    progressions: tuple[tuple[int, ...], ...]  # scale degree of each bar's chord (1 = tonic)
    lead: str = ""  # "arp": chord tones in sixteenths; "melody": a random walk on the scale in eighths
    drums: tuple[float, float] = (0.6, 1.0)
    noise: tuple[float, float] = (0.0, 0.1)  # noise under the low-pass, relative to the tonal parts' RMS
    swing: float = 0.0  # delay of every second sixteenth, as a fraction of a step
    echo: float = 0.0  # feedback of a dotted-eighth delay on the tonal parts


STYLES: dict[str, Style] = {
    "ambient": Style(
        bpm=(60, 88), kick="x.......o.......", snare="................", hat="........o.......",
        bass="x...............", chords="x...............", decay=2.5, waves=("sine", "triangle"),
        cutoff=(700, 2500), minor=0.5, progressions=((1, 6, 4, 5), (1, 4, 1, 5), (6, 4, 1, 5)),
        drums=(0.0, 0.35), noise=(0.1, 0.5), echo=0.5,
    ),
    "chiptune": Style(
        bpm=(135, 175), kick="x.......x.o.....", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.",
        bass="x.x.x.x.x.x.x.x.", chords="x.......x.......", decay=0.3, waves=("square", "square", "triangle"),
        cutoff=(3500, 9000), minor=0.3, progressions=((1, 5, 6, 4), (1, 4, 5, 1), (6, 4, 1, 5)), lead="arp",
    ),
    "dub": Style(
        bpm=(64, 84), kick="........x.......", snare="........x.....o.", hat="x.x.x.x.x.x.x.x.",
        bass="x..x..x.x.....x.", chords="..x...x...x...x.", decay=0.15, waves=("saw", "square"),
        cutoff=(600, 2200), minor=0.6, progressions=((1, 4, 1, 5), (1, 7, 1, 7), (1, 4, 1, 4)),
        noise=(0.05, 0.3), swing=0.2, echo=0.6,
    ),
    "folk": Style(
        bpm=(84, 116), kick="x.......x.......", snare="....o.......o...", hat="..o...o...o...o.",
        bass="x.......x.......", chords="x...x...x...x...", decay=0.7, waves=("triangle", "saw"),
        cutoff=(1500, 4500), minor=0.25, progressions=((1, 4, 5, 1), (1, 5, 6, 4), (1, 4, 1, 5)),
        lead="melody", drums=(0.1, 0.5), swing=0.1,
    ),
    "house": Style(
        bpm=(116, 128), kick="x...x...x...x...", snare="....x.......x...", hat="..x...x...x...x.",
        bass="..x...x...x...x.", chords="..x..x....x..x..", decay=0.3, waves=("saw", "square", "triangle"),
        cutoff=(900, 3500), minor=0.6, progressions=((1, 1, 6, 6), (1, 4, 6, 5), (6, 4, 1, 5)),
    ),
    "techno": Style(
        bpm=(122, 138), kick="x...x...x...x...", snare="....o.......o...", hat="x.xox.xox.xox.xo",
        bass="..xx..xx..xx..xx", chords="x..x..x.........", decay=0.12, waves=("square", "saw"),
        cutoff=(400, 2500), minor=0.85, progressions=((1, 1, 1, 1), (1, 1, 6, 1), (1, 1, 1, 7)), lead="arp",
        noise=(0.05, 0.3),
    ),
}  # fmt: skip
DEMO_GENRES: tuple[str, ...] = tuple(STYLES)


def generate_demo(
    root: Path, tracks_per_genre: int, seconds: float, sample_rate: int = 22050, seed: int = 0
) -> list[Path]:
    """Write root/<genre>/<genre>.NNNNN.wav (16-bit PCM) for every demo genre; deterministic and idempotent."""
    paths = []
    for genre_index, genre in enumerate(DEMO_GENRES):
        for track in range(tracks_per_genre):
            # One generator per track: adding tracks or genres never changes the existing ones.
            rng = np.random.default_rng([seed, genre_index, track])
            waveform = render_track(STYLES[genre], rng, seconds, sample_rate)
            path = Path(root) / genre / f"{genre}.{track:05d}.wav"
            _write_if_changed(path, _wav_bytes(waveform, sample_rate))
            paths.append(path)
    return paths


def render_track(style: Style, rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """One track of `style` as float32 samples in [-1, 1]."""
    n = round(seconds * sample_rate)
    step = 60.0 / rng.uniform(*style.bpm) / 4  # seconds per sixteenth
    n_steps = int(seconds / step) + 2
    swing = np.where(np.arange(n_steps) % 2 == 1, style.swing * step, 0.0)
    onsets = np.round((np.arange(n_steps) * step + swing) * sample_rate).astype(int)
    step_of_sample = np.searchsorted(onsets, np.arange(n), side="right") - 1
    grid = _Grid(onsets, step_of_sample, sample_rate)

    scale = MINOR if rng.random() < style.minor else MAJOR
    key = 36 + rng.integers(12)  # MIDI note of the tonic, octave 2
    progression = np.array(style.progressions[rng.integers(len(style.progressions))])
    degree = progression[(np.arange(n_steps) // 16) % len(progression)] - 1  # chord root per step, 0-based
    wave = style.waves[rng.integers(len(style.waves))]

    bass = grid.voice(key + _scale_note(scale, degree), grid.envelope(_hits(style.bass, n_steps, rng), 0.35), "sine")
    chord_envelope = grid.envelope(_hits(style.chords, n_steps, rng), style.decay)
    chords = sum(grid.voice(key + 24 + _scale_note(scale, degree + k), chord_envelope, wave) for k in (0, 2, 4))
    tonal = rng.lognormal(0, 0.3) * bass + rng.lognormal(-0.5, 0.3) * chords / 3
    if style.lead:
        tonal += rng.lognormal(-1.0, 0.3) * _lead(style.lead, grid, key, scale, degree, wave, rng)
    tonal += rng.uniform(*style.noise) * np.sqrt(np.mean(tonal**2)) * rng.standard_normal(n)  # hiss, wind, tape
    cutoff = min(rng.uniform(*style.cutoff), 0.45 * sample_rate)  # below Nyquist at low demo rates
    tonal = sosfilt(butter(2, cutoff, fs=sample_rate, output="sos"), tonal)
    if style.echo:
        tonal = _echo(tonal, round(3 * step * sample_rate), style.echo)

    drums = _drums(style, grid, n, rng)
    mix = tonal + rng.uniform(*style.drums) * drums
    return (rng.uniform(0.5, 0.9) * mix / np.max(np.abs(mix))).astype(np.float32)


@dataclass(frozen=True)
class _Grid:
    """The sixteenth-note grid of one track, and voices rendered on it."""

    onsets: np.ndarray  # sample index of each step
    step_of_sample: np.ndarray  # step each sample falls in
    sample_rate: int

    def envelope(self, hits: np.ndarray, decay: float) -> np.ndarray:
        """Per-sample amplitude: exponential decay from the most recent hit, with a 5 ms attack."""
        last = np.maximum.accumulate(np.where(hits, np.arange(len(hits)), -1))[self.step_of_sample]
        since = (np.arange(len(last)) - self.onsets[np.maximum(last, 0)]) / self.sample_rate
        return np.where(last >= 0, np.exp(-since / decay) * np.minimum(1.0, since / 0.005), 0.0)

    def voice(self, midi: np.ndarray, envelope: np.ndarray, wave: str) -> np.ndarray:
        """A monophonic line: MIDI note per step through oscillator `wave`, shaped by `envelope`."""
        freq = (440.0 * 2.0 ** ((midi - 69) / 12) / self.sample_rate)[self.step_of_sample]  # cycles per sample
        phase = np.cumsum(freq) % 1.0  # continuous across note changes, so no clicks
        return _OSCILLATORS[wave](phase) * envelope


_OSCILLATORS = {
    "sine": lambda phase: np.sin(2 * np.pi * phase),
    "triangle": lambda phase: 4 * np.abs(phase - 0.5) - 1,
    "saw": lambda phase: 2 * phase - 1,
    "square": lambda phase: np.where(phase < 0.5, 1.0, -1.0),
}


def _scale_note(scale: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """Semitones above the tonic of 0-based scale degrees (7 and up climb octaves)."""
    return scale[degree % 7] + 12 * (degree // 7)


def _hits(pattern: str, n_steps: int, rng: np.random.Generator) -> np.ndarray:
    """Which steps sound: the bar pattern repeated, "o" at even odds, a few hits dropped and ghost notes added."""
    bar = np.array(list(pattern))[np.arange(n_steps) % len(pattern)]
    chance = rng.random(n_steps)
    return ((bar == "x") & (chance > 0.05)) | ((bar == "o") & (chance < 0.5)) | ((bar == ".") & (chance < 0.02))


def _lead(
    kind: str, grid: _Grid, key: int, scale: np.ndarray, degree: np.ndarray, wave: str, rng: np.random.Generator
) -> np.ndarray:
    """An arpeggio over the chord (sixteenths) or a scale melody (eighths), two octaves above the chords."""
    steps = np.arange(len(degree))
    if kind == "arp":
        notes = degree + np.array([0, 2, 4, 2])[steps % 4]
        hits = np.ones(len(steps), dtype=bool)
    else:
        walk = np.clip(np.cumsum(rng.integers(-2, 3, len(steps) // 2 + 1)), -3, 9)
        notes = degree + np.repeat(walk, 2)[: len(steps)]
        hits = (steps % 2 == 0) & (rng.random(len(steps)) < 0.8)
    return grid.voice(key + 36 + _scale_note(scale, notes), grid.envelope(hits, 0.18), wave)


def _drums(style: Style, grid: _Grid, n: int, rng: np.random.Generator) -> np.ndarray:
    """Kick, snare and hi-hat one-shots placed on their pattern's steps with jittered velocity."""
    t = np.arange(round(0.3 * grid.sample_rate)) / grid.sample_rate
    kick_phase = np.cumsum(45 + 110 * np.exp(-t / 0.03)) / grid.sample_rate  # pitch falls from 155 to 45 Hz
    kick = np.sin(2 * np.pi * kick_phase) * np.exp(-t / 0.12)
    snare = (0.6 * rng.standard_normal(len(t)) + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.06)
    hat = 0.4 * np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t / 0.025)  # differenced noise: bright
    drums = np.zeros(n)
    for pattern, shot in ((style.kick, kick), (style.snare, snare), (style.hat, hat)):
        starts = grid.onsets[_hits(pattern, len(grid.onsets), rng)]
        index = (starts[:, None] + np.arange(len(shot))).ravel()
        weights = (rng.uniform(0.7, 1.0, len(starts))[:, None] * shot).ravel()
        keep = index < n
        drums += np.bincount(index[keep], weights[keep], minlength=n)[:n]
    return drums


def _echo(signal: np.ndarray, delay: int, feedback: float, repeats: int = 3) -> np.ndarray:
    """A few fading copies of `signal`, each `delay` samples later than the last."""
    out = signal.copy()
    for k in range(1, repeats + 1):
        out[k * delay :] += feedback**k * signal[: max(len(signal) - k * delay, 0)]
    return out


def _wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, waveform, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file + rename), unless the file already holds exactly it."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
