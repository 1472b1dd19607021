"""An audio run's model inputs made in the graph `export` builds, and its model called on them: what `serve` and
`predict` run on a decoded waveform instead of reading a cache entry.

The waveform comes as the exported model takes it (`frontend.read_waveform`); its segments' inputs are made by the
exported preprocessing (`frontend.audio_frontend`, `segment_frames`), which tests/test_export.py pins to the cache's
recipe, and the segments go to the model `train.batch_size` at a time. A musicnn run may carry its backbone's
pretrained tagger, whose tags come from the same backbone pass where the run's backbone is still the tagger's.
`serve` also makes a table run's (the MLP's) feature rows from the decoded waveform (`FeatureRows`, by the cache's
functions, writing nothing), so that an upload is decoded once for every run of an ensemble.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from genre_tf.config import AudioConfig
from genre_tf.extract.cache import Recipe, segment_positions
from genre_tf.extract.track import analyse_waveform
from genre_tf.features import audio
from genre_tf.features.analysis import feature_columns
from genre_tf.features.audio import AudioError
from genre_tf.features.musicnn_input import N_MELS
from genre_tf.features.representations import FEATURES
from genre_tf.models import with_embedding
from genre_tf.models.musicnn import shared_patches_network
from genre_tf.models.transfer import get_backbone
from genre_tf.run import RunDir
from genre_tf.serving.frontend import (
    at_model_rate,
    audio_frontend,
    frames_at,
    input_key,
    segment_frames,
)

DECODING = ("sample_rate", "duration", "max_duration", "min_seconds", "silence_rms")  # what audio.load_track reads


class AudioGraph:
    """An audio run's exported preprocessing and model as two TensorFlow functions: a waveform's segments, then a
    batch of segments' probabilities (and musicnn tags, where the run has a tagger).

    A musicnn run computes its backbone in `segments` (`BackboneFeatures`: the timbral convolutions of overlapping
    patches once per clip, equal to a pass per patch), so its segments' inputs are the backbone's features and
    `batch` runs the head (and the tagger's logits, where the tagger's backbone is the run's) on them; unless the run
    has a tagger of another backbone (one it trained on), which then reads the patches.
    """

    def __init__(self, run: RunDir, model, tagger=None):

        frontend = audio_frontend(run.recipe)
        layout = frontend.layout
        self.shares_backbone = tagger is not None and same_backbone(model, tagger)
        self.reads_backbone = run.recipe.reads_patches and (tagger is None or self.shares_backbone)

        waveform_spec = tf.TensorSpec([None], tf.float32, name="waveform")

        def inputs_of(waveform):
            """The segments' model inputs and positions (for a musicnn run reading its backbone: the clip's frames,
            the patches' starts and positions, its backbone cutting the patches)."""
            spectrogram, starts, positions = segment_frames(waveform, frontend)
            if self.reads_backbone:
                return spectrogram, starts, positions
            return frontend.to_input(frames_at(spectrogram, starts, layout.frames)), positions

        segments = tf.function(inputs_of, input_signature=[waveform_spec])

        made = segments.get_concrete_function().structured_outputs[0]  # the spectrogram, or the segments' inputs
        if self.reads_backbone:
            self._features = BackboneFeatures(model, layout.frames, made.dtype)
            called = embedded_head(model, tagger if self.shares_backbone else None)
            spec = tf.TensorSpec([None, get_backbone(model).output.shape[-1]], tf.float32, name="features")
        else:
            called = with_embedding(model)
            spec = tf.TensorSpec([None, *made.shape[1:]], made.dtype, name="segments")

        def outputs_of(segments):
            outputs = dict(zip(("probabilities", "embedding", "tags"), called(segments, training=False), strict=False))
            if tagger is not None and "tags" not in outputs:
                outputs["tags"] = tagger(segments, training=False)
            return outputs

        def at_once(waveform):
            inputs, positions = inputs_of(waveform)
            return outputs_of(inputs), positions

        self._segments, self._probabilities = segments, tf.function(outputs_of, input_signature=[spec])
        self._at_once = None if self.reads_backbone else tf.function(at_once, input_signature=[waveform_spec])
        self.batch_size = run.config.train.batch_size
        # a waveform of at most this many samples has at most one batch of segments
        self._one_batch = layout.segment_samples + (self.batch_size - 1) * layout.hop_samples
        self._silence = np.zeros(layout.segment_samples, np.float32)
        self.batch(self.segments(self._silence)[0])  # traced now, not at a request

    def trace_at_once(self) -> None:
        """Trace `at_once` now (the service does, before its first request; predict never calls it)."""
        self.at_once(self._silence)

    def segments(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the model's inputs, one per segment, a musicnn run's: its backbone's features of each; each segment's
        position: it starts at position * hop)."""
        if not self.reads_backbone:
            inputs, positions = self._segments(waveform)
            return inputs.numpy(), positions.numpy()
        spectrogram, starts, positions = (t.numpy() for t in self._segments(waveform))
        return self._features.of_clip(spectrogram, starts, self.batch_size), positions

    def batch(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for segments' inputs, one row per segment, computed `train.batch_size` at a time as
        `predict` batches them (which also bounds the memory of a call: a musicnn patch's activations are MBs)."""
        return in_batches(self._probabilities, inputs, self.batch_size)

    def at_once(self, waveform: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`batch(segments(waveform))` in the calling thread, and the positions: a lone request's answer, with no
        other request's segments to wait for. A clip of one batch of segments or fewer (a run's 30 s clip) goes
        through one graph, front end and model together, as the exported model takes it."""
        if self._at_once is None or len(waveform) > self._one_batch:
            inputs, positions = self.segments(waveform)
            return self.batch(inputs), positions
        outputs, positions = self._at_once(waveform)
        return {name: value.numpy() for name, value in outputs.items()}, positions.numpy()


class BackboneFeatures:
    """A musicnn run's backbone on one clip's patches, `of_clip(spectrogram, starts)`: its features of each patch,
    from `shared_patches_network` where patches overlap (a clip's segments at a hop under the segment's length),
    else from a pass per patch (a whole song's few segments spread apart: `audio.max_segments_per_track`)."""

    def __init__(self, model, frames: int, dtype: tf.DType):
        self.frames = frames
        signature = [tf.TensorSpec([None, N_MELS], dtype), tf.TensorSpec([None], tf.int32)]
        self._features = tf.function(patch_features(model, frames), input_signature=signature)

    def of_clip(self, spectrogram: np.ndarray, starts: np.ndarray, batch_size: int) -> np.ndarray:
        """(n, width) features of the patches starting at `starts` (ascending) of a (time, 96) spectrogram, computed
        `batch_size` patches at a time (over the frames those cover) so that a long song's activations stay bounded."""
        chunks = []
        for i in range(0, len(starts), batch_size):
            chunk = starts[i : i + batch_size].astype(np.int32)
            frames = spectrogram[chunk[0] : chunk[-1] + self.frames]
            chunks.append(self._features(frames, chunk - chunk[0]).numpy())
        return np.concatenate(chunks)


def patch_features(model, frames: int):
    """A musicnn run's backbone as a graph function (spectrogram: (time, 96) mel power, starts: (n,) its patches'
    first frames, ascending) -> (n, width) features of each patch: `shared_patches_network` where the patches
    overlap (they cover fewer frames than n patches hold), else a pass per patch."""
    backbone, preprocess = get_backbone(model), model.get_layer("preprocess")
    shared = shared_patches_network(backbone, frames)

    def features(spectrogram, starts):
        log_mel = preprocess(spectrogram[None, : starts[-1] + frames])  # elementwise: the patches' log-mel
        overlapping = tf.shape(log_mel)[1] < tf.size(starts) * frames
        return tf.cond(
            overlapping,
            lambda: shared([log_mel, starts], training=False),
            lambda: backbone(frames_at(log_mel[0], starts, frames), training=False),
        )

    return features


class FeatureRows:
    """A table run's (the MLP's) feature rows of a waveform, made as the cache makes them (`features.analyse_track` on
    the track's segments, a clip shorter than one segment tiled to fill one, as `track.analyse_file` does), and its
    scaler and model on a batch of them: what `serve` runs on a decoded waveform instead of writing a cache entry. It
    answers as an AudioGraph does (`segments`, `batch`), so a table run shares an upload's decoded waveform too."""

    def __init__(self, run: RunDir, model):

        self.cfg, self.scaler = run.config, run.scaler
        self.columns = feature_columns(self.cfg.features.n_mfcc)  # the order of the cache's rows

        embedded = with_embedding(model)

        @tf.function(input_signature=[tf.TensorSpec([None, len(self.scaler.columns)], tf.float32, name="rows")])
        def probabilities(rows):
            probabilities, embedding = embedded(rows, training=False)
            return {"probabilities": probabilities, "embedding": embedding}

        self._probabilities = probabilities
        self.batch_size = self.cfg.train.batch_size
        self.shares_backbone = self.reads_backbone = False
        self.batch(np.zeros((1, len(self.columns))))  # traced now, not at a request

    def segments(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the feature rows, unscaled: a track-level run's one row of the whole track, else one per segment; each
        row's position: segment k starts at k * hop, the track's row at 0)."""
        analysis, meta = analyse_waveform(waveform, Recipe.from_config(self.cfg), (FEATURES,))  # short clips tiled
        if self.cfg.model.level == "track":
            return analysis.track_row[None], np.zeros(1, int)
        return analysis.segment_rows, np.array(segment_positions(meta, self.cfg.audio))

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The model's probabilities for feature rows, scaled by the run's scaler as `predict` scales them, computed
        `train.batch_size` rows at a time."""
        return in_batches(
            self._probabilities, self.scaler.transform(pd.DataFrame(rows, columns=self.columns)), self.batch_size
        )

    def trace_at_once(self) -> None:
        """Nothing to trace: `at_once` is `segments`, then `batch`, traced already."""

    def at_once(self, waveform: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`batch(segments(waveform))` and the rows' positions, in the calling thread (`AudioGraph.at_once`)."""
        rows, positions = self.segments(waveform)
        return self.batch(rows), positions


def in_batches(function, inputs: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """A model function's outputs (a dict of tensors, one row per input row) for `inputs`, `batch_size` rows a call."""
    chunks = [function(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return {name: np.concatenate([chunk[name].numpy() for chunk in chunks]) for name in chunks[0]}


def waveform_model(run: RunDir, model, tagger=None) -> AudioGraph | FeatureRows:
    """What makes a run's inputs from a decoded waveform and calls its model on them: a table run's FeatureRows, an
    audio run's AudioGraph (with the musicnn `tagger`, where given)."""
    return FeatureRows(run, model) if run.recipe.reads_features else AudioGraph(run, model, tagger)


def embedded_head(model: keras.Model, tagger: keras.Model | None = None) -> keras.Model:
    """A transfer model's head alone, from its backbone's output to `with_embedding`'s two outputs (probabilities,
    and what the softmax layer reads), and with a musicnn `tagger` of the same backbone its tags (its logits layer
    on the same features), its weights shared."""
    backbone = get_backbone(model)
    features = keras.Input(shape=backbone.output.shape[1:], name="backbone_features")
    x = embedding = features
    for layer in model.layers[model.layers.index(backbone) + 1 :]:  # a plain chain (`build_transfer`)
        embedding = x
        x = layer(x)
    outputs = [x, embedding]
    if tagger is not None:
        logits = get_backbone(tagger).get_layer("backend_logits")(features)
        outputs.append(keras.layers.Activation("sigmoid", name="tags")(logits))
    return keras.Model(features, outputs, name="head")


def same_backbone(model, tagger) -> bool:
    """Whether the run's musicnn backbone is the tagger's (pretrained and frozen: equal weights), so that a patch goes
    through it once for both; not where training changed it."""
    backbone, network = get_backbone(model), get_backbone(tagger)
    for layer in backbone.layers:
        pretrained = network.get_layer(layer.name).get_weights()
        if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), pretrained, strict=True)):
            return False
    return True


def decoding_key(cfg: AudioConfig) -> tuple:
    """The audio settings that decide a decoded waveform: runs equal in these decode a file alike."""
    return tuple(getattr(cfg, name) for name in DECODING)


def waveform_inputs(
    path: Path, runs: list[RunDir], graphs: list[AudioGraph | FeatureRows]
) -> list[tuple[np.ndarray, np.ndarray] | str]:
    """Per run, a file's segments as its graph makes them (the model's inputs, their positions; a table run's
    FeatureRows: its feature rows), or the one-line reason the file cannot be decoded with that run's settings. The
    file is decoded once per decoding setting (`decoding_key`), and runs that read equal inputs (`export.input_key`,
    which holds every audio setting) share one computation of them, unless a graph reads its backbone: its own."""
    decoded: dict = {}
    made: dict = {}
    results = []
    for run, graph in zip(runs, graphs, strict=True):
        cfg = run.config
        decoding, reading = decoding_key(cfg.audio), input_key(run.recipe)
        if graph.reads_backbone:  # its inputs are its own backbone's features
            reading = (reading, str(run.path))
        if decoding not in decoded:
            try:
                decoded[decoding] = audio.load_track(Path(path), cfg.audio)
            except AudioError as err:
                decoded[decoding] = str(err)
        if isinstance(decoded[decoding], str):
            results.append(decoded[decoding])
            continue
        if reading not in made:
            made[reading] = graph.segments(at_model_rate(decoded[decoding], run.recipe))
        results.append(made[reading])
    return results
