"""RewardPool: results in order; a hang, a crash or an exception scores the fallback, is counted, never raises;
workers end on SIGTERM."""

from __future__ import annotations

import os
import signal
import time

import pytest

from espo.rewards.pool import RewardPool


def square(x: int) -> int:
    return x * x


def misbehave(kind: str) -> float:
    if kind == "hang":
        time.sleep(60)
    if kind == "crash":
        os._exit(3)  # a segfaulting C extension looks the same from outside
    if kind == "raise":
        raise RuntimeError("parser exploded")
    return 1.0


@pytest.fixture(scope="module")
def pool():
    pool = RewardPool(workers=2, timeout=1.0, memory_mb=None)
    yield pool
    pool.close()


def test_results_keep_the_order_of_the_items(pool: RewardPool):
    assert pool.map(square, [(i,) for i in range(10)]) == [i * i for i in range(10)]
    assert pool.map(square, []) == []


def test_hang_crash_and_exception_score_zero_and_are_counted(pool: RewardPool):
    before = pool.stats()
    kinds = ["ok", "hang", "ok", "crash", "raise", "ok"]
    # "hang" returns 1.0 once its 60 s sleep ends: its 0.0 shows the pool stopped waiting before that (its
    # 1 s deadline), with no wall-clock measurement.
    assert pool.map(misbehave, [(k,) for k in kinds]) == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    after = pool.stats()
    assert after["timeouts"] - before["timeouts"] == 1
    assert after["errors"] - before["errors"] == 2
    assert "parser exploded" in pool.last_error or "exit code" in pool.last_error
    # The pool still works with fresh workers afterwards.
    assert pool.map(square, [(3,), (4,)]) == [9, 16]


def test_inline_mode_catches_exceptions_and_counts_them():
    pool = RewardPool(workers=0)
    assert pool.map(misbehave, [("ok",), ("raise",)]) == [1.0, 0.0]
    assert pool.stats() == {"timeouts": 0.0, "errors": 1.0, "invalid": 0.0}


def test_pool_survives_pickling_without_its_workers(pool: RewardPool):
    import pickle

    copy = pickle.loads(pickle.dumps(pool))
    assert copy._slots == [] and copy.timeout == pool.timeout
    assert copy.map(square, [(5,)]) == [25]
    copy.close()


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 2**20))


def test_memory_limit_is_headroom_over_the_inherited_address_space():
    pool = RewardPool(workers=1, timeout=10.0, memory_mb=256)
    assert pool.map(allocate, [(16,), (2048,), (16,)]) == [16 * 2**20, 0.0, 16 * 2**20]
    assert pool.errors == 1 and "MemoryError" in pool.last_error
    pool.close()


def test_apart_counts_inside_the_block_and_restores_the_counters():
    pool = RewardPool(workers=0)
    pool.count_error("training")
    with pool.apart() as counts:
        assert pool.map(misbehave, [("raise",), ("ok",), ("raise",)]) == [0.0, 1.0, 0.0]
        pool.count_timeout()
    assert counts == {"timeouts": 1.0, "errors": 2.0, "invalid": 0.0}
    assert pool.stats() == {"timeouts": 0.0, "errors": 1.0, "invalid": 0.0}


def nap(kind: str) -> float:
    if kind == "raise":
        raise RuntimeError("sandbox runner failed")
    time.sleep(0.5)
    return 1.0


def test_thread_mode_runs_items_at_once_in_order_and_counts_exceptions():
    pool = RewardPool(workers=4, threads=True)
    start = time.monotonic()
    assert pool.map(nap, [("ok",), ("raise",), ("ok",), ("ok",), ("ok",)]) == [1.0, 0.0, 1.0, 1.0, 1.0]
    # Four sleeping items side by side take one nap (0.5 s), not four (2 s); the margin is for a loaded machine.
    assert time.monotonic() - start < 1.5
    assert pool.stats() == {"timeouts": 0.0, "errors": 1.0, "invalid": 0.0}
    assert "sandbox runner failed" in pool.last_error


def _negate(x: int) -> int:
    return -x


def test_pool_workers_end_on_sigterm_even_if_the_parent_ignores_it():
    # Lightning installs a SIGTERM handler that only logs; forked workers must not inherit it, or
    # multiprocessing's exit handler waits for them forever.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    pool = RewardPool(workers=1, timeout=5.0, start_method="fork")
    try:
        assert pool.map(_negate, [(3,)]) == [-3]
        process = pool._slots[0].process
        os.kill(process.pid, signal.SIGTERM)
        process.join(timeout=5)
        assert not process.is_alive()
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.close()  # SIGKILLs a survivor, so a regression fails here instead of hanging the suite at exit
