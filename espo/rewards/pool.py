"""``RewardPool``: runs reward functions in worker processes with a hard deadline per item.

A reward function is untrusted in practice: ``math-verify`` can hang in sympy on an adversarial expression,
a parser can blow up on a 10 MB completion, a C extension can crash. None of that may stop training. The
pool gives each item its own deadline from the moment a worker starts it; a worker past its deadline is
killed (SIGKILL) and replaced, a worker that dies is replaced, and in both cases the item scores the
``fallback`` value (0) and a counter goes up (``timeouts``, ``errors``). An exception raised by the
function is an error too. The task exposes the counters and the module logs them as ``reward/timeouts``,
``reward/errors`` and ``reward/invalid`` (values that were not finite numbers, see ``espo.rewards.guard``).
Code that judges items some other way (the Code task's sandbox) reports into the same counters through
``count_timeout``/``count_error``/``count_invalid`` (thread-safe). What runs inside ``with pool.apart() as counts:`` is
counted in ``counts`` instead (validation's reward calls, so ``reward/*`` stays the training stream's).

A pool can be *bound* to an object (``bind``): a job may then name one of its methods instead of passing
a function, and the object travels to each worker once, when it starts (inherited by a forked worker,
pickled for a spawned one), never per item. That is how every ``Task``'s own ``reward_components`` runs
with a deadline without pickling the task and its data for every completion.

Workers are forked by default (``start_method="fork"``, as PyTorch's DataLoader workers): a replacement
costs milliseconds and inherits the imported modules; the child only runs pure-Python reward code, never
CUDA. ``"forkserver"`` or ``"spawn"`` start clean interpreters instead (the reward's module is imported
before a worker reports ready, so imports never eat an item's deadline). Functions must be picklable,
i.e. defined at module level. ``workers=0`` runs everything inline in the calling process
(exceptions are still caught and counted, but nothing can interrupt a hang): that is for rewards that are
cheap and linear by construction, such as Sudoku's cell count. ``threads=True`` runs items in ``workers``
threads of the calling process, exceptions caught and counted, with no deadline of the pool's own: that is
for rewards that confine and time themselves, such as the Code task's, where each item waits on a sandboxed
program that is killed at its own deadline.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any


def _worker(conn: Connection, memory_mb: int | None, preload: str | None, target: Any = None) -> None:
    """Worker loop: import ``preload``, say ready, then answer ``(fn, args)`` with ``("ok", value)`` or
    ``("error", message)``; ``fn`` is a callable or the name of a method of ``target``. The import happens
    before the ready message so it never eats an item's deadline."""
    # A worker forked mid-run inherits Lightning's SIGTERM handler, which only logs: multiprocessing's exit
    # handler would then wait forever for it. Terminate on SIGTERM; leave Ctrl-C to the parent.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb:
        import resource

        # Headroom over what the worker already maps: a forked child of a CUDA trainer inherits a huge
        # virtual address space, and an absolute limit below it would make every allocation fail.
        try:
            with open("/proc/self/statm") as fh:
                mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            mapped = 0
        limit = mapped + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if preload:
        import importlib

        try:
            importlib.import_module(preload)
        except Exception:  # noqa: BLE001 - the job itself will report the failure
            pass
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        fn, args = job
        try:
            conn.send(("ok", (getattr(target, fn) if isinstance(fn, str) else fn)(*args)))
        except BaseException as exc:  # noqa: BLE001 - the whole point is that nothing escapes
            conn.send(("error", "".join(traceback.format_exception_only(type(exc), exc)).strip()))


