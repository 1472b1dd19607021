"""Export a run as a self-contained SavedModel folder or TFLite file: audio in, class probabilities out.

    python -m genre_tf.export --run saved_models/gtzan_cnn --format saved_model   # <run>/export/saved_model/
    python -m genre_tf.export --run saved_models/gtzan_cnn --format tflite        # <run>/export/<run>.tflite
    python -m genre_tf.export --run DIR --format tflite --output genres.tflite

An audio model (CNN; transfer on keras.applications or musicnn) takes `waveform`: mono float32 samples at the
stated sample rate, of any length (a clip shorter than one segment is repeated to fill one, as `predict` does).
The graph holds the run's preprocessing (the log-mel image, or musicnn's mel power), the segments cut as the cache
cuts them, the model, and the track's probabilities: the mean over its segments, or for a linear probe the softmax
of their mean log-probabilities, as `evaluate` pools them. `serving_default` takes the rate the representation is
made at: the run's audio.sample_rate, or 16000 Hz for musicnn, whose patches are made at 16 kHz. One more signature
per common recording rate, `waveform_16000`, `waveform_22050`, `waveform_44100` and `waveform_48000`, takes the
waveform at that rate and resamples it in the graph (`preprocessing.layers.Resample`: close to predict's soxr, not
equal to it; the one at the model's own rate is serving_default). One signature per rate, not a rate input: each
graph is fixed and all builtin TFLite ops, and a rate not offered is a missing signature, not a wrong answer; the
model's weights are stored once, and each resampler adds its matrix (0.65 to 1.8 MB of float32).

A table model (the MLP) takes `features`, feature-table rows in the run's column order, and applies the run's scaler
in the graph. Every signature also returns the class names and a JSON `metadata` string that says what the input
is. Loading needs TensorFlow only, neither genre_tf nor Keras.

An ensemble run (`genre_tf.training.ensemble`) exports as one artefact that takes one `waveform`, at the highest rate
its members take, and runs every member's preprocessing (resampled in the graph for a member that takes another rate;
each distinct spectrogram and input once), model and pooling, returning the weighted mean of the members' track
probabilities and `member_probabilities`; its members must read audio. It has the same `waveform_<rate>` signatures
as a single run (`rate_functions`), each resampling the waveform in the graph to each member's own rate.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from genre_tf import models
from genre_tf.config import AudioConfig, Config, ConfigError
from genre_tf.evaluation.pooling import PROBABILITY_FLOOR, track_pooling, weighted_mean
from genre_tf.extract.cache import write_atomic
from genre_tf.features import musicnn_input
from genre_tf.features.analysis import mel_frames_per_segment
from genre_tf.features.audio import load_track, segment_hop_samples, segment_samples
from genre_tf.features.mel import AMIN, db_to_unit
from genre_tf.features.musicnn_input import to_musicnn_rate
from genre_tf.features.representations import FEATURES, MEL_IMAGE, shaping_parameters
from genre_tf.features.scaling import QuantileScaler
from genre_tf.inputs.examples import model_input, reads_features
from genre_tf.inputs.layers import LogMelImage, MusicnnMelPower, QuantileScaling, Resample, StandardScaling
from genre_tf.inputs.pipeline import mel_model_input
from genre_tf.models import MUSICNN_PATCH
from genre_tf.run import RunDir

FORMATS = ("saved_model", "tflite")
SIGNATURE = "serving_default"
EXPORT_RATES = (16000, 22050, 44100, 48000)  # Hz: an audio model has a signature for each, `waveform_<rate>`


def rate_signature(rate: int) -> str:
    """The name of the signature that takes waveforms at `rate` Hz."""
    return f"waveform_{rate}"


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


def audio_frontend(cfg: Config, input_rate: int | None = None) -> AudioFrontend:
    """The in-graph preprocessing of the run's input representation: log-mel images or musicnn patches; from
    waveforms at `input_rate` Hz, resampled in the graph, where given and not the representation's rate."""
    frontend = musicnn_frontend if model_input(cfg) == MUSICNN_PATCH else mel_frontend
    return frontend(cfg, input_rate)


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


