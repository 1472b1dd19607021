"""An upload as the service receives it: its multipart body streamed to a file within the size limit, checked before
any model work, and the limits that bound it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from genre_tf.features import audio

MB = 1_000_000


FORM_OVERHEAD = 64 * 1024  # room for the multipart boundaries and part headers around the file itself


FILE_FIELD = b"file"


@dataclass(frozen=True)
class Limits:
    """What one request may cost: upload size, audio length, and how many uploads are analysed at once."""

    max_bytes: int = 50 * MB
    max_seconds: float = 600.0
    workers: int = 0  # 0: one per core and one more (`analysing`)

    @property
    def analysing(self) -> int:
        """Uploads decoded and cut at once. By default one per core and one more, so the cores stay busy while a
        request waits for the GIL or its file (bench/serve.py, 50 uploads at once, demo CNN, 2 cores: 54.4 against
        51.5 clips/s at --workers 2); more would hold more audio in memory."""
        return self.workers or (os.cpu_count() or 1) + 1


class BadInput(Exception):
    """A request refused with an HTTP status and a one-line reason for a person."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Upload:
    """The uploaded file as stored: a fixed name in the request's folder, and the client's name, for display only."""

    path: Path
    name: str
    size: int


def upload_suffix(client_name: str) -> str:
    """The one part of a client's file name that is kept: its audio extension, lower-cased; BadInput otherwise."""
    name = PurePosixPath(client_name.replace("\\", "/")).name  # a Windows path's last part too
    try:
        audio.check_extension(name)
    except audio.AudioError as err:
        raise BadInput(415, str(err)) from None
    return PurePosixPath(name).suffix.lower()


class FileField:
    """python-multipart callbacks that write the form field `file` to `folder`, refusing it past `max_bytes`."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.upload: Upload | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._out = None

    def callbacks(self) -> dict:
        events = ["part_begin", "header_field", "header_value", "header_end", "headers_finished"]
        return {f"on_{event}": getattr(self, f"on_{event}") for event in [*events, "part_data", "part_end"]}

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        if options.get(b"name") != FILE_FIELD or self.upload is not None:
            return  # other fields, and a second file, are not read
        name = options.get(b"filename", b"").decode("utf-8", "replace")
        self.upload = Upload(self.folder / f"upload{upload_suffix(name)}", name, 0)
        self._out = self.upload.path.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._out is None:
            return
        self.upload.size += end - start
        if self.upload.size > self.max_bytes:
            raise BadInput(413, f"file over the upload limit ({self.max_bytes / MB:g} MB)")
        self._out.write(data[start:end])

    def on_part_end(self) -> None:
        self.close()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_upload(
    headers: Mapping[str, str], chunks: AsyncIterator[bytes], folder: Path, max_bytes: int
) -> Upload:
    """Stream a multipart body's field `file` into `folder` chunk by chunk, refused as soon as it is too large."""
    kind, options = parse_options_header(headers.get("content-type"))
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise BadInput(415, "expected a multipart/form-data upload with the audio in the field 'file'")
    body_limit = max_bytes + FORM_OVERHEAD
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > body_limit:  # refused before a byte of the body is read
        raise BadInput(413, f"file over the upload limit ({max_bytes / MB:g} MB)")
    field = FileField(folder, max_bytes)
    parser = MultipartParser(options[b"boundary"], field.callbacks())
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > body_limit:  # other fields count too, so no part of the body streams without end
                raise BadInput(413, f"file over the upload limit ({max_bytes / MB:g} MB)")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as err:
        raise BadInput(400, f"malformed multipart body: {err}") from None
    finally:
        field.close()
    if field.upload is None:
        raise BadInput(422, "no file: send the audio as the multipart form field 'file'")
    return field.upload


def checked_duration(path: Path, limits: Limits) -> float:
    """Seconds of audio in the file, from its header; BadInput when it cannot be opened or is over the limit."""
    try:
        seconds = audio.track_seconds(path)
    except audio.AudioError as err:
        raise BadInput(422, str(err)) from None
    if seconds > limits.max_seconds:
        raise BadInput(413, f"too long ({seconds:.2f} s > the limit of {limits.max_seconds:g} s)")
    return seconds
