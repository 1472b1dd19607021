"""Ensemble runs served and exported as one: the service's answer and the exported SavedModel / TFLite file equal
`predict --run ENSEMBLE` (each member pooling as it does alone: a CNN's mean, a probe's softmax of mean logits), the
upload decoded once for every member (an MLP's feature rows too, with no cache entry) and an input read by two members
made once, the export's signatures at other rates close to predict, /health and the answer naming the members, and
the one-line refusals of an export that cannot hold the ensemble in one waveform graph."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from genre_tf.config import save_config
from genre_tf.export import main
from genre_tf.features import audio
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.run import RunDir
from genre_tf.serving import predict
from genre_tf.serving.app import EnsemblePredictor, create_app
from genre_tf.serving.export import tflite_bytes, write_saved_model
from genre_tf.serving.export_ensemble import ensemble_serving_module
from genre_tf.serving.frontend import read_waveform
from genre_tf.serving.uploads import Limits, Upload

SR = 22050

CLASSES = ["blues", "jazz", "rock"]
CNN = ["model.image_size=[16, 16]", "model.cnn.conv_blocks=1", "model.cnn.filters=4"]
# A MobileNet linear probe's config (track-level: it pools its segments' logits) over 32 x 32 x 3 images; its model is
# a small random stand-in reading those images (a random MobileNet's features vanish, giving uniform probabilities).
PROBE = ["model.kind=transfer", "model.transfer.backbone=MobileNet", "model.transfer.alpha=0.25",
         "model.transfer.weights=null", "model.level=track", "model.transfer.head_units=0", "model.channels=3",
         "model.image_size=[32, 32]"]  # fmt: skip


def sharpened(run: RunDir, scale: float = 30.0) -> RunDir:
    """The run with its softmax layer `scale` times sharper: random weights alone give nearly uniform probabilities,
    which would hide how members are pooled and weighed."""
    model = run.load_model()
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([kernel * scale, bias])
    model.save(run.model_file)
    return run


def probe_run(path: Path, make_config) -> RunDir:
    import keras

    run = RunDir(path)
    run.path.mkdir(parents=True)
    cfg = make_config(path.parent, *PROBE, f"name={path.name}", f"output_dir={path.parent}")
    save_config(cfg, run.config_file)
    run.classes_file.write_text(json.dumps(CLASSES))
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    keras.Model(inputs, keras.layers.Dense(len(CLASSES), "softmax", name="predictions")(features)).save(run.model_file)
    return sharpened(run)


def write_sweep(path: Path, seconds: float, start_hz: float, end_hz: float) -> Path:
    """A mono 16-bit WAV tone gliding from `start_hz` to `end_hz`: its segments differ, so pooling them matters."""
    t = np.arange(round(seconds * SR)) / SR
    phase = 2 * np.pi * (start_hz * t + (end_hz - start_hz) * t**2 / (2 * seconds))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(phase)).astype(np.float32), SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, write_clip, make_audio_run, make_table_run, write_feature_table, make_config,
         make_ensemble_run) -> dict:  # fmt: skip
    """Tone clips (one of 1.5 s per class, one of 0.3 s: shorter than a segment) and untrained members: two CNNs
    reading one input (other seeds), a probe reading another, and an MLP on feature rows; an audio ensemble of the
    first three and one of all four."""
    tmp = tmp_path_factory.mktemp("ensemble_serve")
    sweeps = [(110.0, 3000.0), (4000.0, 300.0), (700.0, 900.0)]
    clips = [write_sweep(tmp / "clips" / f"{g}.00000.wav", 1.5, *sweeps[c]) for c, g in enumerate(CLASSES)]
    clips.append(write_clip(tmp / "clips" / "rock.00001.wav", 0.3, 500.0))
    cnn = sharpened(RunDir(make_audio_run(tmp / "runs" / "cnn", CLASSES, *CNN, seed=0)))
    twin = sharpened(RunDir(make_audio_run(tmp / "runs" / "cnn_twin", CLASSES, *CNN, seed=4)))
    probe = probe_run(tmp / "runs" / "probe", make_config)
    table = write_feature_table(tmp / "table.csv", CLASSES)
    mlp = RunDir(make_table_run(tmp / "runs" / "mlp", table, seed=2))
    every = [(cnn.path, 0.4), (twin.path, 0.1), (probe.path, 0.3), (mlp.path, 0.2)]
    return {
        "tmp": tmp,
        "clips": clips,
        "audio": RunDir(
            make_ensemble_run(tmp / "audio_ensemble", [(cnn.path, 0.2), (twin.path, 0.3), (probe.path, 0.5)])
        ),
        "all": RunDir(make_ensemble_run(tmp / "all_ensemble", every)),
    }


def predicted(run: RunDir, clips: list[Path]) -> np.ndarray:
    """`predict --run RUN CLIPS`'s track probabilities, in the clips' order."""
    tracks, probs, _ = predict.ensemble([run], clips)
    assert tracks.tolist() == [clip.stem for clip in clips]
    return probs


@pytest.fixture(scope="module")
def own(runs) -> dict:
    """`predict`'s track probabilities of the clips by the audio ensemble and by each of its members alone."""
    ensemble = runs["audio"]
    return {run.path.name: predicted(run, runs["clips"]) for run in [ensemble, *(m.run for m in ensemble.members())]}