def mel_frontend(cfg: Config, input_rate: int | None = None) -> AudioFrontend:
    """Log-mel images as the cache makes them (`features._mel_segments`), resized as in training (`MelImage`); from
    waveforms at `input_rate` Hz where given (default: the run's audio.sample_rate)."""

    log_mel = LogMelImage(cfg.audio.sample_rate, vars(cfg.mel), pad_mode=cfg.features.pad_mode)
    frames = mel_frames_per_segment(segment_samples(cfg.audio), cfg.mel)
    step = (segment_hop_samples(cfg.audio), cfg.mel.hop_length)  # the cache's mel_first_frame(k * hop)
    image = mel_model_input(cfg.model)
    frontend = AudioFrontend(
        layout=segment_layout(cfg.audio, cfg.audio.sample_rate, frames, step),
        # LogMelImage gives (1, n_mels, frames, 1); segments are cut along time, so time goes to axis 1 and back.
        spectrogram=lambda waveforms: tf.transpose(log_mel(waveforms), (0, 2, 1, 3)),
        silence=float(db_to_unit(10.0 * np.log10(AMIN), cfg.mel)),
        to_input=lambda segments: image(tf.transpose(segments, (0, 2, 1, 3))),
        note=f"mono float32 waveform at {cfg.audio.sample_rate} Hz, the run's sample rate",
    )
    return resampling(frontend, input_rate, cfg.audio)


def musicnn_frontend(cfg: Config, input_rate: int | None = None) -> AudioFrontend:
    """musicnn's mel power patches as the cache makes them (`musicnn_input.segment_patches`), from 16 kHz audio, or
    from waveforms at `input_rate` Hz resampled to 16 kHz in the graph, where given."""
    rate = musicnn_input.MUSICNN_SAMPLE_RATE
    # The cache starts segment k's patch at first_frame(k * hop, run's rate) = ceil(k * hop * 16000 / (run's rate *
    # 256)). Segments are counted on the 16 kHz waveform: the count the cache gets, unless a clip ends within a sample
    # of a segment's end.
    step = (segment_hop_samples(cfg.audio) * rate, cfg.audio.sample_rate * musicnn_input.HOP_LENGTH)
    frames = musicnn_input.patch_frames(cfg.audio.segment_seconds)
    frontend = AudioFrontend(
        layout=segment_layout(cfg.audio, rate, frames, step),
        spectrogram=MusicnnMelPower(),
        silence=0.0,
        to_input=lambda segments: segments,  # the model's first layer takes the log
        note=(
            f"mono float32 waveform at {rate} Hz, musicnn's rate (predict reads audio at {cfg.audio.sample_rate} Hz "
            "and resamples it to 16 kHz with soxr)"
        ),
    )
    return resampling(frontend, input_rate, cfg.audio)


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
    layout = frontend.layout
    if frontend.resample is not None:
        waveform = frontend.resample(waveform)
    waveform = fit_waveform(waveform, layout)
    positions = graph_segment_positions(tf.shape(waveform)[0], layout)
    spectrogram = frontend.spectrogram(waveform[None])[0]
    silence = tf.fill(tf.concat([[layout.frames], tf.shape(spectrogram)[1:]], 0), frontend.silence)
    spectrogram = tf.concat([spectrogram, silence], 0)  # frames past the end of the track are silent
    num, den = layout.frame_step
    starts = (positions * num + den - 1) // den
    return tf.gather(spectrogram, starts[:, None] + tf.range(layout.frames)[None], axis=0)


def track_probabilities(segment_probabilities, probe: bool):
    """A track's probabilities: the segments' mean, or for a linear probe the softmax of their mean log."""
    if not probe:
        return tf.reduce_mean(segment_probabilities, axis=0)
    return tf.nn.softmax(tf.reduce_mean(tf.math.log(tf.maximum(segment_probabilities, PROBABILITY_FLOOR)), axis=0))


def scaling_layer(run: RunDir):
    """The run's feature scaler as a layer: `StandardScaling` or `QuantileScaling`."""
    scaler = run.scaler
    if isinstance(scaler, QuantileScaler):
        return QuantileScaling(scaler.quantiles.tolist(), scaler.references.tolist())
    return StandardScaling(scaler.mean.tolist(), scaler.std.tolist())


def base_metadata(run: RunDir) -> dict:
    """What every artefact says about itself: the run, its model and classes."""
    cfg = run.config
    return {
        "exported_by": "genre_tf.serving.export",
        "run": run.path.name,
        "model": f"{cfg.model.kind}: {models.family(cfg.model).describe(cfg.model)}",
        "classes": run.classes,
    }


