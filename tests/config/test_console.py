"""The console: progress bars print their last line once; TensorFlow's native log lines are filtered out."""

import io
import os
import subprocess
import sys

import pytest

from genre_tf.config.console import NATIVE_LOG, Progress, _forward


def finished_lines(text: str) -> int:
    return sum("5/5" in part for part in text.replace("\n", "\r").split("\r"))


@pytest.mark.parametrize("iterated", [True, False])
def test_a_progress_bar_prints_its_last_line_once(iterated):
    out = io.StringIO()
    if iterated:
        assert list(Progress(range(5), total=5, file=out, mininterval=0)) == list(range(5))
    else:
        with Progress(total=5, file=out, mininterval=0) as bar:
            for _ in range(5):
                bar.update(1)
    assert finished_lines(out.getvalue()) == 1, out.getvalue()
    assert out.getvalue().endswith("\n")


def test_native_log_lines_are_dropped_and_every_other_line_kept():
    read_end, write_end = os.pipe()
    kept_read, kept_write = os.pipe()
    lines = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1796473138.224731   25833 port.cc:153] oneDNN custom operations are on.",
        b"E0000 00:00:1796473138.224731   25833 mkl_util.h:9] oneDNN supports DT_HALF only on platforms with AVX-512",
        b"W1205 12:01:02.123456 140 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
        b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 1234.",
        b"a user's own line",
    ]
    os.write(write_end, b"\n".join(lines) + b"\n")
    os.close(write_end)
    _forward(read_end, kept_write)
    os.close(kept_write)
    with os.fdopen(kept_read, "rb") as kept:
        assert kept.read().splitlines() == lines[4:]
    assert all(NATIVE_LOG.match(line) for line in lines[:4])


def test_a_command_runs_quiet_and_verbose_brings_the_native_lines_back(tmp_path):
    """TensorFlow imported after quiet_console, as every command does: its start-up lines are gone."""
    script = "import sys; from genre_tf.config.console import quiet_console; quiet_console('-v' in sys.argv)\n"
    script += "import tensorflow as tf; tf.constant(1.0) + 1; print('done', file=sys.stderr)"
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert quiet.stderr.splitlines() == ["done"]
    loud = subprocess.run([sys.executable, "-c", script, "-v"], capture_output=True, text=True, timeout=120)
    if loud.stderr.splitlines() == ["done"]:
        pytest.skip("TensorFlow printed no native line on this machine, so the quiet run proves nothing more")
    assert any(NATIVE_LOG.match(line.encode()) for line in loud.stderr.splitlines())
