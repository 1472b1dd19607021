"""Benchmark: the HTTP service as a client sees it, against the floor of the same work done without a service.

Starts `python -m genre_tf.serve` on 127.0.0.1 (a free port) with a run, and exports the run's SavedModel in this
process. With a real 30 s clip (gtzan_mini, FLAC) it then
1. single client: uploads the clip `--single` times, one after another, alternating in blocks of 5 with the floor,
   which decodes the same file as the exported model takes it (`frontend.read_waveform`) and calls the SavedModel on
   it: p50 / p95 of each, and the service's p50 as a multiple of the floor's;
2. sends `--concurrent` uploads at once, `--rounds` times: how many are answered, latency p50 / p95, and the median
   round's throughput in clips/s against what the floor allows (one clip per floor p50, one after another on these
   cores; a round lasts a second or two, so one round is at the mercy of the machine's other load);
3. sends `--requests` more, `--clients` at a time, sampling the server's resident memory (RSS) every
   `--sample-every` requests: start / end / max, which stay flat when nothing accumulates per request;
and checks that no request's temporary folder is left behind. Every request has a timeout and the whole run a
deadline, so a stuck server ends the benchmark instead of hanging it. The load average is printed at the start and
at the end: the cores are shared, and the ratios, measured side by side, are the steadier figures.

    .venv/bin/python bench/serve.py --run saved_models/demo_cnn   # make demo first
    .venv/bin/python bench/serve.py --run musicnn --requests 100  # a run made from configs/musicnn.yaml: the
                                                                  # pretrained MSD backbone under a seeded head
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
from result_table import record  # bench/result_table.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
CLIP = SHARED_DATA / "gtzan_mini" / "blues" / "blues.00000.flac"
BOUNDARY = "genre-tf-bench"
# The single client's uploads and the floor's calls alternate in blocks: back to back, as a client with many files
# sends them, and the other process's threads idle (TensorFlow's spin a while after a call before they sleep).
BLOCK = 5


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


def start_server(run: Path, port: int, log: Path, deadline: float, workers: int = 0) -> subprocess.Popen:
    """The service in a process of its own, logging to a file (a pipe nobody reads would fill), once /health answers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable,
        "-m",
        "genre_tf.serve",
        "--run",
        str(run),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
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


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


class Floor:
    """The same clip without a service: decoded as the exported model takes it, the exported SavedModel called on it."""

    def __init__(self, run: Path, clip: Path, tmp: Path):
        import tensorflow as tf

        from genre_tf.run import RunDir
        from genre_tf.serving.export import export
        from genre_tf.serving.frontend import read_waveform

        self.run, self.clip, self.read_waveform, self.tf = RunDir(run), clip, read_waveform, tf
        saved = tmp / "saved_model"
        export(self.run, "saved_model", saved, progress=lambda line: None)
        self.serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
        self()  # traced and warm before timing

    def __call__(self) -> float:
        """Seconds to decode the clip and have its probabilities."""
        started = time.perf_counter()
        waveform = self.read_waveform(self.clip, self.run.recipe)
        self.serve(waveform=self.tf.constant(waveform))["probabilities"].numpy()
        return time.perf_counter() - started


def single_client(url: str, body: bytes, floor: Floor, n: int, timeout: float) -> tuple[float, dict]:
    """n uploads one after another, each followed by the floor; the floor's p50 in seconds, and the figures."""
    service, floors = [], []

    def upload() -> float:
        status, seconds = post(url, body, timeout)
        if status != 200:
            raise SystemExit(f"error: the service answered {status or 'nothing'}")
        return seconds

    while len(service) < n:
        for calls, call in ((service, upload), (floors, floor)):
            call()  # the first of a block wakes its process's threads: not counted
            calls += [call() for _ in range(min(BLOCK, n - len(service)))]
    p50, floor_p50 = percentile(service, 50), percentile(floors, 50)
    print(f"single client, {n} uploads (load average {load_average()}):")
    print(f"  service p50 {p50 * 1e3:.0f} ms, p95 {percentile(service, 95) * 1e3:.0f} ms")
    print(f"  floor   p50 {floor_p50 * 1e3:.0f} ms, p95 {percentile(floors, 95) * 1e3:.0f} ms (decode + SavedModel)")
    print(f"  the service's p50 is {p50 / floor_p50:.2f}x the floor's")
    return floor_p50, {
        "single client p50 ms": round(p50 * 1e3),
        "p95 ms": round(percentile(service, 95) * 1e3),
        "floor p50 ms": round(floor_p50 * 1e3),
        "ratio": f"{p50 / floor_p50:.2f}x",
    }