def audio_metadata(run: RunDir, frontend: AudioFrontend, probe: bool, rates: tuple[int, ...] = ()) -> dict:
    """Metadata of an audio model: sample rate, segments, how a track's probabilities are made, and the signatures
    that take waveforms at other `rates`."""
    audio = run.config.audio
    pooling = "softmax of the segments' mean log-probability (linear probe)" if probe else "mean over the segments"
    return {
        **base_metadata(run),
        "input": "waveform",
        "input_note": frontend.note,
        "sample_rate": frontend.rate,
        "model_sample_rate": frontend.layout.sample_rate,
        "rate_signatures": {rate_signature(rate): rate for rate in rates},
        "segment_seconds": audio.segment_seconds,
        "segment_hop_seconds": audio.segment_hop or audio.segment_seconds,
        "track_probabilities": pooling,
    }


def table_metadata(run: RunDir) -> dict:
    """Metadata of a table model: its feature columns, in input order, and its scaler."""
    scaler = run.scaler
    kind = "quantile" if isinstance(scaler, QuantileScaler) else "standard"
    return {
        **base_metadata(run),
        "input": "features",
        "input_note": (
            f"feature-table rows of {len(scaler.columns)} columns in the order of `columns` (genre_tf's features, "
            f"the published GTZAN table's names), unscaled: the run's {kind} scaler is in the graph"
        ),
        "columns": scaler.columns,
        "scaler": kind,
        "sample_rate": 0,
        "row_probabilities": "one per row: a whole track's row, or a segment's (average a track's segments)",
    }


def constant_outputs(metadata: dict) -> dict:
    """Outputs every signature carries: class names, sample rate and the metadata as JSON."""
    return {
        "classes": tf.constant(metadata["classes"]),
        "sample_rate": tf.constant(metadata["sample_rate"], tf.int32),
        "metadata": tf.constant(json.dumps(metadata)),
    }


def serving_module(run: RunDir, model=None, rates: tuple[int, ...] = EXPORT_RATES) -> tuple:
    """(tf.Module, metadata): the module holds the run's model and `serve`, the function to trace into the default
    signature (preprocessing, model and pooling); the metadata is what that signature says of itself.

    An audio model's module also holds `serve_at`, {`rate_signature(rate)`: function} for each of `rates` (Hz): the
    same preprocessing from waveforms at that rate, resampled in the graph (`serve` itself at the model's own rate).
    """

    model = run.load_model() if model is None else model
    module = tf.Module()
    # The TensorFlow variables under the model's Keras variables (`.value` on the TensorFlow backend), tracked by the
    # module: tracked only through the Keras model they are saved too, but the TFLite converter then keeps them as
    # resource variables that no one initialises, instead of freezing them into constants (NaN outputs).
    module.model_variables = [variable.value for variable in model.variables]
    if reads_features(run.config):
        layer, metadata = scaling_layer(run), table_metadata(run)

        @tf.function(input_signature=[tf.TensorSpec([None, len(metadata["columns"])], tf.float32, name="features")])
        def serve(features):
            return {"probabilities": model(layer(features), training=False), **constant_outputs(metadata)}

        module.serve = serve
        return module, metadata

    probe = models.family(run.config.model).track_level(run.config.model)
    frontend = audio_frontend(run.config)
    metadata = audio_metadata(run, frontend, probe, rates)
    module.serve = waveform_function(model, frontend, probe, metadata)
    module.serve_at = rate_functions(
        module.serve,
        frontend.rate,
        lambda rate: waveform_function(model, audio_frontend(run.config, rate), probe, metadata),
        rates,
    )
    return module, metadata


def rate_functions(serve, rate: int, at_rate: Callable, rates: tuple[int, ...]) -> dict:
    """{`rate_signature(r)`: function} for each of `rates` (Hz), by signature name (a tracked dict takes string keys
    only): `serve` itself at its own `rate`, else `at_rate(r)`, the same graph from waveforms at r resampled in it."""
    return {rate_signature(other): serve if other == rate else at_rate(other) for other in rates}


def waveform_function(model, frontend: AudioFrontend, probe: bool, metadata: dict):
    """The tf.function of an audio model's signature: waveform at the frontend's rate -> probabilities; its constant
    outputs say that rate and the frontend's note."""
    said = {**metadata, "sample_rate": frontend.rate, "input_note": frontend.note}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
    def serve(waveform):
        segments = model(frontend.to_input(cut_segments(waveform, frontend)), training=False)
        return {
            "probabilities": track_probabilities(segments, probe),
            "segment_probabilities": segments,
            **constant_outputs(said),
        }

    return serve


def signatures(module) -> dict:
    """{signature name: function} of a serving module: `serving_default`, and an audio model's `waveform_<rate>`."""
    return {SIGNATURE: module.serve, **getattr(module, "serve_at", {})}


