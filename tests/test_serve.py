"""The HTTP server, started for real on a free loopback port and called with a real HTTP client:
masks identical to Predictor's, every error code, 16 concurrent clients, a full queue, the page in a
real headless browser."""

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from browser import CHROMIUM, DevTools
from conftest import small_run
from PIL import Image

from pixelwise.data.decode import read_image
from pixelwise.data.pairs import IMAGE_DIR
from pixelwise.inference.predictor import Predictor

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
from pixelwise.inference.serve import ServeOptions, create_app  # noqa: E402


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("serve") / "run", epochs=1)


@pytest.fixture(scope="module")
def images(scenes):
    return sorted((scenes / IMAGE_DIR).iterdir())[:16]


@contextmanager
def serving(predictor, **options):
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(predictor, ServeOptions(**options))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(run):
    with serving(Predictor(run), max_batch=8, max_wait_ms=10, max_upload_mb=0.25, max_pixels=1_000_000) as url:
        yield url


def png_bytes(array, **save):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def mask_of(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_mask_is_predictors_for_raw_and_multipart_uploads(run, server, images):
    expected = Predictor(run).predict(read_image(images[0]))
    raw = httpx.post(f"{server}/predict", content=images[0].read_bytes(), headers={"content-type": "image/png"})
    assert np.array_equal(mask_of(raw), expected)
    form = httpx.post(f"{server}/predict", files={"file": (images[0].name, images[0].read_bytes(), "image/png")})
    assert np.array_equal(mask_of(form), expected)


def test_json_overlay_and_colour_formats(run, server, images):
    image = read_image(images[1])
    expected = Predictor(run).predict(image)
    shares = httpx.post(f"{server}/predict?format=json", content=images[1].read_bytes()).json()
    assert (shares["height"], shares["width"]) == image.shape[:2]
    assert abs(sum(s["share"] for s in shares["shares"]) - 1) < 1e-4
    counts = np.bincount(expected.ravel(), minlength=23)
    assert {s["id"] for s in shares["shares"]} == set(np.flatnonzero(counts))
    overlay = mask_of(httpx.post(f"{server}/predict?format=overlay", content=images[1].read_bytes()))
    color = mask_of(httpx.post(f"{server}/predict?format=color", content=images[1].read_bytes()))
    assert overlay.shape == color.shape == (*image.shape[:2], 3)


def test_confidence_format_is_the_predictors_confidence_also_when_batched_with_masks(run, server, images):
    image = read_image(images[2])
    ids, expected = Predictor(run).predict(image, confidence=True)
    sure = mask_of(httpx.post(f"{server}/predict?format=confidence", content=images[2].read_bytes()))
    assert sure.dtype == np.uint8 and sure.shape == image.shape[:2]
    assert np.abs(sure.astype(int) - expected).max() <= 1  # batched logits: float rounding only
    with ThreadPoolExecutor(4) as pool:  # masks and confidences asked together share batches
        answers = list(pool.map(lambda fmt: httpx.post(f"{server}/predict?format={fmt}", content=images[2].read_bytes(),
                                                       timeout=60), ["mask", "confidence"] * 2))
    assert all(np.array_equal(mask_of(a), ids) for a in answers[::2])
    assert all(np.abs(mask_of(a).astype(int) - expected).max() <= 1 for a in answers[1::2])


def test_health_and_info(server):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    info = httpx.get(f"{server}/info").json()
    assert len(info["classes"]) == 23 and info["classes"][7] == {"id": 7, "name": "Road", "color": [128, 64, 128]}
    assert info["training_size"] == [48, 64] and info["engine"] == "torch" and len(info["fingerprint"]) == 16
    assert "token" not in info["limits"]


def test_bad_uploads_get_one_line_reasons_and_the_server_carries_on(server, images):
    good = images[0].read_bytes()
    cases = {
        "not an image": (b"hello, this is text", 400, "not an image file"),
        "truncated PNG": (good[: len(good) // 2], 400, "truncated"),
        "empty": (b"", 400, "empty file"),
        "bomb": (png_bytes(np.zeros((1200, 1000), np.uint8)), 400, "1000 x 1200 pixels, more than this server's limit"),
        "oversize": (os.urandom(300_000), 413, "limit of 262,144"),
    }
    for name, (body, status, reason) in cases.items():
        response = httpx.post(f"{server}/predict", content=body)
        assert response.status_code == status, name
        detail = response.json()["detail"]
        assert reason in detail and "\n" not in detail, (name, detail)
    assert httpx.post(f"{server}/predict?format=svg", content=good).status_code == 400
    assert httpx.post(f"{server}/predict", files={"other": (None, "no file here")}).status_code == 400
    assert httpx.post(f"{server}/predict", content=good).status_code == 200  # unharmed


def test_chunked_upload_over_the_limit_gets_413(server):
    def chunks():
        for _ in range(40):
            yield b"\0" * 10_000

    response = httpx.post(f"{server}/predict", content=chunks())
    assert response.status_code == 413


def test_sixteen_concurrent_clients_all_get_their_own_mask(run, server, images):
    predictor = Predictor(run)
    expected = [predictor.predict(read_image(p)) for p in images]
    before = httpx.get(f"{server}/health").json()

    def call(i):
        with httpx.Client(timeout=60) as client:
            return mask_of(client.post(f"{server}/predict", content=images[i].read_bytes()))

    with ThreadPoolExecutor(16) as pool:
        masks = list(pool.map(call, range(16)))
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected))
    after = httpx.get(f"{server}/health").json()
    assert after["images"] - before["images"] == 16
    assert after["batches"] - before["batches"] < 16  # some requests shared a forward pass


def test_token_is_required_when_set(run, images):
    with serving(Predictor(run), token="s3cret") as url:
        body = images[0].read_bytes()
        assert httpx.post(f"{url}/predict", content=body).status_code == 401
        assert httpx.post(f"{url}/predict", content=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/info").status_code == 401
        ok = httpx.post(f"{url}/predict", content=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(url).status_code == 200


def test_full_queue_answers_503_at_once(run, images):
    predictor = Predictor(run)
    release, entered = threading.Event(), threading.Event()
    forward = predictor._forward

    def held(x):  # the first batch holds the engine until released
        entered.set()
        release.wait(30)
        return forward(x)

    predictor._forward = held
    body = images[0].read_bytes()
    with serving(predictor, max_batch=1, max_wait_ms=0, max_queue=1) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{url}/predict", content=body, timeout=60)
        assert entered.wait(30)
        second = pool.submit(httpx.post, f"{url}/predict", content=body, timeout=60)
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["queued"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        third = httpx.post(f"{url}/predict", content=body, timeout=60)
        assert third.status_code == 503 and time.monotonic() - started < 5
        assert third.headers["retry-after"] == "1" and "busy" in third.json()["detail"]
        release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200


def test_cli_refuses_a_port_in_use(run, capsys):
    from pixelwise.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = main(["serve", str(run), "--port", str(taken.getsockname()[1])])
    assert code == 1 and "cannot listen on 127.0.0.1" in capsys.readouterr().err


def status_mib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_server_memory_settles_after_a_burst_of_large_images(run, images):
    """Four 4096x4096 images at once, then nothing: the server hands back what the burst freed instead of
    keeping its peak (it kept 330-520 MiB over its resting memory before; now 30-60, docs/benchmarks.md).
    The memory is polled until it settles, with a long timeout: how fast it settles is not the point."""
    side = 4096
    rows, cols = np.indices((side, side), dtype=np.uint32)
    pixels = np.stack([rows * 255 // side, cols * 255 // side, (rows // 64 + cols // 64) % 2 * 200], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "pixelwise", "serve", str(run), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.post(f"{url}/predict", content=images[0].read_bytes(), timeout=60).raise_for_status()
                break  # up, and warmed up by one small image
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        resting = status_mib(server.pid, "VmRSS")

        def post(_):
            return httpx.post(f"{url}/predict?format=json", content=buffer.getvalue(), timeout=600).status_code

        with ThreadPoolExecutor(4) as clients:
            assert list(clients.map(post, range(4))) == [200] * 4
        assert status_mib(server.pid, "VmHWM") > resting + 300  # the burst did need the memory
        deadline = time.monotonic() + 120
        while (now := status_mib(server.pid, "VmRSS")) > resting + 200:
            assert time.monotonic() < deadline, f"server memory {now:.0f} MiB after the burst, {resting:.0f} before"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(30)


# --- the page, in a real headless browser (Debian's chromium), driven over the DevTools pipe --------------

@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_page_in_a_headless_browser(run, server, images, tmp_path):
    browser = DevTools(f"{server}/", tmp_path / "profile")
    try:
        browser.attach()
        browser.wait_for("document.getElementById('meta').textContent.includes('classes')")
        image = os.environ.get("PIXELWISE_PAGE_IMAGE") or str(images[3])
        root = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=node, files=[image])
        browser.wait_for("document.querySelectorAll('#legend tr.class').length > 0")
        assert "ms" in browser.evaluate("document.getElementById('status').textContent")
        assert browser.evaluate("document.getElementById('mask').width") == read_image(image).shape[1]
        listed = browser.evaluate("[...document.querySelectorAll('#legend tr.class')].map(r => r.cells[1].textContent)")
        shares = httpx.post(f"{server}/predict?format=json", content=open(image, "rb").read()).json()["shares"]
        assert listed == [s["name"] for s in shares]  # the same classes, most pixels first
        # A colour mask was drawn: its pixels are class colours, not the blank canvas.
        colours = browser.evaluate("(() => { const c = document.getElementById('mask'); const d = c.getContext('2d')"
                                   ".getImageData(0, 0, c.width, c.height).data; return [d[0], d[1], d[2], d[3]]; })()")
        assert colours[3] == 255
        # The confidence toggle predicts again and shows the confidence beside the overlay, grey 0-255.
        browser.evaluate("document.getElementById('show-confidence').click()")
        browser.wait_for("document.getElementById('panels').classList.contains('confidence')")
        shown = browser.evaluate("(() => { const c = document.getElementById('confidence'); return [c.width, "
                                 "c.getBoundingClientRect().width > 0]; })()")
        assert shown == [read_image(image).shape[1], True]
        shot = browser.send("Page.captureScreenshot", format="png")["data"]
        import base64

        (tmp_path / "serve_page.png").write_bytes(base64.b64decode(shot))
        if os.environ.get("PIXELWISE_SCREENSHOT"):
            shutil.copy(tmp_path / "serve_page.png", os.environ["PIXELWISE_SCREENSHOT"])
    finally:
        browser.close()


def test_onnx_model_choice_is_the_model_that_answers(run, scenes, tmp_path):
    pytest.importorskip("onnxruntime")
    import hashlib

    from pixelwise.inference.export import export
    from pixelwise.inference.serve import fingerprint

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    export(copy, int8=[scenes / IMAGE_DIR], calibration_count=2)
    for choice, file in ((None, "model.int8.onnx"), ("int8", "model.int8.onnx"), ("fp32", "model.onnx")):
        predictor = Predictor(copy, engine="onnx", onnx_model=choice)
        expected = hashlib.sha256((copy / file).read_bytes()).hexdigest()[:16]
        assert predictor.model_file.name == file and fingerprint(predictor) == expected
