"""The web app of `dalip serve` (FastAPI): the page, the JSON API and the gallery's images.

Routes:
- `GET /`: the page (`page.html`, a single file with its own style and script);
- `GET /api/health`: 200 and what the server offers once the labels and gallery indexes are
  ready; 503 and a progress line while they are prepared; 500 if preparing failed;
- `POST /api/predict`, `/api/neighbours`, `/api/identify` (both, as the page asks):
  multipart forms with one or more file fields `image` (several: photos of one plant,
  answered together), an optional text field `labels` and, on a server with a taxonomy,
  optional fields `rank`, `subset` and `min_probability`;
- `GET /gallery/{path}`: a gallery image named in a neighbours answer (no other file).

A user's mistake is answered with a 4xx status and `{"error": message}`; the server keeps serving.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import unquote_to_bytes

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from dalip.readers import quoted
from dalip.serve.engine import GALLERY_ROUTE, Identifier
from dalip.serve.gallery import is_inside
from dalip.serve.taxa import TaxonQuery
from dalip.serve.uploads import (
    FIELDS,
    MEGABYTE,
    RequestError,
    human_size,
    parse_labels,
    parse_query,
    read_image,
)

logger = logging.getLogger(__name__)

FORM_OVERHEAD = 2 * MEGABYTE  # room for the labels and the multipart framing around the photo


def page_html() -> str:
    return resources.files("dalip.serve").joinpath("page.html").read_text(encoding="utf-8")


def create_app(identifier: Identifier) -> FastAPI:
    """The app; on start-up it prepares `identifier` in a background thread unless already ready."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.preparing = None
        if not identifier.ready:
            app.state.preparing = threading.Thread(
                target=_prepare, args=(identifier,), name="dalip-serve-prepare", daemon=True
            )
            app.state.preparing.start()
        yield

    app = FastAPI(title="dalip serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    gallery_paths = set(identifier.gallery.paths) if identifier.gallery else set()

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return page_html()

    @app.get("/api/health")
    def health() -> JSONResponse:
        if identifier.failure:
            return JSONResponse({"status": "failed", "error": identifier.failure}, status_code=500)
        if not identifier.ready:
            return JSONResponse({"status": "preparing", "progress": identifier.progress}, status_code=503)
        return JSONResponse({"status": "ready", **identifier.describe()})

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        result = await _answer(identifier, request, predictions=True, neighbours=False)
        answer = {key: result[key] for key in ("modes", "seconds", "labels", "photos")}
        if identifier.taxonomy is not None:
            answer["taxa"] = result["taxa"]
        return {"models": result["predictions"], **answer}

    @app.post("/api/neighbours")
    async def neighbours(request: Request) -> dict[str, Any]:
        result = await _answer(identifier, request, predictions=False, neighbours=True)
        by = {model.name: model.vector_kind for model in identifier.models}
        return {
            "models": result["neighbours"],
            "by": by,
            "seconds": result["seconds"],
            "photos": result["photos"],
        }

    @app.post("/api/identify")
    async def identify(request: Request) -> dict[str, Any]:
        return await _answer(identifier, request, predictions=True, neighbours=identifier.gallery is not None)

    @app.get(GALLERY_ROUTE + "{path:path}")
    def gallery_image(request: Request, path: str) -> FileResponse:
        path = _link_path(request, path)
        if path not in gallery_paths:  # before any file system call: a NUL, "..", a name too long
            raise RequestError(404, f"{quoted(path)}: not an image of the gallery")
        real = os.path.realpath(identifier.gallery.root / path)  # checked, then served: one resolution
        if not is_inside(identifier.gallery.root, real) or not os.path.isfile(real):  # a FIFO is never served
            raise RequestError(404, f"{quoted(path)}: not an image of the gallery")
        return FileResponse(real)

    return app


def _link_path(request: Request, decoded: str) -> str:
    """The gallery path of a `/gallery/...` link (`quote`d once by the engine), decoded once from
    the bytes sent: a server or test client that decodes twice would read `%2520` as a space."""
    raw = request.scope.get("raw_path") or b""
    if not raw.startswith(GALLERY_ROUTE.encode()):
        return decoded
    return unquote_to_bytes(raw[len(GALLERY_ROUTE) :]).decode("utf-8", errors="replace")


def _prepare(identifier: Identifier) -> None:
    try:
        identifier.prepare()
    except Exception as error:  # shown by /api/health and on the page; the server stays up
        logger.error("preparing failed: %s", error)
        identifier.failure = str(error)


async def _answer(
    identifier: Identifier, request: Request, predictions: bool, neighbours: bool
) -> dict[str, Any]:
    if identifier.failure:
        raise RequestError(503, f"the server could not prepare: {identifier.failure}")
    if not identifier.ready:
        raise RequestError(503, f"the server is still preparing ({identifier.progress}); try again shortly")
    images, labels, query = await _read_form(identifier, request)
    try:
        result = await run_in_threadpool(identifier.identify, images, labels, predictions, neighbours, query)
    except ValueError as error:
        raise RequestError(400, str(error)) from error
    except LookupError as error:
        raise RequestError(404, str(error)) from error
    return result


async def _read_form(
    identifier: Identifier, request: Request
) -> tuple[list[Image.Image], list[str] | None, TaxonQuery]:
    """The decoded photos, the labels (None: the server's) and the taxon options of a multipart request."""
    limit, photos = identifier.options.max_upload_bytes, identifier.options.max_photos
    cap = limit * photos + FORM_OVERHEAD
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise RequestError(
            413,
            f"the upload is {human_size(int(length))}; the limit is {human_size(limit)} a photo "
            f"(dalip serve --max-upload-mb), {photos} photos at most (--max-photos)",
        )
    if not length.isdigit():  # a chunked body: read it with the cap, then parse it from memory
        request = await _capped_request(request, limit, cap)
    try:
        form = await request.form(max_files=photos, max_fields=len(FIELDS) + 2)
    except HTTPException as error:
        if "files" in str(error.detail).lower():
            raise RequestError(
                400, f"at most {photos} photos in one request (dalip serve --max-photos)"
            ) from error
        raise RequestError(400, f"could not read the form: {error.detail}") from error
    uploads = form.getlist("image")
    if not uploads or any(isinstance(upload, str) for upload in uploads):
        raise RequestError(400, "no photo: send it as a file field named 'image' (multipart/form-data)")
    fields = {name: form.get(name) for name in FIELDS}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise RequestError(400, f"'{name}' must be a text field, not a file")
    images = []
    for upload in uploads:
        data = await upload.read()
        images.append(await run_in_threadpool(read_image, data, upload.filename or "image", limit))
    labels = parse_labels(fields["labels"], identifier.options.max_labels)
    return images, labels, parse_query(fields)


async def _capped_request(request: Request, limit: int, cap: int) -> Request:
    """The request with its body read into memory, refused (413) as soon as it passes `cap`
    bytes: the form parser would otherwise spool all of it."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise RequestError(
                413,
                f"the upload is over {human_size(cap)}; the limit is {human_size(limit)} "
                f"(dalip serve --max-upload-mb)",
            )
        chunks.append(chunk)
    body = b"".join(chunks)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, replay)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one); ValueError names the flags when that fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as error:
        sock.close()
        reason = getattr(error, "strerror", None) or str(error)
        raise ValueError(
            f"--host {host} --port {port}: cannot listen there ({reason}); choose another --port"
        ) from error
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(app: FastAPI, sock: socket.socket) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