def ensemble_serving_module(run: RunDir, rates: tuple[int, ...] = EXPORT_RATES) -> tuple:
    """(tf.Module, metadata) of an ensemble run, as `serving_module` gives for one run: `serve` takes one waveform
    at the highest rate a member takes and runs every member's in-graph preprocessing (each distinct input once),
    model and pooling (as the member pools alone), then the weighted mean of the members' track probabilities;
    `serve_at` the same from waveforms at each of `rates` (Hz). SystemExit, one line, for a member that cannot run in
    a waveform graph."""

    members = run.members()
    check_waveform_members(members)
    rate = max(member_rate(member) for member in members)
    models = [member.run.load_model() for member in members]
    probes = [track_pooling(member.run) == "logits" for member in members]
    weights = [member.weight for member in members]
    metadata = ensemble_metadata(run, members, rate, rates)
    module = tf.Module()
    module.model_variables = [variable.value for model in models for variable in model.variables]  # see serving_module

    def at_rate(input_rate: int):
        return ensemble_function(members, models, probes, weights, input_rate, metadata)

    module.serve = at_rate(rate)
    module.serve_at = rate_functions(module.serve, rate, at_rate, rates)
    return module, metadata


def ensemble_function(members: list, models: list, probes: list[bool], weights, rate: int, metadata: dict):
    """The tf.function of an ensemble's signature: waveform at `rate` Hz -> every member's input (each distinct one
    once, resampled in the graph to a member's own rate where it differs), model and pooling, and their weighted mean;
    its constant outputs say that rate."""
    keys, frontends = ensemble_frontends(members, rate)
    cut_by = {key: segments_key(member.run.config) for key, member in zip(keys, members, strict=True)}
    cutters = {cut_by[key]: frontend for key, frontend in reversed(frontends.items())}  # the first of each
    said = {**metadata, "sample_rate": rate, "input_note": ensemble_note(members, rate, metadata["sample_rate"])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
    def serve(waveform):
        # Each spectrogram's segments once, then each model input from them once (image sizes and channels differ).
        segments = {cut: cut_segments(waveform, frontend) for cut, frontend in cutters.items()}
        inputs = {key: frontend.to_input(segments[cut_by[key]]) for key, frontend in frontends.items()}
        pooled = [
            track_probabilities(model(inputs[key], training=False), probe)
            for model, key, probe in zip(models, keys, probes, strict=True)
        ]
        return {
            "probabilities": weighted_mean(pooled, weights),
            "member_probabilities": tf.stack(pooled),
            **constant_outputs(said),
        }

    return serve


def ensemble_frontends(members: list, rate: int) -> tuple[list[str], dict[str, AudioFrontend]]:
    """(each member's `input_key`, the frontend of each distinct key, the first member's of it): one input per key in
    the graph, every frontend taking waveforms at `rate` Hz (`preprocessing.layers.Resample` brings them to a member's
    own rate)."""
    keys = [input_key(member.run.config) for member in members]
    frontends = {}
    for key, member in zip(keys, members, strict=True):
        if key not in frontends:
            frontends[key] = audio_frontend(member.run.config, rate)
    return keys, frontends


def check_waveform_members(members: list) -> None:
    """SystemExit, one line, for a table member: its feature rows cannot be made in a waveform graph."""
    for member in members:
        if reads_features(member.run.config):
            raise SystemExit(
                f"error: member {member.run.path.name} is a table model ({member.run.config.model.kind}): its feature "
                "rows cannot be made in a waveform graph, so this ensemble cannot be exported"
            )


def member_rate(member) -> int:
    """Hz of the waveform a member's exported model takes alone: the rate its representation is made at."""
    return audio_frontend(member.run.config).layout.sample_rate


def ensemble_note(members: list, rate: int, highest: int) -> str:
    """What an ensemble's signature at `rate` Hz takes, and for which members it resamples in the graph (`highest`:
    the rate of its default signature, the highest a member takes)."""
    note = f"mono float32 waveform at {rate} Hz" + (", the highest rate a member takes" if rate == highest else "")
    resampled = [f"{m.run.path.name} ({member_rate(m)} Hz)" for m in members if member_rate(m) != rate]
    if resampled:
        note += (
            f"; resampled in the graph for {', '.join(resampled)} by a windowed sinc (close to, not equal to, the soxr "
            "resampling of predict)"
        )
    return note


def ensemble_metadata(run: RunDir, members: list, rate: int, rates: tuple[int, ...] = ()) -> dict:
    """What an exported ensemble says of itself: its members (model, weight, pooling), the rate its default signature
    takes and the signatures at other `rates`, and how many distinct spectrograms and model inputs its graph makes."""
    return {
        "exported_by": "genre_tf.serving.export",
        "run": run.path.name,
        "model": "ensemble: " + " + ".join(f"{member.run.path.name} {member.weight:.2f}" for member in members),
        "classes": run.classes,
        "input": "waveform",
        "input_note": ensemble_note(members, rate, rate),
        "sample_rate": rate,
        "rate_signatures": {rate_signature(other): other for other in rates},
        "members": [
            {
                "name": member.run.path.name,
                "model": base_metadata(member.run)["model"],
                "weight": member.weight,
                "pooling": member.pooling,
                "segment_seconds": member.run.config.audio.segment_seconds,
                "sample_rate": member_rate(member),
            }
            for member in members
        ],
        "inputs": len({input_key(member.run.config) for member in members}),
        "spectrograms": len({segments_key(member.run.config) for member in members}),
        "track_probabilities": "the weighted mean of the members' track probabilities, each pooled as the member "
        "pools its segments (their mean, or a linear probe's softmax of their mean log-probability)",
    }


def describe_ensemble(metadata: dict) -> list[str]:
    """What a person needs to call an exported ensemble: its input, outputs, members and classes."""
    members = metadata["members"]
    return [
        f"input: waveform, float32 (samples,): {metadata['input_note']}; any length",
        f"outputs: probabilities ({len(metadata['classes'])},) of the track: {metadata['track_probabilities']}; "
        f"member_probabilities ({len(members)}, classes), classes, sample_rate, metadata (JSON)",
        f"members ({metadata['inputs']} distinct inputs from {metadata['spectrograms']} "
        f"spectrogram{'s' if metadata['spectrograms'] != 1 else ''} in the graph): "
        + ", ".join(f"{m['name']} {m['weight']:.2f} ({m['model']})" for m in members),
        *other_rates(metadata, "each member's own rate"),
        f"classes: {', '.join(metadata['classes'])}",
        *(["note: uses TF Select ops (Flex): the interpreter needs the Flex delegate"]
          if metadata.get("tflite_select_ops") else []),
    ]  # fmt: skip


def check_ensemble(run: RunDir) -> None:
    """An ensemble run whose members can be loaded, or a one-line error."""
    for member in run.members():
        if not member.run.model_file.is_file():
            raise SystemExit(f"error: {member.run.path} has no model.keras (not a finished run directory)")


def read_waveform(path: Path, cfg: Config) -> np.ndarray:
    """An audio file as an exported audio model of this config takes it: decoded as `prepare` does, at its rate."""
    return at_model_rate(load_track(path, cfg.audio), cfg)


def at_model_rate(y: np.ndarray, cfg: Config) -> np.ndarray:
    """A waveform decoded at the config's audio.sample_rate, at the rate its exported audio model takes: musicnn's
    16 kHz, else as it is."""
    return to_musicnn_rate(y, cfg.audio.sample_rate) if model_input(cfg) == MUSICNN_PATCH else y


def segments_key(cfg: Config) -> str:
    """What an audio run's segments are cut from: its representation's shaping parameters (the cache key's). Runs with
    one key cut equal segments of the spectrogram (`cut_segments`) from a waveform."""
    return json.dumps(
        shaping_parameters(model_input(cfg), cfg.audio, cfg.features, cfg.mel), sort_keys=True, default=str
    )


def input_key(cfg: Config) -> str:
    """What a run's segment inputs are made from and with: its segments (`segments_key`) and, for mel images, the
    model's image size and channels, for feature rows whether they are the track's or its segments' (`model.level`).
    Runs with one key read equal inputs from a waveform."""
    shaping = {
        MEL_IMAGE: [list(cfg.model.image_size), cfg.model.channels, cfg.model.channel_mode],
        FEATURES: cfg.model.level,
    }
    return json.dumps([segments_key(cfg), shaping.get(model_input(cfg))])


def write_saved_model(module, path: Path) -> None:
    """The module as a SavedModel with its signatures (`signatures`)."""
    # Saved from a module without a `serve` attribute: the TFLite converter takes a SavedModel that has one for
    # Keras's `model.export` and converts its serving_default alone.
    saved = tf.Module()
    saved.model_variables = module.model_variables
    saved.signature_functions = signatures(module)
    tf.saved_model.save(saved, str(path), signatures=saved.signature_functions)


def tflite_bytes(saved_model: Path) -> tuple[bytes, bool]:
    """A SavedModel, every signature, as TFLite flatbuffer bytes, and whether it needs TF Select (Flex) ops.

    Builtin ops first, so that any TFLite interpreter runs the file; Select ops only where builtins cannot express
    an op (they need an interpreter linked with the Flex delegate).
    """
    proto = saved_model_pb2.SavedModel.FromString((saved_model / "saved_model.pb").read_bytes())
    keys = sorted(key for key in proto.meta_graphs[0].signature_def if not key.startswith("__"))  # not the init op

    def convert(ops: list) -> bytes:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=keys)
        converter.target_spec.supported_ops = ops
        return converter.convert()

    try:
        return convert([tf.lite.OpsSet.TFLITE_BUILTINS]), False
    except Exception:  # the converter raises assorted errors; Select ops are the one remedy to try
        return convert([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]), True


