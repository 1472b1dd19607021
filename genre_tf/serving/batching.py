"""Concurrent requests' segments to a model in shared batches, each request's rows routed back to it.

A request hands its segments (an array whose first axis is the segment) to `Batcher.predict`, which waits for its
own rows of the outputs. One thread takes the queued requests in arrival order: the first, then whatever else
arrives within a short window, up to `max_batch` segments, and calls the model once on them all; while the model
runs, the next batch gathers. The window is only waited while other requests are on their way (`expecting`: the
caller knows, since it prepares their segments), so a lone request goes straight to the model, and under load each
model call takes what the cores have queued. The queue is bounded in segments, so memory is too: a request that
finds it full waits for room, and gives up with `Busy` after `timeout` seconds. When a batched call fails, each of
its requests is tried alone, so only the one whose input breaks the model gets the error.

No TensorFlow here: the model call is any function from an array to a dict of arrays with one row per input row.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

Outputs = dict[str, np.ndarray]


class Busy(Exception):
    """The queue stayed full for longer than a request may wait."""


@dataclass(frozen=True)
class BatchLimits:
    """How requests share model calls: the window a lone request waits for company, and the bounds."""

    window: float = 0.002  # seconds
    max_batch: int = 256  # segments per model call; a request is never split, so one call may take more
    max_queued: int = 1024  # segments waiting or in the model call at once; one request larger than this runs alone
    timeout: float = 60.0  # seconds a request waits for room in the queue


@dataclass
class Pending:
    """One request's segments and the future of its outputs."""

    inputs: np.ndarray
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return len(self.inputs)


class Batcher:
    """A model call shared by concurrent requests; `predict` is safe to call from any number of threads."""

    def __init__(
        self,
        call: Callable[[np.ndarray], Outputs],
        limits: BatchLimits | None = None,
        expecting: Callable[[], bool] = lambda: True,
    ):
        self.call, self.limits, self.expecting = call, limits or BatchLimits(), expecting
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._held = 0  # segments queued or in the model call
        self._room = threading.Condition()
        self.batch_sizes: list[int] = []  # requests per model call, the most recent last (bounded: see _record)
        self._thread = threading.Thread(target=self._serve, name="genre_tf-batcher", daemon=True)
        self._thread.start()

    def predict(self, inputs: np.ndarray) -> Outputs:
        """The model's outputs for these segments, computed with other requests' segments; Busy when the queue
        stays full for `limits.timeout` seconds."""
        pending = Pending(inputs)
        with self._room:
            if not self._room.wait_for(lambda: self._fits(pending.size), timeout=self.limits.timeout):
                raise Busy(f"busy: {self._held} segments queued; try again")
            self._held += pending.size
        self._queue.put(pending)
        return pending.future.result()  # in the queue, the wait is bounded by the calls ahead of it

    @property
    def idle(self) -> bool:
        """No request queued or in a model call."""
        return self._held == 0

    def _fits(self, size: int) -> bool:
        # A request larger than the whole bound would never fit: it waits for an empty queue instead.
        return self._held == 0 or self._held + size <= self.limits.max_queued

    def close(self) -> None:
        """Stop the batching thread once the requests queued so far are answered."""
        self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            closing = self._gather(batch)
            self._run(batch)
            with self._room:
                self._held -= sum(p.size for p in batch)
                self._room.notify_all()
            if closing:
                return

    def _gather(self, batch: list[Pending]) -> bool:
        """Add to `batch` what is queued, and what arrives within the window while more requests are expected, up to
        max_batch segments; True when close was asked."""
        deadline = time.monotonic() + self.limits.window
        size = batch[0].size
        while size < self.limits.max_batch:
            wait = deadline - time.monotonic() if self.expecting() else 0.0
            try:
                pending = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if pending is None:
                return True
            batch.append(pending)
            size += pending.size
        return False

    def _run(self, batch: list[Pending]) -> None:
        """One model call for the batch, each request's rows set on its future; on failure, each request alone."""
        self._record(len(batch))
        try:
            outputs = self.call(np.concatenate([p.inputs for p in batch]))
        except Exception as err:  # whatever the model raises belongs to the request that caused it
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            for pending in batch:
                self._run([pending])
            return
        ends = np.cumsum([p.size for p in batch])
        for pending, end in zip(batch, ends, strict=True):
            pending.future.set_result({name: out[end - pending.size : end] for name, out in outputs.items()})

    def _record(self, requests: int) -> None:
        self.batch_sizes.append(requests)
        del self.batch_sizes[:-1000]  # a service runs for days: keep the recent calls only
