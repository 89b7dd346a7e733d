"""Peak memory of one phase of a step (``memory/rollout``, ``memory/update``), cheap enough to be on by default.

``DiffusionRL`` logs both on every training step (the stage settings' ``log_memory`` switches it off for a caller
of the stage functions). A phase's peak is the most memory in use at any moment between its start and its end, in
MiB, everything counted (weights, optimiser state, the phase's own tensors): the number that has to fit the device.

* CUDA: the caching allocator's ``max_memory_allocated``, reset by ``reset_peak_memory_stats`` when the phase
  starts. Both read host-side counters (no synchronisation), so the cost is nil.
* CPU: the process' resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset to the current
  resident set when the phase starts by writing ``5`` to ``/proc/self/clear_refs`` (Linux; the kernel only
  resets one counter). One small write and one small read per phase: microseconds.

Rejected for CPU: ``tracemalloc`` does not see torch's tensors (they bypass Python's allocator) and slows every
Python allocation; the profiler's allocation events (``profile_memory``) count exactly what torch allocated,
but profiling a whole step costs far more than the figure is worth (``bench/step_memory.py`` uses them to
compare versions). The resident set also counts freed memory glibc keeps cached, so on CPU the figure can
vary by several per cent between identical runs. Where the high-water mark cannot be reset (not Linux, a
read-only ``/proc``) no CPU figure is logged rather than a lifetime peak that would mislead.
"""

from __future__ import annotations

from pathlib import Path

import torch

_MIB = 2 ** 20
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class PhasePeak:
    """Measures the peak memory of the code between :meth:`start` and :meth:`mib`.

    Args:
        device: The device the phase runs on (its tensors' device).
        enabled: False makes both calls no-ops (``mib`` returns None): the allocator's peak counters are left
            alone for a user who reads them.
    """

    def __init__(self, device: torch.device | str, enabled: bool = True) -> None:
        self.device = torch.device(device)
        self.enabled = enabled
        self._started = False

    def start(self) -> PhasePeak:
        """Resets the peak to what is in use now; returns self."""
        if not self.enabled:
            return self
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._started = True
        else:
            self._started = _reset_cpu_peak()
        return self

    def mib(self) -> float | None:
        """The peak since :meth:`start` in MiB, or None when disabled or not measurable here."""
        if not self._started:
            return None
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / _MIB
        return _status_bytes("VmHWM") / _MIB

    def metrics(self, phase: str) -> dict[str, float]:
        """``{"memory/<phase>": MiB}``, or nothing when the peak is not measured."""
        value = self.mib()
        return {} if value is None else {f"memory/{phase}": value}


def _reset_cpu_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        _status_bytes("VmHWM")
    except (OSError, ValueError):
        return False
    return True


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise ValueError(f"{field} not in {_STATUS}")