def default_output(run: RunDir, fmt: str) -> Path:
    """Where an export goes unless --output says otherwise: the run's export folder."""
    return run.export_dir / ("saved_model" if fmt == "saved_model" else f"{run.path.name}.tflite")


def export(run: RunDir, fmt: str, output: Path, progress: Callable[[str], None] = print) -> dict:
    """Write the run as a SavedModel folder or a .tflite file at `output`; returns the artefact's metadata."""
    started = time.perf_counter()

    def step(text: str) -> None:
        progress(f"[{time.perf_counter() - started:5.1f} s] {text}")

    step(f"loading {run.path}")
    module, metadata = (ensemble_serving_module if run.is_ensemble else serving_module)(run)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        saved = Path(tmp) / "saved_model"
        step("tracing the serving graph and writing the SavedModel")
        write_saved_model(module, saved)
        if fmt == "saved_model":
            if output.exists():
                shutil.rmtree(output)
            saved.rename(output)  # whole or not at all: written beside it, then moved into place
        else:
            step("converting to TFLite")
            data, select_ops = tflite_bytes(saved)
            write_atomic(output, data)
            metadata["tflite_select_ops"] = select_ops
    step(f"written {output} ({artefact_bytes(output) / 1e6:.1f} MB)")
    return metadata


def artefact_bytes(path: Path) -> int:
    """Size of a file, or of every file in a folder."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def describe(metadata: dict) -> list[str]:
    """What a person needs to call the artefact: its input, outputs and classes."""
    if metadata["input"] == "features":
        columns = metadata["columns"]
        lines = [
            f"input: features, float32 (rows, {len(columns)}): {metadata['input_note']}",
            f"columns: {columns[0]} ... {columns[-1]} (all of them in the metadata output)",
            f"outputs: probabilities (rows, {len(metadata['classes'])}) per row, classes, sample_rate (0), metadata",
        ]
    else:
        lines = [
            f"input: waveform, float32 (samples,): {metadata['input_note']}; any length, a clip shorter than one "
            f"segment ({metadata['segment_seconds']:g} s) is repeated to fill one",
            f"outputs: probabilities ({len(metadata['classes'])},) of the track: {metadata['track_probabilities']}; "
            "segment_probabilities (segments, classes), classes, sample_rate, metadata (JSON)",
        ]
        lines += other_rates(metadata, f"{metadata['model_sample_rate']} Hz")
    lines.append(f"classes: {', '.join(metadata['classes'])}")
    if metadata.get("tflite_select_ops"):
        lines.append("note: uses TF Select ops (Flex): the interpreter needs the Flex delegate")
    return lines


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


def check_run(run: RunDir) -> None:
    """A run that can be exported, or a one-line error."""
    if not run.path.is_dir():
        raise SystemExit(f"error: no such run directory: {run.path}")
    if not run.model_file.is_file():
        raise SystemExit(f"error: {run.path} has no model.keras (not a finished run directory)")
    try:
        run.config  # noqa: B018  (reads and validates config.yaml)
    except ConfigError as err:
        raise SystemExit(f"error: {run.config_file}: {err}") from None


def check_output(output: Path, fmt: str) -> None:
    """Refuse to replace anything but an earlier export of the same format."""
    if not output.exists():
        return
    if fmt == "saved_model" and not (output / "saved_model.pb").is_file():
        raise SystemExit(f"error: {output} exists and is not a SavedModel; give another --output")
    if fmt == "tflite" and output.is_dir():
        raise SystemExit(f"error: {output} is a folder; give a file path for --format tflite")
