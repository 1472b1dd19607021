"""Export a run as a self-contained SavedModel folder or TFLite file: audio in, class probabilities out.

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

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from genre_tf import models
from genre_tf.evaluation.unknown import load_unknown
from genre_tf.extract.cache import write_atomic
from genre_tf.features.scaling import QuantileScaler
from genre_tf.inputs.layers import QuantileScaling, StandardScaling
from genre_tf.run import RunDir
from genre_tf.serving.audio_graph import embedded_head, patch_features
from genre_tf.serving.export_ensemble import ensemble_serving_module
from genre_tf.serving.frontend import (
    EXPORT_RATES,
    AudioFrontend,
    audio_frontend,
    base_metadata,
    constant_outputs,
    cut_segments,
    graph_calibrated,
    graph_track_probabilities,
    other_rates,
    rate_functions,
    rate_signature,
    segment_frames,
)
from genre_tf.serving.litert import exported_tflite

FORMATS = ("saved_model", "tflite")
SIGNATURE = "serving_default"


def scaling_layer(run: RunDir):
    """The run's feature scaler as a layer: `StandardScaling` or `QuantileScaling`."""
    scaler = run.scaler
    if isinstance(scaler, QuantileScaler):
        return QuantileScaling(scaler.quantiles.tolist(), scaler.references.tolist())
    return StandardScaling(scaler.mean.tolist(), scaler.std.tolist())


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
        # how the run decodes a file before the graph (features.audio.load_track), which serving.litert repeats
        "decoding": {
            "sample_rate": audio.sample_rate,
            "duration": audio.duration,
            "max_duration": audio.max_duration,
            "min_seconds": audio.min_seconds,
            "silence_rms": audio.silence_rms,
        },
        # where the segments lie at `sample_rate` (frontend.SegmentLayout): the answer's segment positions
        "segments": {
            "segment_samples": frontend.layout.segment_samples,
            "hop_samples": frontend.layout.hop_samples,
            "max_segments": frontend.layout.max_segments,
        },
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
    if run.recipe.reads_features:
        layer, metadata = scaling_layer(run), table_metadata(run)

        # A track-level model's rows are tracks, which its temperature calibrates; a segment's row is left as it is.
        temperature = metadata["temperature"] if run.config.model.level == "track" else 1.0

        @tf.function(input_signature=[tf.TensorSpec([None, len(metadata["columns"])], tf.float32, name="features")])
        def serve(features):
            probabilities = graph_calibrated(model(layer(features), training=False), temperature)
            return {"probabilities": probabilities, **constant_outputs(metadata)}

        module.serve = serve
        return module, metadata

    probe = models.family(run.config.model).track_level(run.config.model)
    frontend = audio_frontend(run.recipe)
    metadata = audio_metadata(run, frontend, probe, rates)
    unknown = load_unknown(run)
    if unknown is not None:
        metadata["unknown"] = {key: unknown[1][key] for key in ("k", "threshold", "method")}
    patches = run.recipe.reads_patches
    module.serve = waveform_function(model, frontend, probe, metadata, unknown, patches)
    module.serve_at = rate_functions(
        module.serve,
        frontend.rate,
        lambda rate: waveform_function(model, audio_frontend(run.recipe, rate), probe, metadata, unknown, patches),
        rates,
    )
    return module, metadata


