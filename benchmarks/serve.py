"""The server under load: requests/s and latency percentiles at 1, 4 and 16 concurrent clients, with
batching (``--max-batch 8``) and without (``--max-batch 1``); then an optional soak under 16 clients
sampling the server's memory; or, with ``--burst N``, the server's memory around N large images posted
at once.

    .venv/bin/python benchmarks/serve.py [--data ../shared/carla] [--seconds 15] [--soak 180] [--engine torch|onnx|auto]
    .venv/bin/python benchmarks/serve.py --burst 4 [--side 4096] [--rounds 3]

The server runs as ``pixelwise serve`` in its own process on 127.0.0.1 with the assignment's U-Net
(untrained: speed does not depend on the weights); clients are threads of this process, each with its
own HTTP connection, posting one 640x480 CARLA frame (PNG) and reading the mask PNG back. Clients and
server share this machine's cores, so on a small machine the clients' own work lowers the figures.

The burst serves benchmarks/predict_memory.py's narrow 48x64 run (what matters is the images) and posts
``N`` side x side PNGs at once, ``--rounds`` times; it prints the server's resident memory (VmRSS) before,
its high-water mark (VmHWM) after each round, and VmRSS 5 s after each round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dataclasses import replace

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video import cpu_name, make_run  # noqa: E402

from pixelwise.inference.export import export  # noqa: E402
from pixelwise.recipes import recipe  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(run: Path, max_batch: int, max_wait_ms: float, engine: str = "torch") -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pixelwise", "serve", str(run), "--port", str(port),
                                "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-queue", "256",
                                "--engine", engine], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # auto exports the run on its first load: tens of seconds
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def load(url: str, body: bytes, clients: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (s) of the requests that completed within ``seconds``, and the number of failures."""
    latencies: list[float] = []
    failures = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = session.post(f"{url}/predict", content=body, headers={"content-type": "image/png"})
                took = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(took)
                    else:
                        failures[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures[0]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def large_png(side: int) -> bytes:
    """A side x side PNG that compresses well (an upload under the server's 20 MB limit): smooth gradients
    and bands, different in every row and column."""
    import io

    import numpy as np
    from PIL import Image

    rows, cols = np.indices((side, side), dtype=np.uint32)
    image = np.stack([(rows * 255 // side), (cols * 255 // side), ((rows // 64 + cols // 64) % 2) * 200], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def burst(images: int, side: int, rounds: int) -> None:
    """The server's memory before, at the peak of and 5 s after ``images`` side x side PNGs posted at once."""
    from predict_memory import make_run as narrow_run

    body = large_png(side)
    print(f"CPU: {cpu_name()}; {images} concurrent {side}x{side} PNGs of {len(body) / 2**20:.1f} MiB, {rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start(narrow_run(Path(tmp) / "run", 16), max_batch=8, max_wait_ms=5.0)
        try:
            print(f"server VmRSS before: {rss_mib(process.pid):.0f} MiB")
            for round_ in range(1, rounds + 1):
                answers: list[int] = []

                def client() -> None:
                    with httpx.Client(timeout=600) as session:
                        answers.append(session.post(f"{url}/predict?format=json", content=body,
                                                    headers={"content-type": "image/png"}).status_code)

                threads = [threading.Thread(target=client) for _ in range(images)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                peak = rss_mib(process.pid, "VmHWM")
                time.sleep(5)
                print(f"round {round_}: answers {sorted(answers)}; peak (VmHWM) {peak:.0f} MiB, "
                      f"VmRSS 5 s after {rss_mib(process.pid):.0f} MiB", flush=True)
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "carla")
    parser.add_argument("--seconds", type=float, default=15.0, help="load per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--size", default="96x128", help="the model's input HEIGHTxWIDTH")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of 16-client load, memory sampled")
    parser.add_argument("--burst", type=int, default=0, help="instead: this many large images posted at once")
    parser.add_argument("--side", type=int, default=4096, help="the burst's image side")
    parser.add_argument("--rounds", type=int, default=3, help="how many bursts")
    parser.add_argument("--engine", choices=("torch", "onnx", "auto"), default="torch",
                        help="the server's engine (default: torch, as the tables in docs/serving.md were measured)")
    args = parser.parse_args()
    if args.burst:
        burst(args.burst, args.side, args.rounds)
        return
    source = args.data / "CameraRGB"
    if not source.is_dir():
        print(f"skipped: {source} not found (the CARLA frames)")
        return
    body = sorted(source.iterdir())[0].read_bytes()
    print(f"CPU: {cpu_name()}; {os.cpu_count()} logical CPUs shared by server and clients")
    print(f"each request: a {len(body) / 1024:.0f} KB 640x480 PNG in, the mask PNG out; {args.seconds:g} s per row")
    with tempfile.TemporaryDirectory() as tmp:
        seed = recipe("seed")  # the assignment's U-Net, at --size
        size = tuple(int(v) for v in args.size.split("x"))
        run = make_run(Path(tmp) / "run", replace(seed, data=replace(seed.data, size=size)))
        if args.engine == "onnx":
            export(run)
        print(f"{'batching':<22}{'clients':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for label, max_batch, wait in (("off (--max-batch 1)", 1, 0.0), ("on (8, 5 ms)", 8, 5.0)):
            process, url = start(run, max_batch, wait, args.engine)
            try:
                load(url, body, 2, 3)  # warm-up
                for clients in args.clients:
                    latencies, failures = load(url, body, clients, args.seconds)
                    ms = [1000 * v for v in latencies]
                    print(f"{label:<22}{clients:>8}{len(ms) / args.seconds:>8.1f}{percentile(ms, 50):>9.0f}"
                          f"{percentile(ms, 95):>9.0f}{percentile(ms, 99):>9.0f}{failures:>8}", flush=True)
                if args.soak and max_batch > 1:
                    samples = [rss_mib(process.pid)]
                    done = threading.Event()

                    def sample() -> None:
                        while not done.wait(5):
                            samples.append(rss_mib(process.pid))

                    sampler = threading.Thread(target=sample)
                    sampler.start()
                    latencies, failures = load(url, body, 16, args.soak)
                    done.set()
                    sampler.join()
                    samples.append(rss_mib(process.pid))
                    first_half = samples[: len(samples) // 2]
                    print(f"soak: {len(latencies)} requests in {args.soak:g} s under 16 clients, {failures} errors; "
                          f"server RSS {samples[0]:.0f} MiB at start, max {max(first_half):.0f} MiB in the first half, "
                          f"max {max(samples):.0f} MiB overall, {samples[-1]:.0f} MiB at the end")
            finally:
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main()
