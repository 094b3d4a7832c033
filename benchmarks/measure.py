"""Timing and memory helpers shared by the benchmarks (not part of the library).

Runs are interleaved (A B A B ...) so that a change in a shared machine's load hits every method
alike; each method keeps its best wall time, its best process CPU time (less sensitive to other
processes on the machine; on a GPU the wall time is the figure), and its peak memory: on CUDA the
peak of ``torch.cuda.max_memory_allocated``, on the CPU the process's peak resident set size
(``VmHWM``, reset before each run through ``/proc/self/clear_refs`` where Linux allows it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> str:
    """The machine's 1/5/15-minute load averages (what ``uptime`` prints), or ``n/a``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _rss_peak_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _rss_peak() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_now() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Measure:
    """Best-of figures of one method: seconds per call and peak memory in bytes."""

    wall: float = float("inf")
    cpu: float = float("inf")
    peak: int = 0  # peak memory during a call (CUDA: allocated; CPU: process RSS)
    above: int = 0  # how far the peak rose above what was held before the call
    exact_peak: bool = True  # False where the CPU peak could not be reset between runs
    walls: list[float] = field(default_factory=list)

    def mib(self, value: int | None = None) -> str:
        return f"{(self.peak if value is None else value) / 2**20:,.0f} MiB"


def measure_one(fn: Callable[[], object], device: torch.device, m: Measure) -> None:
    """Run ``fn`` once and fold its wall time, CPU time and peak memory into ``m``."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        m.exact_peak = _rss_peak_reset() and m.exact_peak
        before = _rss_now()
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    sync(device)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_peak()
    m.walls.append(wall)
    m.wall, m.cpu = min(m.wall, wall), min(m.cpu, cpu)
    m.peak, m.above = max(m.peak, peak), max(m.above, peak - before)


def alternate(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, Measure]:
    """Best-of-``repeats`` :class:`Measure` of each function, runs interleaved after ``warmup``
    untimed calls of each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    out = {name: Measure() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            measure_one(fn, device, out[name])
    return out


__all__ = ["Measure", "alternate", "measure_one", "load_average", "sync"]
