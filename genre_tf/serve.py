"""Serve a run over HTTP: a page to drop an audio file on, and the JSON API behind it.

python -m genre_tf.serve --run saved_models/demo_cnn [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from threadpoolctl import threadpool_limits

from genre_tf.config.console import add_compute_argument, add_verbose_argument, quiet_console
from genre_tf.serving.uploads import MB, Limits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-mb", type=float, default=50.0, help="largest upload, in MB (default 50)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="longest audio, in seconds (default 600)")
    parser.add_argument("--workers", type=int, default=0, help="uploads analysed at once (default: one per core)")
    add_compute_argument(parser)
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    # Lazy: the library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    from genre_tf.run import RunDir
    from genre_tf.serving.app import create_app
    from genre_tf.serving.compute import use_compute
    from genre_tf.serving.predict import expand_runs

    run = RunDir(args.run)
    for model_run in [run, *expand_runs([run])[0]]:  # an ensemble: its members too
        if problem := model_run.problem:
            raise SystemExit(f"error: {problem}")
    if args.max_mb <= 0 or args.max_seconds <= 0 or args.workers < 0:
        raise SystemExit("error: --max-mb and --max-seconds must be positive, --workers 0 or more")
    # One BLAS thread for the whole process: requests are the parallelism, and extraction's per-call limit, entered
    # and left by several threads at once, would otherwise leave some extractions with more threads (other bytes).
    threadpool_limits(1)
    use_compute(args.compute)
    limits = Limits(round(args.max_mb * MB), args.max_seconds, args.workers)
    uvicorn.run(create_app(run, limits), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
