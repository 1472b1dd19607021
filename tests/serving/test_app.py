"""The HTTP service: predictions equal to the command line's, bad input answered with its one-line reasons, uploads
streamed into cleaned temporary folders, and the page in a real (headless) browser."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from genre_tf import predict as predict_command
from genre_tf.config import CacheConfig, save_config
from genre_tf.data.demo import DEMO_GENRES, generate_demo
from genre_tf.features.audio import spread_segments
from genre_tf.inputs.recipe import InputRecipe
from genre_tf.run import RunDir
from genre_tf.serving import musicnn_tags, predict
from genre_tf.serving.app import Predictor, create_app
from genre_tf.serving.uploads import MB, BadInput, Limits, Upload, receive_upload

REPO = Path(__file__).resolve().parents[2]
BOUNDARY = "genre-tf-test-boundary"


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, make_config) -> RunDir:
    """A hand-made CNN run over the demo genres with random weights (0.5 s segments, 0.25 s hop): no training."""
    from genre_tf import models

    tmp = tmp_path_factory.mktemp("serve_run")
    cfg = make_config(
        tmp,
        "name=serve_cnn",
        f"output_dir={tmp}",
        "audio.segment_hop=0.25",
        "model.kind=cnn",
        "model.cnn.conv_blocks=2",
        "model.cnn.filters=4",
        "model.image_size=[16, 16]",
    )
    model = models.build_model(cfg.model, InputRecipe.of(cfg).shape(), len(DEMO_GENRES))
    rng = np.random.default_rng(3)
    # Kernels only: BatchNorm's statistics keep their initial values, which random draws would make meaningless.
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) if w.ndim > 1 else w for w in model.weights])
    run = RunDir(tmp / "serve_cnn")
    run.path.mkdir()
    save_config(cfg, run.config_file)
    run.classes_file.write_text(json.dumps(list(DEMO_GENRES)))
    model.save(run.model_file)
    return run


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """One 6 s synthetic demo clip per genre."""
    return generate_demo(tmp_path_factory.mktemp("serve_clips"), 1, 6.0)


@pytest.fixture(scope="module")
def app(cnn_run):
    return create_app(cnn_run)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app)


def post(client: TestClient, name: str, data: bytes, **params):
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")}, params=params)


def command_line_reason(run: RunDir, path: Path, capsys) -> str:
    """What `python -m genre_tf.predict --run RUN PATH` says of a file it skips."""
    with pytest.raises(SystemExit, match="nothing to predict"):
        predict_command.main(["--run", str(run.path), str(path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"skipped {path}: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix(f"skipped {path}: ")


def test_a_prediction_equals_the_command_lines(client, cnn_run, clips, tmp_path, capsys):
    clip = clips[DEMO_GENRES.index("techno")]
    answer = client.post("/predict", files={"file": (clip.name, clip.read_bytes())}, params={"top_k": 3})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    output = tmp_path / "sub.csv"
    predict_command.main(["--run", str(cnn_run.path), str(clip), "--probabilities", "--output", str(output)])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    row = pd.read_csv(output).iloc[0]
    expected = [row[f"p_{genre}"] for genre in DEMO_GENRES]
    np.testing.assert_allclose(body["probabilities"], expected, atol=1e-6)  # the CSV keeps 6 decimals
    assert body["genre"] == row["class"]
    assert printed == f"{clip.stem}: " + ", ".join(f"{t['genre']} {t['probability']:.3f}" for t in body["top"])
    assert body["classes"] == list(DEMO_GENRES) and body["model"] == "serve_cnn" and body["kind"] == "cnn"
    assert body["file"] == clip.name and body["duration"] == 6.0
    # 0.5 s segments every 0.25 s over 6 s: 23 of them, 20 kept (audio.max_segments_per_track), whose mean is the
    # file's answer; each starts where it lies in the file.
    assert [s["start"] for s in body["segments"]] == [0.25 * k for k in spread_segments(23, 20)]
    assert body["segment_seconds"] == 0.5
    segments = np.array([s["probabilities"] for s in body["segments"]])
    np.testing.assert_allclose(segments.mean(axis=0), body["probabilities"], rtol=1e-5)
    assert not np.allclose(segments, segments[0]), "random weights still tell segments apart"
    assert "tags" not in body  # a CNN run has no musicnn tagger


def test_health_names_the_model_and_the_limits(client):
    health = client.get("/health").json()
    assert health == {
        "status": "ok",
        "model": "serve_cnn",
        "kind": "cnn",
        "classes": list(DEMO_GENRES),
        "max_bytes": 50 * MB,
        "max_seconds": 600.0,
    }


def test_the_page_and_its_assets_come_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<input id="file" type="file"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text, "the browser has no internet: nothing from a CDN"


def bad_files(folder: Path, clip: Path) -> dict[str, bytes]:
    """Files the command line skips, by their client names: each reason differs."""
    wav = clip.read_bytes()
    rate = sf.info(clip).samplerate
    audio, _ = sf.read(clip, dtype="float32")
    sf.write(folder / "fragment.wav", audio[: rate // 20], rate)  # 0.05 s < audio.min_seconds 0.1 s
    return {
        "notes.wav": b"genre: jazz\nthis is not audio\n",
        "empty.wav": b"",
        "cut.wav": wav[:40],
        "fragment.wav": (folder / "fragment.wav").read_bytes(),
        "notes.txt": wav,
    }


def test_bad_input_gets_the_command_lines_one_line_reason(client, cnn_run, clips, tmp_path, capsys, monkeypatch):
    loaded, load_model = [], RunDir.load_model
    monkeypatch.setattr(RunDir, "load_model", lambda run: loaded.append(run) or load_model(run))
    expected = {
        "notes.wav": (422, "not an audio file (text)"),
        "empty.wav": (422, "empty file (0 bytes)"),
        "cut.wav": (422, "truncated header (WAV, 40 bytes)"),
        "fragment.wav": (422, "too short (0.05 s < audio.min_seconds 0.1 s)"),
        "notes.txt": (415, "unsupported extension .txt"),
    }
    for name, data in bad_files(tmp_path, clips[0]).items():
        path = tmp_path / name
        path.write_bytes(data)
        answer = post(client, name, data)
        assert (answer.status_code, answer.json()) == (expected[name][0], {"detail": expected[name][1]}), name
        assert command_line_reason(cnn_run, path, capsys) == expected[name][1]
    assert loaded == [], "an unreadable input is answered before any model is loaded"
    assert post(client, clips[0].name, clips[0].read_bytes()).status_code == 200, "the service keeps serving"


def test_requests_without_a_file_get_one_line(client):
    no_file = client.post("/predict", data={"name": "song.wav"}, files={"other": ("a.wav", b"RIFF")})
    assert (no_file.status_code, no_file.json()) == (
        422,
        {"detail": "no file: send the audio as the multipart form field 'file'"},
    )
    not_a_form = client.post("/predict", content=b"RIFF....", headers={"content-type": "audio/wav"})
    assert not_a_form.status_code == 415 and "multipart/form-data" in not_a_form.json()["detail"]
    bad_k = post(client, "a.wav", b"x", top_k=0)
    assert bad_k.status_code == 422 and bad_k.json()["detail"].startswith("top_k: ")


@pytest.fixture
def limits(app, monkeypatch):
    """limits(**changes): the app's limits changed for one test."""

    def change(**changes) -> None:
        predictor = app.state.predictor
        monkeypatch.setattr(predictor, "limits", replace(predictor.limits, **changes))

    return change


