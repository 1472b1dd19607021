"""Serve a run over HTTP: a page to drop an audio file on, and the JSON API behind it.

python -m genre_tf.serve --run saved_models/demo_cnn [--host 127.0.0.1] [--port 8000]
python -m genre_tf.serve --model genres.tflite          # an exported file on LiteRT: no TensorFlow
python -m genre_tf.serve --run RUN --runtime litert     # the run's exported .tflite on LiteRT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from genre_tf.flags import add_compute_argument, add_verbose_argument
from genre_tf.serving.uploads import MB, Limits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run directory")
    parser.add_argument("--model", type=Path, help="an exported .tflite file, served on LiteRT (no TensorFlow)")
    parser.add_argument("--runtime", choices=("tensorflow", "litert"), help="litert: the run's exported .tflite")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-mb", type=float, default=50.0, help="largest upload, in MB (default 50)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="longest audio, in seconds (default 600)")
    parser.add_argument("--workers", type=int, default=0, help="uploads analysed at once (default: cores + 1)")
    add_compute_argument(parser)
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.max_mb <= 0 or args.max_seconds <= 0 or args.workers < 0:
        raise SystemExit("error: --max-mb and --max-seconds must be positive, --workers 0 or more")
    limits = Limits(round(args.max_mb * MB), args.max_seconds, args.workers)
    if args.model is not None or args.runtime == "litert":
        if (args.model is None) == (args.run is None) or args.runtime == "tensorflow" or args.compute != "float32":
            parser.error("give --model X.tflite, or --run RUN --runtime litert (without --compute)")
        # Lazy: ai-edge-litert, numpy, soundfile and soxr only: no TensorFlow in this process.
        from genre_tf.serving.litert_app import lite_app

        return uvicorn.run(lite_app(args.model, args.run, limits), host=args.host, port=args.port, log_level="info")
    if args.run is None:
        parser.error("give --run (a finished run) or --model (an exported .tflite file)")
    # The library (TensorFlow) loads once the arguments are read, so --help and their errors are instant.
    # Lazy: the console filter goes in before TensorFlow loads.
    from genre_tf.config.console import quiet_console

    quiet_console(args.verbose)
    # Lazy: TensorFlow loads after the filter is in.
    from genre_tf.serving.app import run_app

    uvicorn.run(run_app(args.run, limits, args.compute), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