def waveform_function(model, frontend: AudioFrontend, probe: bool, metadata: dict, unknown=None, patches: bool = False):
    """The tf.function of an audio model's signature: waveform at the frontend's rate -> calibrated probabilities,
    and with `unknown` (`evaluation.unknown.load_unknown`) the track's unknown score and whether it is past the
    threshold; its constant outputs say that rate and the frontend's note. A musicnn model (`patches`) runs its
    backbone on the clip's patches as `predict` does (`audio_graph.patch_features`: overlapping patches share their
    timbral convolutions), then its head."""
    said = {**metadata, "sample_rate": frontend.rate, "input_note": frontend.note}
    if patches:
        features, head = patch_features(model, frontend.layout.frames), embedded_head(model)

        def embedded(waveform):
            spectrogram, starts, _ = segment_frames(waveform, frontend)
            return head(features(spectrogram, starts), training=False)
    else:
        with_embedding = models.with_embedding(model)

        def embedded(waveform):
            return with_embedding(frontend.to_input(cut_segments(waveform, frontend)), training=False)

    if unknown is not None:
        reference, record = tf.constant(unknown[0]), unknown[1]
        k, threshold = int(record["k"]), float(record["threshold"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
    def serve(waveform):
        segments, embeddings = embedded(waveform)
        outputs = {
            "probabilities": graph_calibrated(graph_track_probabilities(segments, probe), metadata["temperature"]),
            "segment_probabilities": segments,
            **constant_outputs(said),
        }
        if unknown is not None:  # as evaluation.unknown scores it: cosine distance to the k-th nearest training track
            track = tf.math.l2_normalize(tf.reduce_mean(embeddings, axis=0))
            score = 1.0 - tf.math.top_k(tf.linalg.matvec(reference, track), k=k).values[-1]
            outputs |= {"unknown_score": score, "unknown": score > threshold}
        return outputs

    return serve


def signatures(module) -> dict:
    """{signature name: function} of a serving module: `serving_default`, and an audio model's `waveform_<rate>`."""
    return {SIGNATURE: module.serve, **getattr(module, "serve_at", {})}


def write_saved_model(module, path: Path) -> None:
    """The module as a SavedModel with its signatures (`signatures`)."""
    # Saved from a module without a `serve` attribute: the TFLite converter takes a SavedModel that has one for
    # Keras's `model.export` and converts its serving_default alone.
    saved = tf.Module()
    saved.model_variables = module.model_variables
    saved.signature_functions = signatures(module)
    tf.saved_model.save(saved, str(path), signatures=saved.signature_functions)


def tflite_bytes(saved_model: Path, quantize: str = "none") -> tuple[bytes, bool]:
    """A SavedModel, every signature, as TFLite flatbuffer bytes, and whether it needs TF Select (Flex) ops.

    Builtin ops first, so that any TFLite interpreter runs the file; Select ops only where builtins cannot express
    an op (they need an interpreter linked with the Flex delegate). `quantize` (`export.QUANTIZE`): float16 stores the
    weights as float16, half the bytes, computed in float32 where the CPU has no float16 arithmetic.
    """
    proto = saved_model_pb2.SavedModel.FromString((saved_model / "saved_model.pb").read_bytes())
    keys = sorted(key for key in proto.meta_graphs[0].signature_def if not key.startswith("__"))  # not the init op

    def convert(ops: list) -> bytes:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=keys)
        converter.target_spec.supported_ops = ops
        # A musicnn graph calls some functions twice (the timbral convolutions on a clip and on patch edges, the
        # branches of a cond): the converter fails on them, prints an error line, then retries with each function
        # used once; asking for that first converts the same graph without the line.
        converter._experimental_guarantee_all_funcs_one_use = True
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()

    try:
        return convert([tf.lite.OpsSet.TFLITE_BUILTINS]), False
    except Exception:  # the converter raises assorted errors; Select ops are the one remedy to try
        return convert([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]), True


def default_output(run: RunDir, fmt: str) -> Path:
    """Where an export goes unless --output says otherwise: the run's export folder."""
    return run.export_dir / "saved_model" if fmt == "saved_model" else exported_tflite(run.path)


def export(
    run: RunDir, fmt: str, output: Path, progress: Callable[[str], None] = print, quantize: str = "none"
) -> dict:
    """Write the run as a SavedModel folder or a .tflite file (its weights as `quantize` says: `tflite_bytes`) at
    `output`; returns the artefact's metadata."""
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
            step("converting to TFLite" + ("" if quantize == "none" else f", {quantize} weights"))
            data, select_ops = tflite_bytes(saved, quantize)
            write_atomic(output, data)
            metadata.update(tflite_select_ops=select_ops, tflite_weights="float32" if quantize == "none" else quantize)
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
    if metadata.get("tflite_weights") == "float16":
        lines.append("weights: float16 (half the bytes), computed in float32 on CPUs without float16 arithmetic")
    if metadata.get("tflite_select_ops"):
        lines.append("note: uses TF Select ops (Flex): the interpreter needs the Flex delegate")
    return lines


def check_output(output: Path, fmt: str) -> None:
    """Refuse to replace anything but an earlier export of the same format."""
    if not output.exists():
        return
    if fmt == "saved_model" and not (output / "saved_model.pb").is_file():
        raise SystemExit(f"error: {output} exists and is not a SavedModel; give another --output")
    if fmt == "tflite" and output.is_dir():
        raise SystemExit(f"error: {output} is a folder; give a file path for --format tflite")