def test_size_and_duration_limits(client, clips, limits):
    wav = clips[0].read_bytes()  # 6 s, 265 kB
    limits(max_bytes=200_000)
    too_large = post(client, "a.wav", wav)
    assert (too_large.status_code, too_large.json()) == (413, {"detail": "file over the upload limit (0.2 MB)"})
    limits(max_bytes=50 * MB, max_seconds=5.5)
    too_long = post(client, "a.wav", wav)
    assert (too_long.status_code, too_long.json()) == (413, {"detail": "too long (6.00 s > the limit of 5.5 s)"})


def chunked_body(data: bytes, name: str, chunk: int) -> tuple[list[bytes], dict[str, str]]:
    """A multipart body with one field `file`, in chunks, and its headers."""
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
    body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    return [body[i : i + chunk] for i in range(0, len(body), chunk)], headers


def receive(chunks: list[bytes], headers: dict, folder: Path, max_bytes: int) -> tuple[object, int]:
    """receive_upload over the chunks: (its upload or BadInput, how many chunks it read)."""
    read = 0

    async def stream():
        nonlocal read
        for chunk in chunks:
            read += 1
            yield chunk

    async def run():
        try:
            return await receive_upload(headers, stream(), folder, max_bytes)
        except BadInput as err:
            return err

    return asyncio.run(run()), read


