"""An audio run's model inputs made in the graph `export` builds, and its model called on them: what `serve` and
`predict` run on a decoded waveform instead of reading a cache entry.

The waveform comes as the exported model takes it (`frontend.read_waveform`); its segments' inputs are made by the
exported preprocessing (`frontend.audio_frontend`, `cut_segments`), which tests/test_export.py pins to the cache's
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
from genre_tf.features.representations import FEATURES
from genre_tf.models import with_embedding
from genre_tf.models.transfer import get_backbone
from genre_tf.run import RunDir
from genre_tf.serving.frontend import (
    at_model_rate,
    audio_frontend,
    cut_segments,
    fit_waveform,
    graph_segment_positions,
    input_key,
)

DECODING = ("sample_rate", "duration", "max_duration", "min_seconds", "silence_rms")  # what audio.load_track reads


class AudioGraph:
    """An audio run's exported preprocessing and model as two TensorFlow functions: a waveform's segments, then a
    batch of segments' probabilities (and musicnn tags, where the run has a tagger)."""

    def __init__(self, run: RunDir, model, tagger=None):

        frontend = audio_frontend(run.recipe)
        layout = frontend.layout

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
        def segments(waveform):
            n_samples = tf.shape(fit_waveform(waveform, layout))[0]
            return frontend.to_input(cut_segments(waveform, frontend)), graph_segment_positions(n_samples, layout)

        inputs = segments.get_concrete_function().structured_outputs[0]
        tagged = None if tagger is None else sharing_the_backbone(model, tagger)

        embedded = with_embedding(model)

        @tf.function(input_signature=[tf.TensorSpec([None, *inputs.shape[1:]], inputs.dtype, name="segments")])
        def probabilities(segments):
            if tagged is not None:
                probabilities, embedding, tags = tagged(segments, training=False)
                return {"probabilities": probabilities, "embedding": embedding, "tags": tags}
            probabilities, embedding = embedded(segments, training=False)
            outputs = {"probabilities": probabilities, "embedding": embedding}
            if tagger is not None:
                outputs["tags"] = tagger(segments, training=False)
            return outputs

        self._segments, self._probabilities = segments, probabilities
        self.batch_size = run.config.train.batch_size
        self.shares_backbone = tagged is not None
        self.batch(self.segments(np.zeros(layout.segment_samples, np.float32))[0])  # traced now, not at a request

    def segments(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the model's inputs, one per segment; each segment's position: it starts at position * hop)."""
        inputs, positions = self._segments(waveform)
        return inputs.numpy(), positions.numpy()

    def batch(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for segments' inputs, one row per segment, computed `train.batch_size` at a time as
        `predict` batches them (which also bounds the memory of a call: a musicnn patch's activations are MBs)."""
        return in_batches(self._probabilities, inputs, self.batch_size)


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
        self.shares_backbone = False
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


def in_batches(function, inputs: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """A model function's outputs (a dict of tensors, one row per input row) for `inputs`, `batch_size` rows a call."""
    chunks = [function(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return {name: np.concatenate([chunk[name].numpy() for chunk in chunks]) for name in chunks[0]}


def waveform_model(run: RunDir, model, tagger=None) -> AudioGraph | FeatureRows:
    """What makes a run's inputs from a decoded waveform and calls its model on them: a table run's FeatureRows, an
    audio run's AudioGraph (with the musicnn `tagger`, where given)."""
    return FeatureRows(run, model) if run.recipe.reads_features else AudioGraph(run, model, tagger)


def sharing_the_backbone(model, tagger):
    """The run's musicnn model with the tagger's tags as a second output, computed from the run's backbone, where
    that backbone is the tagger's (pretrained and frozen: equal weights), so that a patch goes through it once;
    None where training changed it (the tagger then runs whole)."""

    backbone, network = get_backbone(model), get_backbone(tagger)
    for layer in backbone.layers:
        pretrained = network.get_layer(layer.name).get_weights()
        if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), pretrained, strict=True)):
            return None
    features = backbone._inbound_nodes[-1].output_tensors[0]  # its output in the run's graph (`.output`: its own)
    logits = network.get_layer("backend_logits")(features)
    return with_embedding(model, keras.layers.Activation("sigmoid", name="tags")(logits))


def decoding_key(cfg: AudioConfig) -> tuple:
    """The audio settings that decide a decoded waveform: runs equal in these decode a file alike."""
    return tuple(getattr(cfg, name) for name in DECODING)


def waveform_inputs(
    path: Path, runs: list[RunDir], graphs: list[AudioGraph | FeatureRows]
) -> list[tuple[np.ndarray, np.ndarray] | str]:
    """Per run, a file's segments as its graph makes them (the model's inputs, their positions; a table run's
    FeatureRows: its feature rows), or the one-line reason the file cannot be decoded with that run's settings. The
    file is decoded once per decoding setting (`decoding_key`), and runs that read equal inputs (`export.input_key`,
    which holds every audio setting) share one computation of them."""
    decoded: dict = {}
    made: dict = {}
    results = []
    for run, graph in zip(runs, graphs, strict=True):
        cfg = run.config
        decoding, reading = decoding_key(cfg.audio), input_key(run.recipe)
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
