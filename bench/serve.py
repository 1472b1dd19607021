"""Benchmark: the HTTP service under load, as a client sees it.

Starts `python -m genre_tf.serve` on 127.0.0.1 (a free port) with a run, then
1. sends `--concurrent` uploads of one demo clip at once: how many are answered, and the latency p50 / p95;
2. sends `--requests` more, `--clients` at a time, sampling the server's resident memory (RSS) every
   `--sample-every` requests: start / end / max, which stay flat when nothing accumulates per request;
and checks that no request's temporary folder is left behind. Every request has a timeout and the whole run a
deadline, so a stuck server ends the benchmark instead of hanging it.

    .venv/bin/python bench/serve.py --run saved_models/demo_cnn   # make demo first
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from genre_tf.demo import generate_demo

REPO = Path(__file__).resolve().parent.parent
BOUNDARY = "genre-tf-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(path: Path) -> bytes:
    """A form with the file as its field `file`."""
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'
    return head.encode() + path.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()


def post(url: str, body: bytes, timeout: float) -> tuple[int, float]:
    """(HTTP status, or 0 for no answer; seconds until the whole answer was read)."""
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            json.load(response)
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (OSError, ValueError):
        status = 0
    return status, time.perf_counter() - started


def start_server(run: Path, port: int, log: Path, deadline: float) -> subprocess.Popen:
    """The service in a process of its own, logging to a file (a pipe nobody reads would fill), once /health answers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "genre_tf.serve", "--run", str(run), "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"error: the server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("error: the server did not answer /health in time")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def burst(url: str, body: bytes, n: int, timeout: float) -> None:
    """n uploads at once: answered count and latency percentiles."""
    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: post(url, body, timeout), range(n)))
    wall = time.perf_counter() - started
    answered = [seconds for status, seconds in results if status == 200]
    print(f"{n} concurrent uploads: {len(answered)} answered 200 in {wall:.1f} s ({n / wall:.1f} requests/s)")
    if answered:
        p50, p95 = percentile(answered, 50), percentile(answered, 95)
        print(f"  latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(answered):.2f} s")
    others = sorted({status for status, _ in results if status != 200})
    if others:
        print(f"  other answers: {others} (0: none)")


def memory_over(url: str, body: bytes, server: psutil.Process, args: argparse.Namespace, deadline: float) -> None:
    """args.requests uploads, args.clients at a time, the server's RSS sampled every args.sample_every."""
    samples = [server.memory_info().rss]
    ok = sent = 0
    latencies = []
    with ThreadPoolExecutor(args.clients) as pool:
        while sent < args.requests and time.monotonic() < deadline:
            batch = min(args.sample_every, args.requests - sent)
            results = list(pool.map(lambda _: post(url, body, args.timeout), range(batch)))
            sent += batch
            ok += sum(status == 200 for status, _ in results)
            latencies += [seconds for status, seconds in results if status == 200]
            samples.append(server.memory_info().rss)
    mib = [rss / 2**20 for rss in samples]
    timing = f"; latency p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s"
    print(f"{sent} uploads, {args.clients} at a time: {ok} answered 200" + (timing if latencies else ""))
    print(f"  server RSS (MiB): start {mib[0]:.0f}, end {mib[-1]:.0f}, max {max(mib):.0f}")
    print(f"  every {args.sample_every} requests: " + " ".join(f"{m:.0f}" for m in mib))
    if sent < args.requests:
        print(f"  stopped at the deadline after {sent} of {args.requests} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "saved_models" / "demo_cnn")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the demo clip uploaded")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4, help="uploads in flight during the memory phase")
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds the whole benchmark may take")
    args = parser.parse_args()
    if not (args.run / "model.keras").is_file():
        raise SystemExit(f"error: {args.run} has no model.keras (make demo creates saved_models/demo_cnn)")
    deadline = time.monotonic() + args.deadline
    with tempfile.TemporaryDirectory() as tmp:
        clip = generate_demo(Path(tmp), 1, args.seconds)[-1]
        body = multipart(clip)
        port = free_port()
        leftovers_before = set(Path(tempfile.gettempdir()).glob("genre_tf-serve-*"))
        server = start_server(args.run, port, Path(tmp) / "server.log", deadline)
        try:
            url = f"http://127.0.0.1:{port}/predict"
            size = f"{args.seconds:g} s, {len(body) / 1e6:.1f} MB"
            print(f"run {args.run.name}, clip {clip.name} ({size}), {os.cpu_count()} cores")
            post(url, body, args.timeout)  # the first call builds the model's predict function: not counted
            burst(url, body, args.concurrent, args.timeout)
            memory_over(url, body, psutil.Process(server.pid), args, deadline)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        left = set(Path(tempfile.gettempdir()).glob("genre_tf-serve-*")) - leftovers_before
        print(f"temporary folders left behind: {len(left)}")


if __name__ == "__main__":
    main()