def test_an_upload_is_refused_while_it_streams(tmp_path):
    data = bytes(range(256)) * 4000  # 1 MB
    chunks, headers = chunked_body(data, "song.wav", 10_000)
    refused, read = receive(chunks, headers, tmp_path, max_bytes=100_000)
    assert isinstance(refused, BadInput) and refused.status == 413
    assert read == 11 < len(chunks), "stops with the chunk that passes the limit"
    assert (tmp_path / "upload.wav").stat().st_size <= 100_000
    declared, read = receive(chunks, {**headers, "content-length": str(len(data) + 200)}, tmp_path, 100_000)
    assert isinstance(declared, BadInput) and declared.status == 413 and read == 0, "a declared length is enough"
    upload, _ = receive(chunks, headers, tmp_path, max_bytes=len(data))
    assert (upload.path, upload.name, upload.size) == (tmp_path / "upload.wav", "song.wav", len(data))
    assert upload.path.read_bytes() == data


def test_a_client_name_is_never_a_path_and_the_folder_is_cleaned(client, clips, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []
    predict_upload = Predictor.predict

    def spy(self, upload, top_k):
        answer = predict_upload(self, upload, top_k)
        seen.append((upload.path, sorted(p.name for p in upload.path.parent.rglob("*"))))
        return answer

    monkeypatch.setattr(Predictor, "predict", spy)
    answer = post(client, "../../evil name.WAV", clips[0].read_bytes())
    assert answer.status_code == 200 and answer.json()["file"] == "../../evil name.WAV"
    (path, files), *_ = seen
    assert path.name == "upload.wav" and path.parent.parent == tmp_path
    assert files == ["upload.wav"], "an audio run is served from the graph: no cache entry, even while it answers"
    assert post(client, "x.wav", b"not audio").status_code == 422
    assert list(tmp_path.iterdir()) == [], "every request's folder is gone"


def test_concurrent_requests_share_model_calls_and_answer_as_one_at_a_time(app, client, clips, monkeypatch):
    good = [clips[DEMO_GENRES.index(genre)] for genre in ("ambient", "folk", "techno")]
    batcher = app.state.predictor.batcher
    before = len(batcher.batch_sizes)
    alone = [post(client, clip.name, clip.read_bytes()).json() for clip in good]
    assert len(batcher.batch_sizes) == before, "one upload at a time: each answered in its own thread, not batched"
    # 20 segments per clip: the model is called once the three good uploads' 60 segments are queued (the window is
    # waited whether or not the others' uploads have arrived yet)
    monkeypatch.setattr(batcher, "limits", replace(batcher.limits, window=30.0, max_batch=60))
    monkeypatch.setattr(batcher, "expecting", lambda: True)
    # the first upload could find itself alone and answer in its own thread (as `alone` above were): to the batcher
    monkeypatch.setattr(app.state.predictor, "_alone", lambda: False)
    calls = len(batcher.batch_sizes)
    uploads = [(clip.name, clip.read_bytes()) for clip in good]
    uploads.insert(1, ("notes.wav", b"genre: jazz\nthis is not audio\n"))
    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(lambda upload: post(client, *upload), uploads))
    broken = answers.pop(1)
    assert (broken.status_code, broken.json()) == (422, {"detail": "not an audio file (text)"})
    assert batcher.batch_sizes[calls:] == [3], "one model call for the three good uploads"
    for answer, expected in zip(answers, alone, strict=True):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["genre"] == expected["genre"] and body["file"] == expected["file"]
        # batched with others, the model's float rounding may differ in the last bits
        np.testing.assert_allclose(body["probabilities"], expected["probabilities"], rtol=0, atol=1e-6)
        got, want = ([s["probabilities"] for s in b["segments"]] for b in (body, expected))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert [s["start"] for s in body["segments"]] == [s["start"] for s in expected["segments"]]


