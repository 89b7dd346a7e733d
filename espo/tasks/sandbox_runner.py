"""The process that runs untrusted code for ``espo.tasks.sandbox`` (started as a script, never imported).

It reads one job (JSON on stdin) before it restricts anything, then confines itself, in this order, to what
the kernel allows (each step is reported back, none is silently assumed):

1. namespaces: a new network namespace (no interface but a down loopback: no network) and a new PID
   namespace (when its first process dies, the kernel kills every process left inside, fork bombs included);
   unprivileged users get them through a user namespace, root gets them directly;
2. root drops to ``nobody`` (so the process-count limit applies and root-owned files are read-only);
3. Landlock: file-system writes only beneath the job's temporary directory (and to ``/dev/null``); with
   Landlock ABI >= 4 no TCP bind or connect; with ABI >= 6 no signals or abstract sockets beyond itself;
4. rlimits: CPU seconds, address space, file size, process count, open files, no core dumps.

Each test then runs in a forked child with its own process group and a per-test deadline; the child
reports success by writing one byte to a pipe after the test's last statement, so ``sys.exit(0)`` or
``os._exit(0)`` in the program does not count as a pass. The result is one JSON line on stdout.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags):
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def enter_namespaces(report):
    """New network and PID namespaces; returns True when the PID namespace needs a fork to take effect."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET | CLONE_NEWPID
    try:
        if uid == 0:
            _unshare(flags)
        else:
            _unshare(CLONE_NEWUSER | flags)
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
        report["network_namespace"] = report["pid_namespace"] = True
        return True
    except OSError as exc:
        report["namespaces_error"] = str(exc)
    try:  # at least no network
        _unshare(CLONE_NEWNET if uid == 0 else CLONE_NEWUSER | CLONE_NEWNET)
        report["network_namespace"] = True
    except OSError:
        pass
    return False


def drop_root(tmp, report):
    if os.geteuid() != 0:
        return
    os.chown(tmp, NOBODY, NOBODY)
    for root, dirs, files in os.walk(tmp):
        for name in dirs + files:
            os.chown(os.path.join(root, name), NOBODY, NOBODY)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    report["dropped_root"] = True


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(tmp, report):
    """Writes only beneath ``tmp``; no TCP; no signals out of the domain (as far as the ABI goes)."""
    syscall = _libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        report["landlock_abi"] = 0
        return
    write_file, truncate = 1 << 1, 1 << 14
    fs = write_file | sum(1 << b for b in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
    if abi >= 2:
        fs |= 1 << 13  # refer (rename/link across directories)
    if abi >= 3:
        fs |= truncate
    attr = _RulesetAttr(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # net: bind|connect; scoped: unix|signal
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = syscall(444, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        report["landlock_error"] = os.strerror(ctypes.get_errno())
        return
    for path, allowed in ((tmp, fs), ("/dev/null", write_file | (truncate if abi >= 3 else 0))):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneath(allowed, fd)
        if syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            report["landlock_error"] = os.strerror(ctypes.get_errno())
            return
        os.close(fd)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if syscall(446, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
        report["landlock_error"] = os.strerror(ctypes.get_errno())
        return
    os.close(ruleset)
    report["landlock_abi"] = int(abi)


def set_limits(limits):
    mb = 2**20
    pairs = [
        (resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1)),
        (resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2),
        (resource.RLIMIT_FSIZE, (limits["file_size_mb"] * mb,) * 2),
        (resource.RLIMIT_NPROC, (limits["max_processes"],) * 2),
        (resource.RLIMIT_NOFILE, (64, 64)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    for which, value in pairs:
        resource.setrlimit(which, value)


def run_one(code, test, per_test):
    """Runs ``code`` then ``test`` in a forked child; True when the test ran to its end in time."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only ever leaves through os._exit
        try:
            os.close(read_end)
            os.setpgid(0, 0)
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            scope = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(compile(code, "<solution>", "exec"), scope)
            exec(compile(test, "<test>", "exec"), scope)
            os.write(write_end, b"P")
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    os.close(write_end)
    passed, deadline = False, time.monotonic() + per_test
    while True:
        left = deadline - time.monotonic()
        ready = select.select([read_end], [], [], max(0.0, left))[0] if left > 0 else []
        if not ready:
            break
        data = os.read(read_end, 1)
        if data == b"P":
            passed = True
        if not data or passed:
            break
    os.close(read_end)
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass
    os.waitpid(pid, 0)
    return passed


def main():
    job = json.loads(sys.stdin.read())
    tmp, report = job["tmp"], {}
    os.chdir(tmp)
    if enter_namespaces(report):
        pid = os.fork()  # the child is PID 1 of the new namespace
        if pid:
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        # If the host kills the process above at its deadline, this one (and with it the namespace) dies too.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    drop_root(tmp, report)
    landlock(tmp, report)
    set_limits(job["limits"])
    if report.get("pid_namespace"):
        # PID 1 ignores signals it has no handler for; orphans are reaped by the namespace teardown.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    results = [run_one(job["code"], test, job["per_test_seconds"]) for test in job["tests"]]
    sys.stdout.write(json.dumps({"passed": results, "isolation": report}) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