def test_a_served_ensemble_answers_as_predict_and_names_its_members(runs):
    ensemble = runs["all"]
    client = TestClient(create_app(ensemble))
    members = ensemble.members()
    health = client.get("/health").json()
    assert health["kind"] == "ensemble" and health["model"] == "all_ensemble" and health["classes"] == CLASSES
    assert health["members"] == [
        {"name": "cnn", "kind": "cnn", "weight": 0.4},
        {"name": "cnn_twin", "kind": "cnn", "weight": 0.1},
        {"name": "probe", "kind": "transfer", "weight": 0.3},
        {"name": "mlp", "kind": "mlp", "weight": 0.2},
    ]
    clip = runs["clips"][1]
    answer = client.post("/predict", files={"file": (clip.name, clip.read_bytes())}, params={"top_k": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = predicted(ensemble, [clip])[0]
    np.testing.assert_allclose(body["probabilities"], expected, rtol=0, atol=1e-5)
    assert body["genre"] == CLASSES[int(np.argmax(expected))] and len(body["top"]) == 2
    assert body["kind"] == "ensemble" and body["model"] == "all_ensemble"
    alone = {member.run.path.name: predicted(member.run, [clip])[0] for member in members}
    assert len({int(np.argmax(p)) for p in alone.values()}) >= 2, "members that agree would hide a wrong weighing"
    for line in body["members"]:
        np.testing.assert_allclose(line["probabilities"], alone[line["name"]], rtol=0, atol=1e-5)
        assert line["genre"] == CLASSES[int(np.argmax(alone[line["name"]]))]
    assert [(m["name"], m["weight"], m["pooling"]) for m in body["members"]] == [
        ("cnn", 0.4, "mean"), ("cnn_twin", 0.1, "mean"), ("probe", 0.3, "logits"), ("mlp", 0.2, "mean")
    ]  # fmt: skip
    # The strip shows the heaviest member's segments: 1.5 s in 0.5 s segments.
    assert body["segments_of"] == "cnn" and [s["start"] for s in body["segments"]] == [0.0, 0.5, 1.0]


def test_an_upload_is_decoded_once_and_a_shared_input_made_once(runs, own, monkeypatch):
    predictor = EnsemblePredictor(runs["audio"], Limits())
    decoded, made = [], []
    load_track = audio.load_track
    monkeypatch.setattr(audio, "load_track", lambda *args: decoded.append(args[0]) or load_track(*args))
    for part in predictor.parts:
        segments = part.graph.segments
        monkeypatch.setattr(part.graph, "segments", lambda y, segments=segments: made.append(len(y)) or segments(y))
    clips = runs["clips"]
    answers = [predictor.predict(Upload(clip, clip.name, clip.stat().st_size), top_k=3) for clip in clips]
    assert len(decoded) == len(clips) and len(made) == 2 * len(clips), "two CNNs read one input: 2 inputs per upload"
    np.testing.assert_allclose([a["probabilities"] for a in answers], own["audio_ensemble"], rtol=0, atol=1e-5)
    assert answers[-1]["segments_of"] == "probe" and len(answers[-1]["segments"]) == 1, "0.3 s: one tiled segment"
    # The probe, the heaviest, gives the strip its segments; its track probabilities pool their logits, not their mean.
    segments = np.array([s["probabilities"] for s in answers[0]["segments"]])
    probe = answers[0]["members"][2]["probabilities"]
    logits = np.log(segments).mean(axis=0)
    np.testing.assert_allclose(probe, np.exp(logits) / np.exp(logits).sum(), rtol=0, atol=1e-6)
    assert np.abs(segments.mean(axis=0) - probe).max() > 1e-3, "the sweep's segments differ: pooling matters"


def test_a_table_member_reads_the_upload_decoded_for_the_audio_members(runs, tmp_path, monkeypatch):
    """The MLP's feature rows are made from the waveform the CNNs and the probe read (their decoding settings are
    equal): one decode per upload for all four members, no cache entry written, and predict's answer."""
    predictor = EnsemblePredictor(runs["all"], Limits())
    decoded, load_track = [], audio.load_track
    # serving's loader and the cache's, which predict's table runs go through: both call audio.load_track
    monkeypatch.setattr(audio, "load_track", lambda *args: decoded.append(args[0]) or load_track(*args))
    folder = tmp_path / "request"
    answers = []
    for clip in runs["clips"]:
        folder.mkdir()
        upload = folder / "upload.wav"
        upload.write_bytes(clip.read_bytes())
        answers.append(predictor.predict(Upload(upload, clip.name, upload.stat().st_size), top_k=3))
        assert list(folder.iterdir()) == [upload], "nothing beside the upload: no cache entry"
        upload.unlink()
        folder.rmdir()
    assert decoded == [folder / "upload.wav"] * len(runs["clips"]), "once per upload, for every member"
    monkeypatch.undo()
    np.testing.assert_allclose([a["probabilities"] for a in answers], predicted(runs["all"], runs["clips"]), atol=1e-5)
    mlp = [a["members"][3]["probabilities"] for a in answers]
    np.testing.assert_allclose(mlp, predicted(runs["all"].members()[3].run, runs["clips"]), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def exported(runs) -> dict:
    """The audio ensemble as a SavedModel (by the command line) and a TFLite file, and their outputs on the clips: at
    22050 Hz by serving_default, and resampled with soxr to 44100 Hz (as test_export.py feeds a single run's) by
    waveform_44100."""
    import librosa
    import tensorflow as tf

    folder = runs["tmp"] / "export"
    with contextlib.redirect_stdout(io.StringIO()) as said:
        main(["--run", str(runs["audio"].path), "--format", "saved_model", "--output", str(folder / "saved_model")])
    (folder / "ensemble.tflite").write_bytes(tflite_bytes(folder / "saved_model")[0])
    saved = tf.saved_model.load(str(folder / "saved_model")).signatures
    lite = tf.lite.Interpreter(model_path=str(folder / "ensemble.tflite"))
    cfg = runs["audio"].members()[0].run.config
    waveforms = {"serving_default": [read_waveform(clip, InputRecipe.of(cfg)) for clip in runs["clips"]]}
    waveforms["waveform_44100"] = [
        librosa.resample(y, orig_sr=SR, target_sr=44100, res_type="soxr_hq") for y in waveforms["serving_default"]
    ]
    outputs = {}
    for signature, inputs in waveforms.items():
        serve, runner = saved[signature], lite.get_signature_runner(signature)
        outputs[signature] = {
            "saved_model": [{k: v.numpy() for k, v in serve(waveform=tf.constant(y)).items()} for y in inputs],
            "tflite": [runner(waveform=y) for y in inputs],
        }
    signatures = {"saved_model": sorted(saved), "tflite": sorted(lite.get_signature_list())}
    return {"said": said.getvalue().splitlines(), "outputs": outputs, "signatures": signatures}


@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_an_exported_ensemble_agrees_with_predict(runs, own, exported, fmt):
    outputs = exported["outputs"]["serving_default"][fmt]
    want = own["audio_ensemble"]
    np.testing.assert_allclose([out["probabilities"] for out in outputs], want, rtol=0, atol=1e-4)
    alone = [own[name] for name in ("cnn", "cnn_twin", "probe")]
    assert (alone[0].argmax(axis=1) != alone[2].argmax(axis=1)).all(), "members that agree would hide a wrong weighing"
    for i, member_want in enumerate(alone):  # each member pooled as alone: the probe by its mean logits
        np.testing.assert_allclose([out["member_probabilities"][i] for out in outputs], member_want, atol=1e-4)
    metadata = json.loads(np.asarray(outputs[0]["metadata"]).item())
    assert (metadata["inputs"], metadata["spectrograms"], metadata["sample_rate"]) == (2, 1, 22050)
    assert [(m["name"], m["weight"], m["pooling"]) for m in metadata["members"]] == [
        ("cnn", 0.2, "mean"), ("cnn_twin", 0.3, "mean"), ("probe", 0.5, "logits")
    ]  # fmt: skip
    assert [c.decode() for c in np.asarray(outputs[0]["classes"])] == CLASSES


@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_an_exported_ensembles_signatures_for_other_rates_agree_with_predict(own, exported, fmt):
    """waveform_44100 resamples each member's input in the graph (not soxr): held to the bounds of a single run's
    signatures at other rates (test_export.py); measured here: max 0.0028, mean 0.0005, top-1 all alike."""
    assert exported["signatures"][fmt] == ["serving_default", *(f"waveform_{r}" for r in (16000, 22050, 44100, 48000))]
    outputs = exported["outputs"]["waveform_44100"][fmt]
    got, want = np.array([out["probabilities"] for out in outputs]), own["audio_ensemble"]
    assert np.mean(got.argmax(axis=1) == want.argmax(axis=1)) >= 0.9
    assert np.abs(got - want).max() < 0.04 and np.abs(got - want).mean() < 0.003
    metadata = json.loads(np.asarray(outputs[0]["metadata"]).item())
    assert (metadata["sample_rate"], int(np.asarray(outputs[0]["sample_rate"]))) == (44100, 44100)
    assert metadata["input_note"].startswith("mono float32 waveform at 44100 Hz; resampled in the graph for cnn (22050")
    assert metadata["rate_signatures"]["waveform_16000"] == 16000


def test_an_ensemble_with_a_table_member_is_refused_in_one_line(runs):
    with pytest.raises(SystemExit) as table:
        main(["--run", str(runs["all"].path), "--format", "saved_model"])
    assert str(table.value) == (
        "error: member mlp is a table model (mlp): its feature rows cannot be made in a waveform graph, so this "
        "ensemble cannot be exported"
    )


def test_the_command_line_says_what_an_exported_ensemble_takes(exported):
    said = exported["said"]
    assert said[-2].startswith(
        "other rates: signatures waveform_16000, waveform_44100, waveform_48000 take the waveform at that rate and "
        "resample it in the graph to each member's own rate"
    )
    del said[-2]
    assert said[-4] == (
        "input: waveform, float32 (samples,): mono float32 waveform at 22050 Hz, the highest rate a member takes; "
        "any length"
    )
    assert said[-3].startswith("outputs: probabilities (3,) of the track: the weighted mean of the members'")
    assert said[-2].startswith("members (2 distinct inputs from 1 spectrogram in the graph): cnn 0.20 (cnn: ")
    assert said[-1] == "classes: blues, jazz, rock"


def test_members_at_other_rates_are_resampled_in_the_graph(runs, make_audio_run, make_ensemble_run):
    """A CNN at 22050 Hz and a random musicnn, whose patches are made at 16 kHz: the file takes 22050 Hz and resamples
    in the graph for musicnn, where predict resamples with soxr; close, not equal."""
    import tensorflow as tf

    musicnn = make_audio_run(runs["tmp"] / "musicnn", CLASSES, "model.kind=transfer",
                             "model.transfer.backbone=MSD_musicnn", "model.transfer.weights=null",
                             "model.transfer.head_units=8", seed=6)  # fmt: skip
    cnn = runs["audio"].members()[0].run
    mixed = RunDir(make_ensemble_run(runs["tmp"] / "mixed", [(cnn.path, 0.5), (musicnn, 0.5)]))
    module, metadata = ensemble_serving_module(mixed, rates=())
    assert metadata["sample_rate"] == 22050 and [m["sample_rate"] for m in metadata["members"]] == [22050, 16000]
    assert "resampled in the graph for musicnn (16000 Hz)" in metadata["input_note"]
    write_saved_model(module, runs["tmp"] / "mixed_saved_model")
    serve = tf.saved_model.load(str(runs["tmp"] / "mixed_saved_model")).signatures["serving_default"]
    got = np.stack([serve(waveform=tf.constant(read_waveform(c, cnn.recipe)))["probabilities"] for c in runs["clips"]])
    want = predicted(mixed, runs["clips"])
    # The graph's resampler is not soxr: test_export.py measured musicnn's signatures at other rates within 0.020
    # (max) and 0.0014 (mean) of predict on real clips; a random musicnn barely responds to the difference: 3.1e-6 here.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
