"""The graph pieces every export shares: the in-graph audio front end, the rate signatures, pooling and metadata.

A waveform at any of the export rates is resampled to the run's rate, cut into segments and made into the model's
inputs (log-mel images or musicnn patches) with Keras layers, the recipe the cache computes in numpy; `predict` and
`serve` run the same front end (serving.audio_graph). A track's probabilities are pooled from its segments' in the
graph (`graph_track_probabilities`, the graph's counterpart of evaluation.pooling).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from genre_tf import models
from genre_tf.config import AudioConfig
from genre_tf.evaluation.calibration import FLOOR as CALIBRATION_FLOOR
from genre_tf.evaluation.pooling import PROBABILITY_FLOOR
from genre_tf.features import audio, musicnn_input
from genre_tf.features.analysis import mel_frames_per_segment
from genre_tf.features.audio import segment_hop_samples, segment_samples
from genre_tf.features.mel import AMIN, db_to_unit
from genre_tf.features.musicnn_input import to_musicnn_rate
from genre_tf.features.representations import FEATURES, MEL_IMAGE, shaping_parameters
from genre_tf.inputs.layers import LogMelImage, MusicnnMelPower, Resample
from genre_tf.inputs.pipeline import mel_model_input
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.run import RunDir


@dataclass(frozen=True)
class SegmentLayout:
    """Where a waveform's segments lie at the exported sample rate, and where their frames start in its spectrogram.

    Segment k covers samples [k * hop_samples, k * hop_samples + segment_samples); its frames start at
    ceil(k * frame_step[0] / frame_step[1]) and run for `frames` frames (past the end of the track: silence).
    """

    sample_rate: int
    segment_samples: int
    hop_samples: int
    frames: int
    frame_step: tuple[int, int]
    max_samples: int  # samples read at most (audio.max_duration, or audio.duration when shorter)
    fixed_samples: int | None  # audio.duration: every track trimmed or zero-padded to this
    max_segments: int | None  # audio.max_segments_per_track: a longer track keeps this many, spread as the cache does


def segment_layout(audio: AudioConfig, sample_rate: int, frames: int, frame_step: tuple[int, int]) -> SegmentLayout:
    """The run's segments (audio.segment_seconds, segment_hop, duration) at `sample_rate`."""
    at_rate = replace(audio, sample_rate=sample_rate)
    seconds = audio.max_duration if audio.duration is None else min(audio.max_duration, audio.duration)
    divisor = math.gcd(*frame_step)  # keeps k * step inside int32 in the graph
    return SegmentLayout(
        sample_rate=sample_rate,
        segment_samples=segment_samples(at_rate),
        hop_samples=segment_hop_samples(at_rate),
        frames=frames,
        frame_step=(frame_step[0] // divisor, frame_step[1] // divisor),
        max_samples=round(seconds * sample_rate),
        fixed_samples=None if audio.duration is None else round(audio.duration * sample_rate),
        max_segments=audio.max_segments_per_track,
    )


@dataclass(frozen=True)
class AudioFrontend:
    """What turns a waveform into the model's inputs, one per segment."""

    layout: SegmentLayout
    spectrogram: Callable  # (1, samples) -> (1, frames, ...): the whole clip, time on axis 1
    silence: float  # the spectrogram's value for frames past the end of the track
    to_input: Callable  # (segments, frames, ...) -> the model's input
    note: str  # what a person must know about the input
    input_rate: int | None = None  # Hz of the waveform taken, when not layout.sample_rate: `resample` brings it there
    resample: Callable | None = None  # (samples,) at input_rate -> (samples,) at layout.sample_rate, trimmed first

    @property
    def rate(self) -> int:
        """Hz of the waveform the frontend takes."""
        return self.input_rate or self.layout.sample_rate


def audio_frontend(recipe: InputRecipe, input_rate: int | None = None) -> AudioFrontend:
    """The in-graph preprocessing of the run's input representation: log-mel images or musicnn patches; from
    waveforms at `input_rate` Hz, resampled in the graph, where given and not the representation's rate."""
    frontend = musicnn_frontend if recipe.reads_patches else mel_frontend
    return frontend(recipe, input_rate)


def resampling(frontend: AudioFrontend, input_rate: int | None, audio: AudioConfig) -> AudioFrontend:
    """The frontend taking waveforms at `input_rate` Hz: trimmed at that rate as `audio.load_track` trims them, then
    resampled in the graph (`preprocessing.layers.Resample`) to the frontend's rate."""
    rate = frontend.layout.sample_rate
    if input_rate is None or input_rate == rate:
        return frontend
    resample = Resample(input_rate, rate)
    seconds = audio.max_duration if audio.duration is None else min(audio.max_duration, audio.duration)
    max_samples = round(seconds * input_rate)
    return replace(
        frontend,
        input_rate=input_rate,
        resample=lambda waveform: resample(waveform[None, :max_samples])[0],
        note=(
            f"mono float32 waveform at {input_rate} Hz, resampled in the graph to {rate} Hz by a windowed sinc "
            "(close to, not equal to, the soxr resampling of predict)"
        ),
    )


def mel_frontend(recipe: InputRecipe, input_rate: int | None = None) -> AudioFrontend:
    """Log-mel images as the cache makes them (`features._mel_segments`), resized as in training (`MelImage`); from
    waveforms at `input_rate` Hz where given (default: the run's audio.sample_rate)."""

    audio, mel = recipe.audio, recipe.mel
    log_mel = LogMelImage(audio.sample_rate, vars(mel), pad_mode=recipe.features.pad_mode)
    frames = mel_frames_per_segment(segment_samples(audio), mel)
    step = (segment_hop_samples(audio), mel.hop_length)  # the cache's mel_first_frame(k * hop)
    image = mel_model_input(recipe.model)
    frontend = AudioFrontend(
        layout=segment_layout(audio, audio.sample_rate, frames, step),
        # LogMelImage gives (1, n_mels, frames, 1); segments are cut along time, so time goes to axis 1 and back.
        spectrogram=lambda waveforms: tf.transpose(log_mel(waveforms), (0, 2, 1, 3)),
        silence=float(db_to_unit(10.0 * np.log10(AMIN), mel)),
        to_input=lambda segments: image(tf.transpose(segments, (0, 2, 1, 3))),
        note=f"mono float32 waveform at {audio.sample_rate} Hz, the run's sample rate",
    )
    return resampling(frontend, input_rate, audio)


def musicnn_frontend(recipe: InputRecipe, input_rate: int | None = None) -> AudioFrontend:
    """musicnn's mel power patches as the cache makes them (`musicnn_input.segment_patches`), from 16 kHz audio, or
    from waveforms at `input_rate` Hz resampled to 16 kHz in the graph, where given."""
    rate, audio = musicnn_input.MUSICNN_SAMPLE_RATE, recipe.audio
    # The cache starts segment k's patch at first_frame(k * hop, run's rate) = ceil(k * hop * 16000 / (run's rate *
    # 256)). Segments are counted on the 16 kHz waveform: the count the cache gets, unless a clip ends within a sample
    # of a segment's end.
    step = (segment_hop_samples(audio) * rate, audio.sample_rate * musicnn_input.HOP_LENGTH)
    frames = musicnn_input.patch_frames(audio.segment_seconds)
    frontend = AudioFrontend(
        layout=segment_layout(audio, rate, frames, step),
        spectrogram=MusicnnMelPower(),
        silence=0.0,
        to_input=lambda segments: segments,  # the model's first layer takes the log
        note=(
            f"mono float32 waveform at {rate} Hz, musicnn's rate (predict reads audio at {audio.sample_rate} Hz "
            "and resamples it to 16 kHz with soxr)"
        ),
    )
    return resampling(frontend, input_rate, audio)


def fit_waveform(waveform, layout: SegmentLayout):
    """Trim (and with audio.duration pad) as `audio.load_track` does; repeat a clip shorter than one segment."""
    waveform = waveform[: layout.max_samples]
    if layout.fixed_samples is not None:
        waveform = tf.pad(waveform, [[0, layout.fixed_samples - tf.shape(waveform)[0]]])
    n = tf.shape(waveform)[0]
    length = tf.maximum(n, layout.segment_samples)
    repeats = (length + n - 1) // tf.maximum(n, 1)
    return tf.tile(waveform, [repeats])[:length]


def graph_segment_positions(n_samples, layout: SegmentLayout):
    """Which segments a fitted waveform of `n_samples` keeps, as `audio.spread_segments` picks them (segment k
    starts at sample k * hop)."""
    n_segments = (n_samples - layout.segment_samples) // layout.hop_samples + 1
    keep = n_segments if layout.max_segments is None else tf.minimum(n_segments, layout.max_segments)
    return (2 * tf.range(keep) + 1) * n_segments // (2 * keep)


def cut_segments(waveform, frontend: AudioFrontend):
    """(segments, frames, ...) of the waveform's spectrogram, each segment's frames as the cache slices them."""
    spectrogram, starts, _ = segment_frames(waveform, frontend)
    return frames_at(spectrogram, starts, frontend.layout.frames)


def frames_at(spectrogram, starts, frames: int):
    """(len(starts), frames, ...): the spectrogram's `frames` frames from each start (time on the first axis)."""
    return tf.gather(spectrogram, starts[:, None] + tf.range(frames)[None], axis=0)


def segment_frames(waveform, frontend: AudioFrontend):
    """(the waveform's spectrogram, time on the first axis and `layout.frames` silent frames after the track's end;
    the frame each segment the cache keeps starts at; each one's position: it starts at sample position * hop)."""
    layout = frontend.layout
    if frontend.resample is not None:
        waveform = frontend.resample(waveform)
    waveform = fit_waveform(waveform, layout)
    positions = graph_segment_positions(tf.shape(waveform)[0], layout)
    spectrogram = frontend.spectrogram(waveform[None])[0]
    silence = tf.fill(tf.concat([[layout.frames], tf.shape(spectrogram)[1:]], 0), frontend.silence)
    num, den = layout.frame_step
    return tf.concat([spectrogram, silence], 0), (positions * num + den - 1) // den, positions


def read_waveform(path: Path, recipe: InputRecipe) -> np.ndarray:
    """An audio file as an exported audio model of this recipe takes it: decoded as `prepare` does, at its rate."""
    return at_model_rate(audio.load_track(path, recipe.audio), recipe)


def at_model_rate(y: np.ndarray, recipe: InputRecipe) -> np.ndarray:
    """A waveform decoded at the recipe's audio.sample_rate, at the rate its exported audio model takes: musicnn's
    16 kHz, else as it is."""
    return to_musicnn_rate(y, recipe.audio.sample_rate) if recipe.reads_patches else y


def segments_key(recipe: InputRecipe) -> str:
    """What an audio run's segments are cut from: its representation's shaping parameters (the cache key's). Runs with
    one key cut equal segments of the spectrogram (`cut_segments`) from a waveform."""
    return json.dumps(
        shaping_parameters(recipe.representation, recipe.audio, recipe.features, recipe.mel),
        sort_keys=True,
        default=str,
    )


def input_key(recipe: InputRecipe) -> str:
    """What a run's segment inputs are made from and with: its segments (`segments_key`) and, for mel images, the
    model's image size and channels, for feature rows whether they are the track's or its segments' (`model.level`).
    Runs with one key read equal inputs from a waveform."""
    shaping = {
        MEL_IMAGE: [list(recipe.model.image_size), recipe.model.channels, recipe.model.channel_mode],
        FEATURES: recipe.model.level,
    }
    return json.dumps([segments_key(recipe), shaping.get(recipe.representation)])


EXPORT_RATES = (16000, 22050, 44100, 48000)  # Hz: an audio model has a signature for each, `waveform_<rate>`


def rate_signature(rate: int) -> str:
    """The name of the signature that takes waveforms at `rate` Hz."""
    return f"waveform_{rate}"


def graph_track_probabilities(segment_probabilities, probe: bool):
    """A track's probabilities: the segments' mean, or for a linear probe the softmax of their mean log."""
    if not probe:
        return tf.reduce_mean(segment_probabilities, axis=0)
    return tf.nn.softmax(tf.reduce_mean(tf.math.log(tf.maximum(segment_probabilities, PROBABILITY_FLOOR)), axis=0))


def graph_calibrated(probabilities, temperature: float):
    """Temperature scaling in the graph, as `evaluation.calibration.calibrated` does it: softmax(log p / T)."""
    if temperature == 1.0:
        return probabilities
    logits = tf.math.log(tf.maximum(probabilities, CALIBRATION_FLOOR)) / temperature
    return tf.nn.softmax(logits, axis=-1)


def base_metadata(run: RunDir) -> dict:
    """What every artefact says about itself: the run, its model and classes."""
    cfg = run.config
    return {
        "exported_by": "genre_tf.serving.export",
        "run": run.path.name,
        "model": f"{cfg.model.kind}: {models.family(cfg.model).describe(cfg.model)}",
        "classes": run.classes,
        "temperature": run.temperature,  # track probabilities are calibrated (genre_tf.evaluation.calibration)
    }


def constant_outputs(metadata: dict) -> dict:
    """Outputs every signature carries: class names, sample rate and the metadata as JSON."""
    return {
        "classes": tf.constant(metadata["classes"]),
        "sample_rate": tf.constant(metadata["sample_rate"], tf.int32),
        "metadata": tf.constant(json.dumps(metadata)),
    }


def rate_functions(serve, rate: int, at_rate: Callable, rates: tuple[int, ...]) -> dict:
    """{`rate_signature(r)`: function} for each of `rates` (Hz), by signature name (a tracked dict takes string keys
    only): `serve` itself at its own `rate`, else `at_rate(r)`, the same graph from waveforms at r resampled in it."""
    return {rate_signature(other): serve if other == rate else at_rate(other) for other in rates}


def other_rates(metadata: dict, to: str) -> list[str]:
    """The line on the signatures that take waveforms at other rates and resample them in the graph `to` the model's
    rate, where the artefact has any."""
    other = [name for name, rate in metadata["rate_signatures"].items() if rate != metadata["sample_rate"]]
    if not other:
        return []
    return [
        f"other rates: signatures {', '.join(other)} take the waveform at that rate and resample it in the graph to "
        f"{to} (close to predict's soxr, not equal; same outputs)"
    ]
