"""A trained run served over HTTP (FastAPI on uvicorn): ``POST /predict`` an image, get its class-id
mask (PNG), its class shares (JSON), an overlay (PNG) or the model's per-pixel confidence (PNG); ``GET /``
a page to try it; ``/health`` and ``/info`` for whoever runs it.

Behaviour under load: requests that arrive together are predicted together, up to ``max_batch``
images after waiting at most ``max_wait_ms`` for company (one forward pass costs much less than
``max_batch`` single ones); at most ``max_queue`` requests wait, the next gets 503 at once instead of
memory growing. Uploads above ``max_upload_mb`` get 413, anything that does not decode as an image
400 with a one-line reason; none of these touches other requests. Binds to 127.0.0.1 unless told
otherwise; ``token`` requires ``Authorization: Bearer TOKEN`` on /info and /predict.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations (``Request``, imported
# inside create_app so that FastAPI stays optional) at definition time.
import asyncio
import hmac
import io
import json
import re
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..allocator import release_freed_memory
from ..classes import ClassSet
from ..data.decode import quiet_bomb_warnings, read_image_bytes
from ..data.problems import DataError
from ..device import precision_name
from ..rundir import weights_path
from .batch import class_shares, predict_batch
from .onnx_engine import file_digest
from .outputs import colorize, overlay
from .predictor import Predictor

FORMATS = ("mask", "json", "overlay", "color", "confidence")
# What the inference thread hands back for one image: its class ids, and its confidence where asked for.
Prediction = tuple[np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class ServeOptions:
    """Limits of the service; ``max_batch=1`` turns batching off."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    max_pixels: int = 4096 * 4096  # decoded size, whatever the upload's: a 100 KB PNG can hold 100 megapixels
    token: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.max_upload_mb <= 0:
            raise ValueError("max-wait-ms must be ≥ 0 and max-upload-mb > 0")


