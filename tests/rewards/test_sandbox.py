"""The code sandbox: honest programs pass, hostile ones are contained, score 0 and leave the host unharmed."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from espo.rewards.pool import default_workers
from espo.rewards.sandbox import capabilities, run_tests
from espo.tasks import Code

# Per-test deadlines cut the hostile programs (1.5 s against tests that take milliseconds); the whole-run
# deadline only has to outlast an honest run's interpreter start on a loaded machine, so it is generous: no
# test below reaches it, and none measures time.
FAST = {"timeout": 30.0, "per_test_timeout": 1.5, "cpu_seconds": 2, "memory_mb": 256, "max_processes": 16}


def _sandbox_processes() -> int:
    """Processes running the sandbox runner (forked children keep its command line)."""
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            count += proc.name.isdigit() and b"sandbox_runner.py" in (proc / "cmdline").read_bytes()
        except OSError:
            pass
    return count


def _processes_of(uid: int) -> int:
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            count += proc.name.isdigit() and proc.stat().st_uid == uid
        except OSError:
            pass
    return count


def test_honest_program_passes_with_partial_credit():
    result = run_tests("def add(a, b):\n    return a + b\n",
                       ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(-1, 1) == 0"], **FAST)
    assert result.passed == [True, False, True]
    assert result.pass_rate == pytest.approx(2 / 3)
    assert not result.timed_out and result.error is None


def test_exiting_early_is_not_a_pass():
    # The reference's exit-status check counts sys.exit(0) as a pass; here a test must run to its end.
    for code in ("import sys\nsys.exit(0)", "import os\nos._exit(0)"):
        assert run_tests(code, ["assert False"], **FAST).passed == [False]


def test_infinite_loop_is_killed_at_its_deadline():
    result = run_tests("def f():\n    while True:\n        pass\n", ["f()", "assert 1 == 1"], **FAST)
    # The loop never ends, so only the per-test deadline lets the second test run and pass; the whole-run
    # deadline would have failed both (timed_out). No wall-clock measurement needed.
    assert result.passed == [False, True] and not result.timed_out


@pytest.mark.slow
def test_fork_bomb_is_contained_and_cleaned_up():
    code = ("import os\ndef f():\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n")
    result = run_tests(code, ["f()"], **FAST)
    assert result.passed == [False]
    # Nothing left behind: no process of the program's own uid (root runs), else no runner at all (other
    # sandboxes on a shared machine are not this one's).
    uid = result.isolation.get("uid")
    for _ in range(600):  # poll up to a minute (a loaded machine reaps slowly); a clean run exits at once
        if (_processes_of(uid) if uid is not None else _sandbox_processes()) == 0:
            break
        time.sleep(0.1)
    assert (_processes_of(uid) if uid is not None else _sandbox_processes()) == 0


def test_memory_hog_fails_its_test():
    result = run_tests("x = bytearray(8 * 1024 ** 3)", ["assert len(x) > 0"], **FAST)
    assert result.passed == [False]


def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    code = (f"import socket\ndef leak():\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "    s.sendall(b'secret')\n    return True\n")
    result = run_tests(code, ["assert leak()"], **FAST)
    server.setblocking(False)
    with pytest.raises(BlockingIOError):  # a completed handshake would wait in the backlog
        server.accept()
    server.close()
    assert result.passed == [False]


def test_writes_outside_the_temporary_directory_are_refused(tmp_path: Path):
    target = tmp_path / "pwned.txt"
    tmp_path.chmod(0o777)  # even a world-writable host directory stays out of reach
    code = f"def write():\n    open({str(target)!r}, 'w').write('x')\n    return True\n"
    result = run_tests(code, ["assert write()", "open('inside.txt', 'w').write('ok')"], **FAST)
    assert result.passed == [False, True]  # writing in its own directory is fine
    assert not target.exists()


def test_capabilities_are_reported():
    caps = capabilities()
    assert caps["works"] is True
    assert {"network_namespace", "landlock_abi"} <= set(caps) or "namespaces_error" in caps


@pytest.mark.slow
def test_code_task_rewards_and_metric():
    task = Code(protocol="espo", reward_workers=2, timeout=30.0, per_test_timeout=1.0)
    example = {"prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    good = "Sure.\n```python\ndef add(a, b):\n    return a + b\n```\n"
    half = "```python\ndef add(a, b):\n    return 3\n```"
    syntax = "```python\ndef add(a, b) return a + b\n```\n"
    trailing = good + "Hope this helps!"
    loop = "```python\ndef add(a, b):\n    while True:\n        pass\n```\n"
    texts = [good, half, syntax, trailing, loop, "", "\x00\ud800" * 10]
    parts = task.rewards(texts, [example] * len(texts))
    assert parts["format"] == [1.0, 1.0, 0.5, 0.0, 1.0, 0.0, 0.0]
    assert parts["tests"] == [1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert task.reward(texts[:2], [example] * 2) == [2.0, 1.5]
    assert task.scores([good, half, trailing], [example] * 3) == [1.0, 0.0, 1.0]  # metric: all tests pass

    d1 = Code(protocol="d1", reward_workers=1, timeout=30.0, per_test_timeout=1.5)
    tagged = "<reasoning>\nadd\n</reasoning>\n<answer>\n```python\ndef add(a, b):\n    return a + b\n```\n</answer>"
    assert d1.rewards([tagged, good], [example] * 2) == {"answer_format": [0.5, 0.0], "tests": [1.0, 1.0]}
    prompt = task.prompt(example)
    assert prompt[0]["role"] == "system" and prompt[1]["content"].endswith("Test cases: assert add(1, 2) == 3")


FORGE = "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'P')\n    except OSError:\n        pass\n"


def test_writing_to_inherited_descriptors_forges_no_pass():
    # Issue 13 bug 3: a program that wrote "P" to descriptors 3-63 reached the runner's verdict pipe.
    assert run_tests(FORGE, ["assert False", "import os; os._exit(0)"], **FAST).passed == [False, False]
    task = Code(protocol="espo", reward_workers=1, timeout=30.0, per_test_timeout=1.5)
    forged = f"```python\n{FORGE}```\n"
    assert task.rewards([forged], [{"prompt": "", "tests": ["assert False"]}])["tests"] == [0.0]


def test_disk_use_is_bounded_and_host_files_are_unreadable(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host data")
    secret.chmod(0o644)
    tmp_path.chmod(0o755)  # world-readable on the host: only Landlock keeps it out of reach
    fill = ("def fill():\n    for i in range(40):\n        with open(f'f{i}', 'wb') as fh:\n"
            "            fh.write(b'x' * (8 * 2**20))\n")
    result = run_tests(fill, ["fill()", f"open({str(secret)!r}).read()", "import heapq, fractions"],
                       **{**FAST, "cpu_seconds": 5, "timeout": 20.0, "per_test_timeout": 10.0}, disk_mb=32)
    caps = capabilities()
    if caps.get("disk_mb"):
        assert result.passed[0] is False  # 320 MB do not fit in a 32 MB tmpfs
    if caps.get("landlock_abi", 0) >= 1:
        assert result.passed[1] is False
    assert result.passed[2] is True  # the standard library stays importable


@pytest.mark.slow
def test_fork_bombs_do_not_starve_honest_programs_beside_them():
    # Issue 13 bug 2: with one process budget for every sandbox, 3 fork bombs among 8 programs zeroed honest
    # ones. Each program now runs as its own uid, so its budget is its own. The default worker count, but at
    # least 4 programs at once (the default on a 2-core machine is 1, which would run them one by one).
    task = Code(protocol="espo", reward_workers=max(default_workers(), 4), timeout=30.0, per_test_timeout=2.0)
    bomb = ("```python\nimport os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n```\n")
    honest = ("```python\nimport os\ndef add(a, b):\n    pid = os.fork()\n    if pid == 0:\n"
              "        os._exit(0)\n    os.waitpid(pid, 0)\n    return a + b\n```\n")
    texts = [bomb, honest, bomb, honest, honest, bomb, honest, honest]
    example = {"prompt": "", "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]}
    tests = task.rewards(texts, [example] * len(texts))["tests"]
    assert tests == [0.0 if t is bomb else 1.0 for t in texts]