@pytest.mark.parametrize("level", ["segment", "track"])
def test_a_table_run_is_served_from_its_feature_rows_as_predict_does(
    tmp_path, make_table_run, write_feature_table, clips, monkeypatch, level
):
    table = write_feature_table(tmp_path / "table.csv", ["a", "b", "c"])
    run = RunDir(make_table_run(tmp_path / "mlp", table, f"model.level={level}"))
    predictor = Predictor(run, Limits())
    upload = tmp_path / "request" / "upload.wav"
    upload.parent.mkdir()
    shutil.copy(clips[0], upload)
    decoded = decodes(monkeypatch)
    answer = predictor.predict(Upload(upload, clips[0].name, upload.stat().st_size), top_k=3)
    assert decoded == [upload] and list(upload.parent.iterdir()) == [upload], "decoded once, no cache entry written"
    examples = predict.load_inputs(run, [clips[0]], CacheConfig(tmp_path / "cache", 1), progress=False)
    _, expected = predict.predict_frame(run, examples.frame, predictor.model)
    np.testing.assert_allclose(answer["probabilities"], expected[0], rtol=0, atol=1e-6)
    assert len(answer["segments"]) == len(examples.frame) == (1 if level == "track" else 12)
    positions = examples.frame["segment"] if level == "segment" else [0]
    assert [s["start"] for s in answer["segments"]] == [0.5 * k for k in positions] and answer["classes"] == list("abc")


def decodes(monkeypatch) -> list[Path]:
    """The files the audio loader decodes from now on: serving and the cache both call it as `audio.load_track`."""
    from genre_tf.features import audio

    decoded, load_track = [], audio.load_track
    monkeypatch.setattr(audio, "load_track", lambda path, cfg: decoded.append(path) or load_track(path, cfg))
    return decoded


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None,
    reason="musicnn wheel not installed (pip install --no-deps musicnn==0.1.0): it holds MSD_musicnn",
)
def test_a_musicnn_run_answers_and_tags_as_predict_does(tmp_path, make_audio_run, clips, monkeypatch):
    overrides = ["model.kind=transfer", "model.transfer.backbone=MSD_musicnn", "model.transfer.weights=pretrained"]
    # overlapping segments: the backbone computes their timbral convolutions once per clip (`BackboneFeatures`)
    overrides += ["model.transfer.head_units=16", "audio.segment_seconds=1", "audio.segment_hop=0.5"]
    run = RunDir(make_audio_run(tmp_path / "musicnn", list(DEMO_GENRES), *overrides))
    predictor = Predictor(run, Limits())
    assert predictor.graph.shares_backbone, "a frozen pretrained backbone is the tagger's: each patch goes through once"
    clip = clips[DEMO_GENRES.index("folk")]
    answer = predictor.predict(Upload(clip, clip.name, clip.stat().st_size), top_k=3)
    examples = predict.load_inputs(run, [clip], CacheConfig(tmp_path / "cache", 1), progress=False)
    _, expected = predict.predict_frame(run, examples.frame, predictor.model)
    # float rounding: 1.0e-6 measured, the cache's float16-rounded patches against the graph's
    np.testing.assert_allclose(answer["probabilities"], expected[0], rtol=0, atol=1e-5)
    (_, tags), *_ = musicnn_tags.track_tags(run, examples, model=predictor.tagger)
    assert [t["tag"] for t in answer["tags"]] == [tag for tag, _ in tags]
    np.testing.assert_allclose([t["probability"] for t in answer["tags"]], [p for _, p in tags], rtol=0, atol=1e-6)
    assert examples.frame["segment"].tolist() == list(range(11))
    assert [s["start"] for s in answer["segments"]] == [k / 2 for k in range(11)]
    # tag --write: the genres, the unknown score and the musicnn tags from one pass over each file's audio
    from genre_tf.serving.tagging import TAGS_FIELD, read_field, tag_files

    (run.path / "calibration.json").write_text(
        json.dumps({"temperature": 1.0, "valid_confidence": [0.0], "valid_correct": [True]})
    )
    song = shutil.copy(clip, tmp_path / "song.wav")
    decoded = decodes(monkeypatch)
    planned = tag_files(run.path, [song], True, tmp_path / "log.csv", tmp_path / "plan.csv", 0.9)
    assert decoded == [Path(song)] and planned.done.tolist() == [True]
    assert read_field(Path(song), TAGS_FIELD).startswith(f"{tags[0][0]} {tags[0][1]:.2f}")


