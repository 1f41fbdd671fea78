"""A trained run served over HTTP (FastAPI on uvicorn): ``POST /predict`` an image, get its class-id
mask (PNG), its class shares (JSON) or an overlay (PNG); ``GET /`` a page to try it; ``/health`` and
``/info`` for whoever runs it.

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
import hashlib
import hmac
import io
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.decode import read_image_bytes
from ..data.problems import DataError
from ..device import precision_name
from ..rundir import WEIGHTS
from .batch import class_shares, predict_batch
from .outputs import colorize, overlay
from .predictor import Predictor

FORMATS = ("mask", "json", "overlay", "color")


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

    def __init__(self, predict_many: Callable[[Sequence[np.ndarray]], list[np.ndarray]], options: ServeOptions):
        self.predict_many, self.options = predict_many, options
        self.queue: asyncio.Queue = asyncio.Queue(options.max_queue)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pixelwise-infer")  # one model, one caller
        self.batches = self.images = 0

    async def predict(self, image: np.ndarray) -> np.ndarray:
        """The image's mask; raises asyncio.QueueFull when ``max_queue`` requests already wait."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.options.max_wait_ms / 1000
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + wait
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
            batch = [(image, future) for image, future in batch if not future.done()]  # clients that left
            if not batch:
                continue
            try:
                masks = await loop.run_in_executor(self.pool, self.predict_many, [image for image, _ in batch])
            except Exception as exc:  # noqa: BLE001  (an engine failure fails this batch, not the server)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches, self.images = self.batches + 1, self.images + len(batch)
            for (_, future), mask in zip(batch, masks):
                if not future.done():
                    future.set_result(mask)


def fingerprint(predictor: Predictor, engine: str, weights: str) -> str:
    """The first 16 hex digits of the SHA-256 of the file the engine runs: which model answered."""
    path = predictor.model_file if engine == "onnx" else predictor.run_dir / WEIGHTS[weights]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def create_app(predictor: Predictor, options: ServeOptions = ServeOptions(), *, engine: str = "torch",
               weights: str = "best"):
    """The FastAPI application serving ``predictor``."""
    require_serve()
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.formparsers import MultiPartException, MultiPartParser

    batcher = Batcher(lambda images: predict_batch(predictor, images), options)
    classes = predictor.classes
    info = {"run": predictor.run_dir.name, "engine": engine, "weights": weights,
            "precision": precision_name(predictor.dtype) if engine == "torch" else "onnx",
            "device": str(predictor.device), "training_size": list(predictor.config.data.size),
            "model": predictor.config.model.to_dict(), "fingerprint": fingerprint(predictor, engine, weights),
            "classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(classes.names, classes.colors))],
            "limits": {k: v for k, v in asdict(options).items() if k != "token"}}
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    max_bytes = int(options.max_upload_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="pixelwise", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    def authorize(request: Request) -> None:
        if options.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {options.token}".encode()):
            raise HTTPException(401, "missing or wrong token: send Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise HTTPException(413, f"upload is {int(declared):,} bytes, more than this server's limit of {max_bytes:,}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise HTTPException(413, f"upload is more than this server's limit of {max_bytes:,} bytes")
        return bytes(body)

    async def upload(request: Request) -> tuple[bytes, str]:
        """The image bytes and name, from a raw body or the first file of a multipart form."""
        body = await read_body(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return body, "upload"

        async def stream() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=4, max_fields=16).parse()
        except MultiPartException as exc:
            raise HTTPException(400, f"unreadable multipart form ({exc.message})") from None
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(400, "the multipart form holds no file; send the image as a file field")
        name = Path(files[0].filename or "upload").name or "upload"
        return await files[0].read(), name

    def decode(data: bytes, name: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data)) as im:  # the header only: refuse large images before decoding
                if im.width * im.height > options.max_pixels:
                    raise HTTPException(400, f"{name}: image is {im.width} x {im.height} pixels, more than this "
                                             f"server's limit of {options.max_pixels:,} pixels")
        except HTTPException:
            raise
        except Exception:  # noqa: BLE001  (read_image_bytes names what is wrong)
            pass
        try:
            return read_image_bytes(data, name)
        except DataError as exc:
            raise HTTPException(400, str(exc.problems[0])) from None

    def encode(image: np.ndarray, mask: np.ndarray, fmt: str) -> Response:
        if fmt == "json":
            shares = class_shares(mask, len(classes))
            order = [int(i) for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
            return JSONResponse({"height": int(mask.shape[0]), "width": int(mask.shape[1]),
                                 "shares": [{"id": i, "name": classes.names[i], "share": round(float(shares[i]), 6)}
                                            for i in order]})
        picture = {"mask": lambda: mask, "color": lambda: colorize(mask, classes),
                   "overlay": lambda: overlay(image, mask, classes)}[fmt]()
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)  # speed over a few bytes
        return Response(buffer.getvalue(), media_type="image/png")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "queued": batcher.queue.qsize(), "batches": batcher.batches, "images": batcher.images}

    @app.get("/info")
    async def get_info(request: Request) -> dict:
        authorize(request)
        return info

    @app.post("/predict")
    async def post_predict(request: Request, format: str = "mask") -> Response:  # noqa: A002  (the query name)
        authorize(request)
        if format not in FORMATS:
            raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        started = time.perf_counter()
        data, name = await upload(request)
        image = await asyncio.to_thread(decode, data, name)
        try:
            mask = await batcher.predict(image)
        except asyncio.QueueFull:
            raise HTTPException(503, f"busy: {options.max_queue} requests already wait; retry shortly",
                                headers={"Retry-After": "1"}) from None
        response = await asyncio.to_thread(encode, image, mask, format)
        response.headers["X-Inference-Ms"] = f"{1000 * (time.perf_counter() - started):.1f}"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def one_line(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail).splitlines()[0]}, status_code=exc.status_code,
                            headers=exc.headers)

    return app


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          weights: str = "best", onnx_model: str | None = None, precision: str = "auto",
          options: ServeOptions = ServeOptions(), log: Callable[[str], None] = print) -> None:
    """Serve the run until interrupted (``onnx_model``: "fp32" or "int8", and ``precision``, as for ``Predictor``)."""
    require_serve()
    import uvicorn

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # a clear error, not a log line
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    predictor = Predictor(run_dir, weights=weights, engine=engine, onnx_model=onnx_model, precision=precision)
    app = create_app(predictor, options, engine=engine, weights=weights)
    # Requests beyond those the queue and a batch in progress can hold get uvicorn's own 503.
    limit = options.max_queue + 2 * options.max_batch + 16
    if host not in ("127.0.0.1", "localhost", "::1") and options.token is None:
        log(f"warning: serving on {host} without --token: anyone who can reach this machine can use the model")
    model = f"{engine} {predictor.model_file.name}" if predictor.model_file else engine
    log(f"serving {run_dir} ({model}, batches of up to {options.max_batch}, {options.max_wait_ms:g} ms wait) "
        f"on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, limit_concurrency=limit, log_level="warning", access_log=False)