def require_serve():
    """FastAPI, or a ValueError that says how to install it."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (multipart uploads)
        import uvicorn  # noqa: F401
    except ImportError:
        raise ValueError('serving needs FastAPI, uvicorn and python-multipart: pip install "pixelwise[serve]"') from None


class Batcher:
    """Collects waiting images into batches for one inference thread; a full queue refuses at once."""

    def __init__(self, predict_many: Callable[[Sequence[np.ndarray], bool], list[Prediction]], options: ServeOptions):
        self.predict_many, self.options = predict_many, options
        self.queue: asyncio.Queue = asyncio.Queue(options.max_queue)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pixelwise-infer")  # one model, one caller
        self.batches = self.images = 0

    async def predict(self, image: np.ndarray, confidence: bool = False) -> Prediction:
        """The image's mask, with its confidence where asked for (else None); raises asyncio.QueueFull
        when ``max_queue`` requests already wait."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, confidence, future))
        return await future

    async def run(self) -> None:
        """Predict batches until cancelled. Each batch lives in the calls below only: a batch kept in a
        local here would hold its images and masks until the next request came."""
        while True:
            await self.answer(await self.collect())

    async def collect(self) -> list[tuple[np.ndarray, bool, asyncio.Future]]:
        """The next batch: the first image to come, then those that queued meanwhile or come within
        ``max_wait_ms``, up to ``max_batch``; the clients that left are dropped."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.options.max_wait_ms / 1000
        while len(batch) < self.options.max_batch:
            if not self.queue.empty():  # those that queued during the last batch go first, without waiting
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [item for item in batch if not item[2].done()]

    async def answer(self, batch: list[tuple[np.ndarray, bool, asyncio.Future]]) -> None:
        """Predict a batch on the inference thread and hand each client its mask (or the engine's error);
        the confidence is computed for the whole batch where any of its clients asked for it."""
        if not batch:
            return
        loop = asyncio.get_running_loop()
        confidence = any(wanted for _, wanted, _ in batch)
        try:
            predictions = await loop.run_in_executor(self.pool, self.predict_many, [image for image, _, _ in batch],
                                                     confidence)
        except Exception as exc:  # noqa: BLE001  (an engine failure fails this batch, not the server)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches, self.images = self.batches + 1, self.images + len(batch)
        for (_, _, future), prediction in zip(batch, predictions):
            if not future.done():
                future.set_result(prediction)


class Settle:
    """Counts the requests in flight and, once the last is answered, hands the memory they freed back to
    the kernel (``release``) on a worker thread: large images are decoded, predicted and encoded on
    several threads, and glibc keeps the blocks each thread's arena freed, so a burst of large images
    would leave the server holding its peak."""

    def __init__(self, release: Callable[[], object] = release_freed_memory):
        self.release, self.active = release, 0

    @asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Around one request: counted while in flight; the last one out calls ``release``."""
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            if self.active == 0:  # not awaited: the answer need not wait for it
                asyncio.get_running_loop().run_in_executor(None, self.release)


def fingerprint(predictor: Predictor) -> str:
    """The first 16 hex digits of the SHA-256 of the file the engine runs: which model answered."""
    path = predictor.model_file if predictor.engine == "onnx" else weights_path(predictor.run_dir, predictor.weights)
    return file_digest(path)[:16]


def model_info(predictor: Predictor, options: ServeOptions) -> dict:
    """What ``/info`` answers: the run, its engine and settings, classes and the server's limits."""
    classes = predictor.classes
    return {"run": predictor.run_dir.name, "engine": predictor.engine, "weights": predictor.weights,
            "precision": precision_name(predictor.dtype) if predictor.engine == "torch" else "onnx",
            "engine_choice": predictor.engine_note,
            "device": str(predictor.device), "training_size": list(predictor.config.data.size),
            "model": predictor.config.model.to_dict(), "fingerprint": fingerprint(predictor),
            "classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(classes.names, classes.colors))],
            "limits": {k: v for k, v in asdict(options).items() if k != "token"}}


class Refused(Exception):
    """A request the server answers with an HTTP error (``status``) and a one-line ``detail``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def authorize(headers: Mapping[str, str], token: str | None) -> None:
    """Nothing when no token is set or the request bears it; else Refused (401)."""
    if token is None:
        return
    given = headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Refused(401, "missing or wrong token: send Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})


async def read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``max_bytes``."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise Refused(413, f"upload is {int(declared):,} bytes, more than this server's limit of {max_bytes:,}")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise Refused(413, f"upload is more than this server's limit of {max_bytes:,} bytes")
    return bytes(body)


async def upload(headers: Mapping[str, str], body: bytes) -> tuple[bytes, str]:
    """The image bytes and name, from a raw body or the first file of a multipart form."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not headers.get("content-type", "").startswith("multipart/form-data"):
        return body, "upload"

    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(Headers(headers=dict(headers)), stream(), max_files=4, max_fields=16).parse()
    except MultiPartException as exc:
        raise Refused(400, f"unreadable multipart form ({exc.message})") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise Refused(400, "the multipart form holds no file; send the image as a file field")
    name = Path(files[0].filename or "upload").name or "upload"
    return await files[0].read(), name


def decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The uploaded image, refused (400) when its header announces more pixels than this server
    takes (``max_pixels``, or the decoder's own guard where that is lower) or when it cannot be read."""
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    try:
        with warnings.catch_warnings():
            quiet_bomb_warnings()
            with Image.open(io.BytesIO(data)) as im:  # the header only: refuse large images before decoding
                what = f"is {im.width} x {im.height} pixels"
                too_large = im.width * im.height > limit
    except Image.DecompressionBombError as exc:  # the decoder's guard refused it before handing over the header
        found = re.search(r"\((\d+) pixels\)", str(exc))
        what, too_large = (f"has {int(found.group(1)):,} pixels" if found else "is too large"), True
    except Exception:  # noqa: BLE001  (read_image_bytes names what is wrong)
        too_large = False
    if too_large:
        raise Refused(400, f"{name}: image {what}, more than this server's limit of {limit:,} pixels")
    try:
        return read_image_bytes(data, name)
    except DataError as exc:
        raise Refused(400, str(exc.problems[0])) from None


def encode(image: np.ndarray, prediction: Prediction, fmt: str, classes: ClassSet) -> tuple[bytes, str]:
    """The answer's bytes and media type: class shares as JSON, or the mask, colour mask, overlay or
    confidence (8-bit grey: the softmax probability of each pixel's class, 0-255) as PNG."""
    mask, confidence = prediction
    if fmt == "json":
        shares = class_shares(mask, len(classes))
        order = [int(i) for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
        answer = {"height": int(mask.shape[0]), "width": int(mask.shape[1]),
                  "shares": [{"id": i, "name": classes.names[i], "share": round(float(shares[i]), 6)} for i in order]}
        return json.dumps(answer).encode(), "application/json"
    picture = {"mask": lambda: mask, "color": lambda: colorize(mask, classes),
               "overlay": lambda: overlay(image, mask, classes), "confidence": lambda: confidence}[fmt]()
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)  # speed over a few bytes
    return buffer.getvalue(), "image/png"


async def answer(request, batcher: Batcher, options: ServeOptions, classes: ClassSet, fmt: str) -> tuple[bytes, str]:
    """One /predict request through its stages: token, body, image, a place in a batch, encoding."""
    authorize(request.headers, options.token)
    if fmt not in FORMATS:
        raise Refused(400, f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    body = await read_body(request.headers, request.stream(), int(options.max_upload_mb * 1024 * 1024))
    data, name = await upload(request.headers, body)
    image = await asyncio.to_thread(decode, data, name, options.max_pixels)
    try:
        prediction = await batcher.predict(image, confidence=fmt == "confidence")
    except asyncio.QueueFull:
        raise Refused(503, f"busy: {options.max_queue} requests already wait; retry shortly", {"Retry-After": "1"}) from None
    return await asyncio.to_thread(encode, image, prediction, fmt, classes)


def predictions(predictor: Predictor, images: Sequence[np.ndarray], confidence: bool) -> list[Prediction]:
    """Each image's ids in one forward pass, with its confidence where ``confidence`` (else None)."""
    if confidence:
        return predict_batch(predictor, images, confidence=True)
    return [(mask, None) for mask in predict_batch(predictor, images)]


def create_app(predictor: Predictor, options: ServeOptions = ServeOptions(),
               release: Callable[[], object] = release_freed_memory):
    """The FastAPI application serving ``predictor`` (``pw.load``'s object, with its engine and weights).

    Args:
        predictor: the loaded run.
        options: the server's limits and token.
        release: called (on a worker thread) whenever the last request in flight has been answered, to
            hand freed memory back to the kernel.

    Returns:
        The application.

    Raises:
        ValueError: FastAPI, uvicorn or python-multipart missing.
    """
    require_serve()
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, Response

    batcher = Batcher(lambda images, confidence: predictions(predictor, images, confidence), options)
    settle = Settle(release)
    info = model_info(predictor, options)
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="pixelwise", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "queued": batcher.queue.qsize(), "batches": batcher.batches, "images": batcher.images}

    @app.get("/info")
    async def get_info(request: Request) -> dict:
        authorize(request.headers, options.token)
        return info

    @app.post("/predict")
    async def post_predict(request: Request, format: str = "mask") -> Response:  # noqa: A002  (the query name)
        started = time.perf_counter()
        async with settle.request():
            content, media_type = await answer(request, batcher, options, predictor.classes, format)
        return Response(content, media_type=media_type,
                        headers={"X-Inference-Ms": f"{1000 * (time.perf_counter() - started):.1f}"})

    add_error_answers(app)
    return app


def add_error_answers(app) -> None:
    """Refusals and FastAPI's own HTTP errors answered as ``{"detail": one line}``."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def one_line(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail).splitlines()[0]}, status_code=exc.status_code,
                            headers=exc.headers)


def check_port(host: str, port: int) -> None:
    """A clear error now, not a log line later, when ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(predictor: Predictor, *, host: str = "127.0.0.1", port: int = 8000,
          options: ServeOptions = ServeOptions(), log: Callable[[str], None] = print) -> None:
    """Serve ``predictor`` (``pw.load``'s object: its engine, weights, precision) until interrupted.

    Args:
        predictor: the loaded run.
        host, port: where to listen (127.0.0.1 unless told otherwise).
        options: the server's limits and token.
        log: where the start-up lines go.

    Raises:
        ValueError: the port cannot be bound, or FastAPI is missing.
    """
    require_serve()
    import uvicorn

    check_port(host, port)
    app = create_app(predictor, options)
    # Requests beyond those the queue and a batch in progress can hold get uvicorn's own 503.
    limit = options.max_queue + 2 * options.max_batch + 16
    if host not in ("127.0.0.1", "localhost", "::1") and options.token is None:
        log(f"warning: serving on {host} without a token: anyone who can reach this machine can use the model")
    model = f"{predictor.engine} {predictor.model_file.name}" if predictor.model_file else predictor.engine
    log(f"serving {predictor.run_dir} ({model}, batches of up to {options.max_batch}, {options.max_wait_ms:g} ms "
        f"wait) on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, limit_concurrency=limit, log_level="warning", access_log=False)