# The real browser: Debian's chromium and chromium-driver, driven by selenium without selenium-manager downloads.
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def page_app(app):
    """The app the browser sees: the random test run, or GENRE_TF_SERVE_RUN (a trained run, for the screenshot)."""
    run = os.environ.get("GENRE_TF_SERVE_RUN")
    return create_app(RunDir(Path(run))) if run else app


@pytest.fixture(scope="module")
def live_server(page_app):
    """The app under uvicorn on 127.0.0.1 at a free port, in a thread: its base URL."""
    with serving(page_app) as url:
        yield url


@contextlib.contextmanager
def serving(app):
    """Serve the app under uvicorn on 127.0.0.1 at a free port, in a thread: yields its base URL, then stops it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium; skipped with the reason where it is not installed."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("no browser: apt-get install chromium chromium-driver (what .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless as root with no screen; the machine's network is closed, so Chromium must not try to phone home.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=900,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.browser
def test_the_page_shows_the_apis_genre_in_a_browser(browser, live_server, page_app, clips, tmp_path):
    """Choose demo audio on the page: its bars and strip show what the API answers for the same file.

    GENRE_TF_SCREENSHOT=docs/serve.png saves the page (the README's picture; with GENRE_TF_SERVE_RUN set to a
    trained run, such as saved_models/demo_cnn, it shows a real prediction)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clip = tmp_path / "house_then_techno.wav"  # a change of genre for the strip to show
    parts = [sf.read(clips[DEMO_GENRES.index(genre)], dtype="float32") for genre in ("house", "techno")]
    sf.write(clip, np.concatenate([audio for audio, _ in parts]), parts[0][1])
    api = TestClient(page_app).post("/predict", files={"file": (clip.name, clip.read_bytes())}).json()
    browser.get(live_server + "/")
    WebDriverWait(browser, 20).until(lambda b: api["model"] in b.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(clip))
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 60).until(lambda b: result.get_attribute("data-state") in ("done", "error"))
    assert result.get_attribute("data-state") == "done", browser.find_element(By.ID, "status").text
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert bars[0].get_attribute("data-genre") == api["genre"] == result.get_attribute("data-genre")
    assert "top" in bars[0].get_attribute("class") and api["genre"] in bars[0].text
    shown = {b.get_attribute("data-genre"): float(b.get_attribute("data-probability")) for b in bars}
    assert list(shown.values()) == sorted(shown.values(), reverse=True), "most likely first"
    assert shown == pytest.approx(dict(zip(api["classes"], api["probabilities"], strict=True)), abs=1e-6)
    cells = browser.find_elements(By.CSS_SELECTOR, "#strip .cell")
    expected = [api["classes"][int(np.argmax(s["probabilities"]))] for s in api["segments"]]
    assert [c.get_attribute("data-genre") for c in cells] == expected
    if os.environ.get("GENRE_TF_SCREENSHOT"):
        target = REPO / os.environ["GENRE_TF_SCREENSHOT"]
        target.parent.mkdir(parents=True, exist_ok=True)
        height = browser.execute_script("return Math.ceil(document.body.getBoundingClientRect().bottom)")
        metrics = {"width": 900, "height": height, "deviceScaleFactor": 1, "mobile": False}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # the whole page, no scrollbar
        assert browser.save_screenshot(str(target))


@pytest.fixture(scope="module")
def ensemble_app(cnn_run, make_audio_run, make_ensemble_run, tmp_path_factory):
    """The service of an ensemble: the test run (weight 0.7) and an untrained one-block CNN (0.3)."""
    tmp = tmp_path_factory.mktemp("serve_ensemble")
    other = make_audio_run(tmp / "other_cnn", list(DEMO_GENRES), "model.image_size=[16, 16]", "model.cnn.conv_blocks=1")
    return create_app(RunDir(make_ensemble_run(tmp / "pair", [(cnn_run.path, 0.7), (other, 0.3)])))