def burst(url: str, body: bytes, n: int, rounds: int, timeout: float, floor_p50: float) -> dict:
    """n uploads at once, `rounds` times: answered count, latency percentiles, and the median round's throughput
    against the floor's (returned)."""
    answered, rates = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda _: post(url, body, timeout), range(n)))
        wall = time.perf_counter() - started
        ok = [seconds for status, seconds in results if status == 200]
        answered += ok
        rates.append(len(ok) / wall)
        print(f"{n} concurrent uploads: {len(ok)} answered 200 in {wall:.2f} s (load average {load_average()})")
        others = sorted({status for status, _ in results if status != 200})
        if others:
            print(f"  other answers: {others} (0: none)")
    figures = {"at once: answered": f"{len(answered)} of {n * rounds}"}
    if answered:
        p50, p95 = percentile(answered, 50), percentile(answered, 95)
        rate, floor_rate = statistics.median(rates), 1 / floor_p50
        print(f"  latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(answered):.2f} s")
        print(f"  throughput {' / '.join(f'{r:.1f}' for r in rates)} clips/s, median {rate:.1f}; the floor allows "
              f"{floor_rate:.1f} clips/s: {rate / floor_rate:.2f}x")  # fmt: skip
        figures |= {
            "p50 / p95 s": f"{p50:.2f} / {p95:.2f}",
            "clips/s (floor allows)": f"{rate:.1f} ({floor_rate:.1f})",
            "throughput ratio": f"{rate / floor_rate:.2f}x",
        }
    return figures


def memory_over(url: str, body: bytes, server: psutil.Process, args: argparse.Namespace, deadline: float) -> dict:
    """args.requests uploads, args.clients at a time, the server's RSS sampled every args.sample_every (returned)."""
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
    return {"RSS MiB over the requests": f"{min(mib):.0f}-{max(mib):.0f} over {sent}"}


def bench_run(name: str, tmp: Path) -> Path:
    """The run directory: a path, or `musicnn`: a run made from configs/musicnn.yaml as bench/predict.py makes it."""
    if name != "musicnn":
        return Path(name)
    from predict import make_run  # bench/predict.py, beside this script

    classes = sorted(p.name for p in (SHARED_DATA / "gtzan_mini").iterdir() if p.is_dir())
    return make_run(tmp / "runs" / "musicnn", "musicnn.yaml", classes, tmp / "unused_cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(REPO / "saved_models" / "demo_cnn"), help="a run, or musicnn")
    parser.add_argument("--clip", type=Path, default=CLIP, help="the audio uploaded (a real 30 s GTZAN clip)")
    parser.add_argument("--single", type=int, default=30, help="uploads of the single client")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0, help="the service's --workers (0: its default)")
    parser.add_argument("--rounds", type=int, default=5, help="times the concurrent uploads are sent (median kept)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4, help="uploads in flight during the memory phase")
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    parser.add_argument("--deadline", type=float, default=1200.0, help="seconds the whole benchmark may take")
    args = parser.parse_args()
    if not args.clip.is_file():
        raise SystemExit(f"error: no clip at {args.clip} (../shared/data/gtzan_mini absent?)")
    deadline = time.monotonic() + args.deadline
    with tempfile.TemporaryDirectory() as tmp:
        run = bench_run(args.run, Path(tmp))
        if not (run / "model.keras").is_file():
            raise SystemExit(f"error: {run} has no model.keras (make demo creates saved_models/demo_cnn)")
        body = multipart(args.clip)
        port = free_port()
        leftovers_before = set(Path(tempfile.gettempdir()).glob("genre_tf-serve-*"))
        print(f"load average at the start: {load_average()}")
        server = start_server(run, port, Path(tmp) / "server.log", deadline, args.workers)
        try:
            url = f"http://127.0.0.1:{port}/predict"
            floor = Floor(run, args.clip, Path(tmp))
            size = f"{len(body) / 1e6:.2f} MB"
            print(f"run {run.name}, clip {args.clip.name} ({size}), {len(os.sched_getaffinity(0))} cores")
            post(url, body, args.timeout)  # the first upload warms the server: not counted
            row = {"run": run.name, "workers": args.workers or "default", "clip": f"{args.clip.name} ({size})"}
            row["load average at the start"] = load_average()
            floor_p50, figures = single_client(url, body, floor, args.single, args.timeout)
            row |= figures | burst(url, body, args.concurrent, args.rounds, args.timeout, floor_p50)
            row |= memory_over(url, body, psutil.Process(server.pid), args, deadline)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        left = set(Path(tempfile.gettempdir()).glob("genre_tf-serve-*")) - leftovers_before
        print(f"temporary folders left behind: {len(left)}; load average at the end: {load_average()}")
    record(
        "serve",
        [row | {"temporary folders left": len(left), "load average at the end": load_average()}],
        ["run", "workers"],
    )


if __name__ == "__main__":
    main()
