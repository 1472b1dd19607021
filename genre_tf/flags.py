"""Command-line flags several commands share, in the standard library alone: a command parses its arguments before
it imports anything heavy, and `predict --model` / `serve --model` run where only LiteRT is installed."""

from __future__ import annotations

import argparse


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's native log lines too")


COMPUTE = ("float32", "bfloat16")  # serving.compute.use_compute
COMPUTE_HELP = "bfloat16: matmuls and convolutions in bfloat16 on CPUs with AMX / AVX512-BF16 (faster, not equal)"


def add_compute_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compute", choices=COMPUTE, default="float32", help=COMPUTE_HELP)
