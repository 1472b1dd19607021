"""The batcher: concurrent requests share model calls and each gets its own rows; a request that breaks the model fails
alone; the queue is bounded. A numpy function stands in for the model."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from genre_tf.serving.batching import Batcher, BatchLimits, Busy


def doubling(inputs: np.ndarray) -> dict[str, np.ndarray]:
    """A model with two outputs per row; a row of NaN breaks it."""
    if np.isnan(inputs).any():
        raise ValueError("NaN input")
    return {"double": 2 * inputs, "sum": inputs.sum(axis=1)}


def requests(n: int) -> list[np.ndarray]:
    """n requests of 1..n rows of 3 values each, every value telling its request and row apart."""
    return [np.arange(3 * (i + 1), dtype=float).reshape(-1, 3) + 100 * i for i in range(n)]


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    # max_batch 10 = the 4 requests' rows: the call is made when the last arrives, not when the window ends
    batcher = Batcher(doubling, BatchLimits(window=30.0, max_batch=10))
    inputs = requests(4)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(batcher.predict, inputs))
    batcher.close()
    assert batcher.batch_sizes == [4]
    for x, answer in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(answer["double"], 2 * x)
        np.testing.assert_array_equal(answer["sum"], x.sum(axis=1))


def test_a_request_that_breaks_the_model_fails_alone():
    batcher = Batcher(doubling, BatchLimits(window=30.0, max_batch=10))
    inputs = requests(4)
    inputs[2][1, 0] = np.nan
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.predict, x) for x in inputs]
        errors = [f.exception() for f in futures]
    batcher.close()
    assert [type(e).__name__ if e else None for e in errors] == [None, None, "ValueError", None]
    assert batcher.batch_sizes == [4, 1, 1, 1, 1], "the shared call failed, then each request alone"
    for i in (0, 1, 3):
        np.testing.assert_array_equal(futures[i].result()["double"], 2 * inputs[i])


def test_a_lone_request_waits_for_company_only_while_some_is_expected():
    expected = threading.Event()
    batcher = Batcher(doubling, BatchLimits(window=0.3), expecting=expected.is_set)
    started = time.perf_counter()
    answers = [batcher.predict(x) for x in requests(3)]
    alone = time.perf_counter() - started
    expected.set()
    started = time.perf_counter()
    batcher.predict(np.ones((1, 3)))
    waited = time.perf_counter() - started
    batcher.close()
    assert batcher.batch_sizes == [1, 1, 1, 1] and [len(a["sum"]) for a in answers] == [1, 2, 3]
    assert alone < 0.3 <= waited, "the window is waited only while other requests are on their way"


def test_a_full_queue_makes_requests_wait_then_refuses_them():
    release = threading.Event()

    def stuck(inputs: np.ndarray) -> dict[str, np.ndarray]:
        release.wait(timeout=10)
        return doubling(inputs)

    batcher = Batcher(stuck, BatchLimits(window=0.0, max_queued=4, timeout=0.2))
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(batcher.predict, np.ones((3, 3)))  # 3 of the 4 segments the queue holds, in the call
        with pytest.raises(Busy, match="busy: 3 segments queued; try again"):
            batcher.predict(np.ones((2, 3)))  # 3 + 2 > 4: waited 0.2 s for room
        release.set()
        assert held.result()["sum"].tolist() == [3.0, 3.0, 3.0]
    answer = batcher.predict(np.ones((6, 3)))  # larger than the bound: runs once the queue is empty
    batcher.close()
    assert len(answer["double"]) == 6
