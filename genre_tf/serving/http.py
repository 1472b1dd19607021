"""The HTTP routes of the service, for any predictor: POST /predict, GET /health, the page and its files.

A predictor has `limits` (`uploads.Limits`), `predict(upload, top_k)` (the JSON body) and `health()`: the run's
(`app.Predictor`, `app.EnsemblePredictor`, on TensorFlow) or an exported file's on LiteRT (`litert_app`).
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from genre_tf.serving.uploads import BadInput, receive_upload

WEB_DIR = resources.files("genre_tf.serving") / "web"


def http_app(predictor, name: str) -> FastAPI:
    """The service of a predictor; `name`: the model's, for the API's summary."""
    app = FastAPI(title="genre_tf", summary=f"music genres with the run {name}")
    app.state.predictor = predictor

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, err: BadInput) -> JSONResponse:
        return JSONResponse({"detail": err.reason}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in err.errors())
        return JSONResponse({"detail": reason}, status_code=422)

    @app.post("/predict", response_class=JSONResponse)
    async def predict(request: Request, top_k: int = Query(3, ge=1, le=100)) -> JSONResponse:
        """Genres of an uploaded audio file (multipart form field `file`)."""
        with tempfile.TemporaryDirectory(prefix="genre_tf-serve-") as folder:
            upload = await receive_upload(request.headers, request.stream(), Path(folder), predictor.limits.max_bytes)
            # The body is plain JSON already (str, float, list, dict): sent as it is, not re-encoded by FastAPI.
            return JSONResponse(await run_in_threadpool(predictor.predict, upload, top_k))

    @app.get("/health")
    async def health() -> dict:
        return predictor.health()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (WEB_DIR / "index.html").read_text(encoding="utf-8")

    app.mount("/static", StaticFiles(directory=str(WEB_DIR)), name="static")
    return app
