"""A quiet console for every command: TensorFlow's native log lines kept off the terminal unless `--verbose`, and
progress bars that print their last line once.

TensorFlow 2.16+ logs from C++ through absl before absl is initialised, which ignores TF_CPP_MIN_LOG_LEVEL: each
command printed `WARNING: All log messages before absl::InitializeLog() ...`, the oneDNN notice (twice), and for
musicnn an `E0000 ... DT_HALF` line that reads like a real error. Python's own warnings and errors go through
`sys.stderr` and are not touched: only what native code writes to file descriptor 2 passes a filter that drops
the native log lines (`I0000 hh:mm:ss.ffffff pid file.cc:line] ...`) and lets every other line through.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

from tqdm import tqdm

from genre_tf.flags import COMPUTE, add_compute_argument, add_verbose_argument  # noqa: F401  (named here before flags.py)

# glog/absl line prefixes (severity, date or 0000, time, thread, file:line]) and absl's pre-initialisation notice.
NATIVE_LOG = re.compile(
    rb"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\]|WARNING: All log messages before absl)"
)


class Progress(tqdm):
    """A tqdm bar whose last line is printed once. tqdm's close() prints the bar with the overall rate; the update
    that completes the bar printed it just before, which a log (where `\r` does not overwrite) showed twice."""

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: float = 1) -> bool | None:
        if not self.disable and self.total is not None and self.n + n >= self.total:
            self.n += n  # close() shows it
            return None
        return super().update(n)


def quiet_console(verbose: bool = False) -> None:
    """Filter TensorFlow's native log lines out of this process's stderr (not with `verbose`). Call it before
    TensorFlow is imported; once per process."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # what TensorFlow's own logging honours
    if getattr(quiet_console, "installed", False):
        return
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedded interpreter): nothing to filter
        return
    read_end, write_end = os.pipe()
    if _writes_to_fd2(sys.stderr):  # Python's own lines go straight to the terminal; a capture (pytest's) stays
        sys.stderr = os.fdopen(
            os.dup(terminal), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace"
        )
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, terminal), name="native-log-filter", daemon=True)
    thread.start()
    quiet_console.installed = True

    def restore() -> None:
        os.dup2(terminal, 2)  # closes the pipe's last write end here: the thread reads to its end and stops
        thread.join(timeout=1.0)

    atexit.register(restore)


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return False


def _forward(read_end: int, terminal: int) -> None:
    """Copy native stderr to the terminal line by line, without the native log lines."""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NATIVE_LOG.match(line))
            if kept:
                os.write(terminal, kept)
        if pending and not NATIVE_LOG.match(pending):
            os.write(terminal, pending)