class _Slot:
    """One worker process, whether it is ready, and the item it is working on."""

    def __init__(self, ctx: Any, memory_mb: int | None, preload: str | None, target: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, memory_mb, preload, target), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.item: int | None = None
        self.started = time.monotonic()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class RewardPool:
    """A process pool that maps a reward function over items with a hard per-item deadline.

    Args:
        workers: Worker processes; 0 runs inline in the caller (no deadline, exceptions still caught).
        timeout: Seconds one item may take once a worker has started it.
        memory_mb: Address space each worker may add to what it maps at start, in MiB (None: no limit).
        fallback: The value of an item that timed out or failed.
        start_method: ``"fork"`` (fast, the default where available), ``"forkserver"`` or ``"spawn"``.
        threads: Run items in ``workers`` threads of this process instead (no deadline: for rewards that
            enforce their own, such as a sandboxed program's).
    """

    def __init__(self, workers: int = 2, timeout: float = 10.0, memory_mb: int | None = 4096,
                 fallback: float = 0.0, start_method: str | None = None, threads: bool = False) -> None:
        if workers < 0 or timeout <= 0:
            raise ValueError("workers must be >= 0 and timeout positive.")
        self.workers, self.timeout, self.memory_mb, self.fallback = workers, timeout, memory_mb, fallback
        self.threads = threads
        methods = mp.get_all_start_methods()
        self.start_method = start_method or ("fork" if "fork" in methods else "spawn")
        if self.start_method not in methods:
            raise ValueError(f"start_method {self.start_method!r} is not available here: {methods}.")
        self._slots: list[_Slot] = []
        self._preload: str | None = None
        self._target: Any = None
        self.startup_timeout = max(120.0, timeout)
        self.timeouts = 0
        self.errors = 0
        self.invalid = 0
        self._invalid_keys: set[str] = set()
        self.last_error: str | None = None
        self._lock = threading.Lock()  # counters are bumped from threads (``threads=True``, the sandbox)

    # ------------------------------------------------------------------ public
    def map(self, fn: Callable[..., Any] | str, items: Sequence[tuple]) -> list[Any]:
        """``[fn(*item) for item in items]``, with ``fallback`` for every item that timed out or failed.

        ``fn`` is a module-level function, or the name of a method of the object given to ``bind``.
        """
        if not items:
            return []
        if isinstance(fn, str) and self._target is None:
            raise ValueError(f"RewardPool.map({fn!r}, ...) names a method, but no object is bound (call bind first).")
        if self.workers == 0 or self.threads:
            call = getattr(self._target, fn) if isinstance(fn, str) else fn
            if self.workers == 0:
                return [self._inline(call, args) for args in items]
            with ThreadPoolExecutor(self.workers) as executor:
                return list(executor.map(lambda args: self._inline(call, args), items))
        return self._parallel(fn, list(items))

    def bind(self, target: Any) -> None:
        """Makes ``map`` accept the names of ``target``'s methods; workers started before are replaced.

        A worker holds ``target`` as it was when the worker started: state the object changes later, and
        anything a method changes inside a worker, is not seen on the other side.
        """
        if target is not self._target:
            self.close()
            self._target = target

    def count_timeout(self) -> None:
        """Counts an item that ran out of time outside the pool (e.g. a sandboxed program)."""
        with self._lock:
            self.timeouts += 1

    def count_error(self, message: str) -> None:
        """Counts an item that failed outside the pool, keeping the message as ``last_error``."""
        with self._lock:
            self.errors += 1
            self.last_error = message[:500]

    def count_invalid(self, message: str, key: str = "") -> bool:
        """Counts a value that came back but was not usable (not a number, NaN), keeping the message.

        Returns True the first time ``key`` (where the value came from) is counted, so callers report once.
        """
        with self._lock:
            self.invalid += 1
            self.last_error = message[:500]
            first = key not in self._invalid_keys
            self._invalid_keys.add(key)
        return first

    def stats(self) -> dict[str, float]:
        """Cumulative counters, for logging."""
        return {"timeouts": float(self.timeouts), "errors": float(self.errors), "invalid": float(self.invalid)}

    @contextmanager
    def apart(self) -> Iterator[dict[str, float]]:
        """Counts what fails inside the block in the yielded dict (filled on exit), not in the cumulative counters.

        Validation scores held-out completions through the same pool as the training reward; without this its
        timeouts and errors would show up in the training stream's ``reward/*`` counters.
        """
        before = (self.timeouts, self.errors, self.invalid)
        counts: dict[str, float] = {}
        try:
            yield counts
        finally:
            counts.update(timeouts=float(self.timeouts - before[0]), errors=float(self.errors - before[1]),
                          invalid=float(self.invalid - before[2]))
            self.timeouts, self.errors, self.invalid = before

    def close(self) -> None:
        """Stops the workers (they are daemons, so this also happens at interpreter exit)."""
        for slot in self._slots:
            try:
                slot.conn.send(None)
            except (OSError, ValueError):
                pass
            slot.kill()
        self._slots = []

    def __getstate__(self) -> dict[str, Any]:
        # Tasks are deep-copied and pickled by Lightning (hyper-parameters, DDP spawn): workers stay behind.
        state = self.__dict__.copy()
        state["_slots"] = []
        state["_target"] = None  # the bound task is rebound by its owner (and would be copied twice)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ------------------------------------------------------------------ internals
    def _inline(self, fn: Callable[..., Any], args: tuple) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001
            self.count_error(f"{type(exc).__name__}: {exc}")
            return self.fallback

    def _new_slot(self) -> _Slot:
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver" and self._preload:
            # Takes effect when the server starts: it imports the reward module once, every fork inherits it.
            ctx.set_forkserver_preload([self._preload])
        return _Slot(ctx, self.memory_mb, self._preload, self._target)

    def _ensure_workers(self, count: int) -> None:
        alive = [s for s in self._slots if s.process.is_alive()]
        for slot in self._slots:
            if slot not in alive:
                slot.kill()
        self._slots = alive
        while len(self._slots) < count:
            self._slots.append(self._new_slot())

    def _parallel(self, fn: Callable[..., Any] | str, items: list[tuple]) -> list[Any]:
        module = type(self._target).__module__ if isinstance(fn, str) else fn.__module__
        if self._preload != module:
            self.close()  # workers preloaded for another function: start fresh ones
            self._preload = module
        results: list[Any] = [self.fallback] * len(items)
        pending = list(range(len(items)))[::-1]  # pop() from the end keeps the original order
        self._ensure_workers(min(self.workers, len(items)))
        startup_failures = 0
        while pending or any(s.item is not None for s in self._slots):
            if startup_failures > 3 * self.workers:
                for index in pending:  # workers cannot even start (memory limit too low?): fail, never hang
                    self.count_error(f"no worker could start for item {index}")
                break
            for slot in list(self._slots):
                if slot.ready and slot.item is None and pending:
                    index = pending.pop()
                    try:
                        slot.conn.send((fn, items[index]))
                    except (OSError, ValueError, TypeError, AttributeError) as exc:
                        # Unpicklable arguments or a dead pipe: this item fails, the pool carries on.
                        self.count_error(f"could not send item {index}: {exc}")
                        self._replace(slot)
                        continue
                    slot.item, slot.started = index, time.monotonic()
            watched = {s.conn: s for s in self._slots if not s.ready or s.item is not None}
            if not watched:
                continue
            limits = [s.started + (self.timeout if s.ready else self.startup_timeout) for s in watched.values()]
            for conn in wait(list(watched), timeout=max(0.0, min(limits) - time.monotonic())):
                slot = watched[conn]
                try:
                    status, value = conn.recv()
                except (EOFError, OSError):
                    if slot.item is None:
                        startup_failures += 1
                    else:
                        self.count_error(f"worker died on item {slot.item} (exit code {slot.process.exitcode})")
                    self._replace(slot)
                    continue
                if status == "ready":
                    slot.ready = True
                    continue
                if status == "ok":
                    results[slot.item] = value
                else:
                    self.count_error(value)
                slot.item = None
            now = time.monotonic()
            for slot in list(self._slots):
                if slot.item is not None and now - slot.started >= self.timeout:
                    self.count_timeout()
                    self._replace(slot)
                elif not slot.ready and now - slot.started >= self.startup_timeout:
                    startup_failures += 1
                    self._replace(slot)
        return results

    def _replace(self, slot: _Slot) -> None:
        slot.kill()
        self._slots.remove(slot)
        self._slots.append(self._new_slot())


def default_workers() -> int:
    """Half the CPUs the process may use, at least 1 and at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // 2))
