"""The precision the serving commands compute in: float32, or bfloat16 where the CPU has it in hardware.

`--compute bfloat16` (predict, tag, serve) turns on TensorFlow's oneDNN auto mixed precision: the graphs' matrix
multiplications and convolutions run in bfloat16 (Intel AMX or AVX512-BF16; Sapphire Rapids and later, AMD Zen 4),
everything else in float32. Measured for a musicnn probe on 2 cores (bench/musicnn_compute.py): about 1.8 times the
segments per second of float32, probabilities within a few hundredths. On a CPU without those instructions oneDNN
emulates bfloat16, slower than float32: the command says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf

BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of hardware bfloat16


def use_compute(compute: str) -> None:
    """Set the process's precision before any model graph is traced (`config.console.COMPUTE`)."""
    bfloat16 = compute == "bfloat16"
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": bfloat16})
    if bfloat16 and not hardware_bfloat16():
        print("note: this CPU shows no AMX or AVX512-BF16: bfloat16 is emulated and slower than float32",
              file=sys.stderr)  # fmt: skip


def hardware_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bfloat16 in hardware (its flags; False where they cannot be read)."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in BFLOAT16_FLAGS)
