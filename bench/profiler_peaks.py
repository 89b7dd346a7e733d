"""Per-range allocator peaks from a torch profiler run (CPU or CUDA), shared by the memory benches.

``torch.profiler.profile(profile_memory=True)`` records every allocation with the running total of live bytes;
ranges opened with ``record_function(prefix + name)`` mark the phases. This needs torch only, so the official
trainer's worker (another interpreter, without espo) can use it too.
"""

from __future__ import annotations

from typing import Any

from torch._C._profiler import _EventType


def range_peaks(prof: Any, prefix: str) -> dict[str, int]:
    """Each ``prefix``-named range's most bytes allocated at once, counted from the run's first allocation.

    The profiler's running total carries over from any earlier profiling in the process, so it is measured from
    the total just before the first allocation this run saw.
    """
    ranges, allocations, stack = [], [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            fields = node.extra_fields
            allocations.append((node.start_time_ns, fields.total_allocated, fields.alloc_size))
        elif node.name.startswith(prefix):
            ranges.append((node.start_time_ns, node.end_time_ns, node.name[len(prefix):]))
    allocations.sort()
    base = allocations[0][1] - allocations[0][2] if allocations else 0
    peaks: dict[str, int] = {}
    for t, total, _ in allocations:
        for lo, hi, name in ranges:
            if lo <= t <= hi:
                peaks[name] = max(peaks.get(name, 0), total - base)
    return peaks