@pytest.mark.browser
def test_the_page_shows_an_ensembles_members(browser, ensemble_app, clips):
    """An ensemble's page names it and its members, and under the bars shows each member's top genre and weight."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clip = clips[DEMO_GENRES.index("folk")]
    api = TestClient(ensemble_app).post("/predict", files={"file": (clip.name, clip.read_bytes())}).json()
    with serving(ensemble_app) as url:
        browser.get(url + "/")
        model = browser.find_element(By.ID, "model")
        WebDriverWait(browser, 20).until(lambda b: "pair" in model.text)
        assert model.text.startswith(
            "ensemble pair of 2 models (serve_cnn, cnn, weight 0.70; other_cnn, cnn, weight 0.30)"
        )
        browser.find_element(By.ID, "file").send_keys(str(clip))
        result = browser.find_element(By.ID, "result")
        WebDriverWait(browser, 60).until(lambda b: result.get_attribute("data-state") in ("done", "error"))
        assert result.get_attribute("data-state") == "done", browser.find_element(By.ID, "status").text
        assert result.get_attribute("data-genre") == api["genre"]
        lines = browser.find_elements(By.CSS_SELECTOR, "#member-lines .member")
        assert [(e.get_attribute("data-name"), e.get_attribute("data-genre")) for e in lines] == [
            (m["name"], m["genre"]) for m in api["members"]
        ]
        assert lines[0].text == f"serve_cnn (cnn, weight 0.70): {api['members'][0]['genre']} " + (
            f"{api['members'][0]['probability']:.3f}"
        )
        assert "as serve_cnn (the heaviest member) sees them" in browser.find_element(By.ID, "segment-note").text


def test_an_ensemble_scores_unknown_by_its_members_over_their_thresholds(
    tmp_path, cnn_run, make_audio_run, make_ensemble_run, clips
):
    """Each member scores an upload against its own training tracks; the ensemble's score is the weighted mean of
    score / threshold (1.0 at every member's threshold), and past 1.0 the service and predict both say unknown."""
    from genre_tf.evaluation.unknown import knn_scores, normalised

    other = make_audio_run(
        tmp_path / "other", list(DEMO_GENRES), "model.image_size=[16, 16]", "model.cnn.conv_blocks=1"
    )
    pair = RunDir(make_ensemble_run(tmp_path / "pair", [(cnn_run.path, 0.7), (other, 0.3)]))
    predictor = create_app(pair).state.predictor
    clip = clips[DEMO_GENRES.index("folk")]
    mean = [part.graph_probabilities(clip)[3].astype(np.float64).mean(axis=0) for part in predictor.parts]
    rng = np.random.default_rng(0)
    references = [normalised(mean[0][None]), normalised(rng.normal(size=(1, len(mean[1]))))]
    for part, reference in zip(predictor.parts, references, strict=True):
        np.save(part.run.unknown_embeddings, reference)
    scores = [float(knn_scores(m[None], r, 1)[0]) for m, r in zip(mean, references, strict=True)]
    assert scores[0] == pytest.approx(0.0, abs=1e-5) and scores[1] > 0.1
    api = TestClient(create_app(pair))
    for thresholds in ([0.5, scores[1] / 0.5], [0.5, scores[1] / 4.0]):  # member 2 at 0.5, then 4 times its threshold
        for part, threshold in zip(predictor.parts, thresholds, strict=True):
            part.run.unknown_file.write_text(json.dumps({"k": 1, "threshold": threshold, "method": "test"}))
        expected = 0.7 * scores[0] / thresholds[0] + 0.3 * scores[1] / thresholds[1]  # 0.15, then 1.2
        answer = api.post("/predict", files={"file": (clip.name, clip.read_bytes())}).json()
        assert answer["unknown"]["score"] == pytest.approx(expected, abs=1e-4)
        assert answer["unknown"]["unknown"] == (expected > 1.0) == (answer["genre"] == "unknown")
        made = predict.predict_tracks([pair], [clip])
        assert made.unknown[0][0] == pytest.approx(expected, abs=1e-4) and made.unknown[1][0] == (expected > 1.0)
