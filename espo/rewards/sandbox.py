"""A local sandbox for untrusted Python: a separate, confined process per program, killed at a deadline.

``run_tests(code, tests)`` starts ``sandbox_runner.py`` as a script with a fresh interpreter (``python -I``:
no environment variables, no user site, no current directory on the path) in a new session and a fresh
temporary directory, hands it the program and its tests on stdin, and kills the whole process group at the
wall-clock deadline. Inside, the runner confines itself before running anything (see its docstring):
network, PID and mount namespaces, a size-limited tmpfs as the working directory, a uid of the program's
own for root (so one program's fork bomb cannot exhaust another's process budget), Landlock read/write/TCP
restrictions, and CPU, memory, file-size and process-count rlimits. What the kernel refused is reported in
``SandboxResult.isolation`` and :func:`capabilities` says what this machine allows, so the guarantee is
always known, never assumed.

The result is the number of tests that ran to their end, judged by the runner from each test process's
exit status (no descriptor of the runner is open in a test process, so writing to descriptors forges
nothing). A program that fakes equality (``__eq__`` returning True) or reads the runner's stack frames can
still game its tests, as in any in-process harness: the sandbox contains, it does not judge intent.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("sandbox_runner.py")


@dataclass
class SandboxResult:
    """Per-test outcomes of one program."""

    passed: list[bool]
    timed_out: bool = False
    error: str | None = None
    isolation: dict[str, Any] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def run_tests(
    code: str,
    tests: list[str],
    *,
    timeout: float = 10.0,
    per_test_timeout: float = 5.0,
    cpu_seconds: int = 5,
    memory_mb: int = 512,
    file_size_mb: int = 16,
    max_processes: int = 32,
    disk_mb: int = 64,
) -> SandboxResult:
    """Runs ``code`` followed by each test (a Python snippet, usually asserts) in the sandbox.

    Args:
        code: The untrusted program.
        tests: Test snippets; each runs in a fresh child after ``code`` and passes when it reaches its end.
        timeout: Wall-clock deadline of the whole run in seconds; the process group is killed after it.
        per_test_timeout: Wall-clock deadline of one test.
        cpu_seconds: CPU-time limit of every process.
        memory_mb: Address-space limit of every process.
        file_size_mb: Largest file a process may write.
        max_processes: Process-count limit (the program's own: each sandbox runs as its own uid).
        disk_mb: Size of the tmpfs the program works in (all files together; where a mount namespace is
            allowed, else only ``file_size_mb`` per file applies).
    """
    if not tests:
        return SandboxResult(passed=[], error="no tests")
    tmp = tempfile.mkdtemp(prefix="espo-sandbox-")
    job = {"code": code, "tests": tests, "tmp": tmp, "per_test_seconds": per_test_timeout,
           "limits": {"cpu_seconds": int(cpu_seconds), "memory_mb": int(memory_mb),
                      "file_size_mb": int(file_size_mb), "max_processes": int(max_processes),
                      "disk_mb": int(disk_mb)}}
    env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-I", str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=tmp, env=env, start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(json.dumps(job).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        out = b""
    finally:
        _kill_group(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1])
        passed = [bool(p) for p in report["passed"]][: len(tests)]
    except (IndexError, ValueError, KeyError, TypeError):
        error = "deadline" if timed_out else f"runner failed (exit code {proc.returncode})"
        return SandboxResult(passed=[False] * len(tests), timed_out=timed_out, error=error)
    passed += [False] * (len(tests) - len(passed))
    return SandboxResult(passed=passed, timed_out=timed_out, isolation=report.get("isolation", {}))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        proc.kill()
        proc.wait()


@functools.cache
def capabilities() -> dict[str, Any]:
    """What the sandbox can enforce on this machine (runs one trivial program and reads its report)."""
    result = run_tests("", ["pass"], timeout=30.0)
    return {"works": result.passed == [True], **result.isolation}
