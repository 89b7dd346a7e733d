"""The process that runs untrusted code for ``espo.rewards.sandbox`` (started as a script, never imported).

It reads one job (JSON on stdin) before it restricts anything, then confines itself, in this order, to what
the kernel allows (each step is reported back, none is silently assumed):

1. namespaces: a new network namespace (no interface but a down loopback: no network), a new PID
   namespace (when its first process dies, the kernel kills every process left inside, fork bombs included)
   and a new mount namespace in which the job's directory becomes a size-limited tmpfs (``disk_mb``: the
   program cannot fill the host's disk); unprivileged users get them through a user namespace, root directly;
2. root drops to a uid of the program's own (``UID_BASE`` + the runner's host PID, unique among running
   sandboxes), so the process-count limit is this program's alone: a fork bomb beside it cannot starve an
   honest program (an unprivileged user's sandboxes each count processes in their own user namespace);
3. Landlock: file-system writes only beneath the job's directory (and to ``/dev/null``); reads only there
   and in the interpreter's standard library, site-packages and the system's shared libraries, so host
   files (the repository, home directories, /etc, /proc) are unreadable; with ABI >= 4 no TCP bind or
   connect; with ABI >= 6 no signals or abstract sockets beyond itself;
4. rlimits: CPU seconds, address space, file size, process count, open files, no core dumps.

Each test then runs in a forked child with its own process group, every inherited descriptor but
/dev/null on 0-2 closed, and a per-test deadline. The verdict is the child's exit status as the runner sees
it: a pass is an exit with a code drawn at random for that test after its last statement, so
``sys.exit(0)``, ``os._exit(0)`` or writing to descriptors does not count as a pass. The result is one
JSON line on stdout, which the program cannot reach.

What no in-process harness prevents: a program that searches the interpreter's own memory for the exit
code (it lives in the runner's stack frame) or returns objects that compare equal to anything.
"""

import ctypes
import json
import os
import resource
import secrets
import select
import signal
import site
import sys
import sysconfig
import time

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
# Programs run as UID_BASE + the runner's PID on the host (PIDs are at most 2**22): no real account is there.
UID_BASE = 1_500_000_000
# Read-only, beneath these (where they exist): the shared libraries C extensions load.
SYSTEM_LIBS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
# Imported before the privilege drop when the program's uid could not read the standard library (an
# interpreter under a private home directory, such as pyenv's in /root): what solutions commonly import.
COMMON_MODULES = ("math", "cmath", "re", "string", "collections", "collections.abc", "itertools", "functools",
                  "operator", "heapq", "bisect", "array", "copy", "json", "random", "statistics", "fractions",
                  "decimal", "datetime", "time", "typing", "dataclasses", "enum", "hashlib", "textwrap",
                  "unicodedata", "numbers", "struct", "binascii", "base64", "calendar", "pprint", "queue",
                  "contextlib", "io")
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
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS
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


def bound_disk(tmp, disk_mb, report):
    """Mounts a ``disk_mb`` tmpfs on ``tmp`` (inside the new mount namespace, invisible to the host)."""
    mount = _libc.mount
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    # Private first: a mount under a shared / would otherwise propagate to the host's namespace.
    if mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0 or mount(
            b"tmpfs", tmp.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, f"size={int(disk_mb)}m,mode=0700".encode()) != 0:
        report["disk_error"] = os.strerror(ctypes.get_errno())
        return
    os.chdir(tmp)  # the old working directory is the directory underneath the mount
    report["disk_mb"] = int(disk_mb)


def drop_root(tmp, uid, report):
    """Root becomes ``uid`` (its own, so its process count is its own) and owns only ``tmp``."""
    if os.geteuid() != 0:
        return
    os.chown(tmp, uid, uid)
    for root, dirs, files in os.walk(tmp):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, uid)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    report["dropped_root"] = True
    report["uid"] = uid


def preload_if_unreadable(report):
    """Imports ``COMMON_MODULES`` now when a directory above the standard library is closed to other users."""
    path = os.path.dirname(os.__file__)
    while path != os.path.dirname(path):
        if not os.stat(path).st_mode & 0o001:  # no search permission for others: imports would fail later
            for name in COMMON_MODULES:
                try:
                    __import__(name)
                except ImportError:
                    pass
            report["preloaded"] = len(COMMON_MODULES)
            return
        path = os.path.dirname(path)


def readable_paths():
    """Directories a program may read beneath: the interpreter's library, site-packages, system libraries."""
    paths = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
             os.path.dirname(os.__file__), *site.getsitepackages(), *SYSTEM_LIBS}
    dynload = os.path.join(os.path.dirname(os.__file__), "lib-dynload")
    return sorted(p for p in paths | {dynload} if os.path.isdir(p))


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(tmp, readable, report):
    """Writes beneath ``tmp`` only, reads there and beneath ``readable`` (path -> O_PATH descriptor, opened
    before the privilege drop, closed here); no TCP; no signals out of the domain (as far as the ABI goes)."""
    try:
        _landlock(tmp, readable, report)
    finally:
        for fd in readable.values():
            os.close(fd)


def _landlock(tmp, readable, report):
    syscall = _libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        report["landlock_abi"] = 0
        return
    execute, write_file, read_file, read_dir, truncate = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 14
    read = execute | read_file | read_dir
    fs = read | write_file | sum(1 << b for b in range(4, 13))  # remove, make char/dir/reg/sock/fifo/block/sym
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
    devices = [("/dev/null", read_file | write_file | (truncate if abi >= 3 else 0)),
               ("/dev/urandom", read_file), ("/dev/zero", read_file)]
    for path, allowed in [(tmp, fs), *devices, *((p, read) for p in readable)]:
        fd = readable[path] if path in readable else os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneath(allowed, fd)
        failed = syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)) != 0
        if path not in readable:
            os.close(fd)
        if failed:
            report["landlock_error"] = os.strerror(ctypes.get_errno())
            return
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
    passed_code = 3 + secrets.randbelow(250)  # 3..252: never 0, 1 (exceptions) or 2 (usage)
    pid = os.fork()
    if pid == 0:  # the child: only ever leaves through os._exit
        try:
            os.setpgid(0, 0)
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # nothing of the runner's stays open
            scope = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(compile(code, "<solution>", "exec"), scope)
            exec(compile(test, "<test>", "exec"), scope)
            os._exit(passed_code)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    status = wait_for(pid, per_test)
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass
    if status is None:
        _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == passed_code


def wait_for(pid, seconds):
    """The child's wait status if it ends within ``seconds``, else None (it is still running)."""
    deadline = time.monotonic() + seconds
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.005))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def main():
    job = json.loads(sys.stdin.read())
    tmp, report = job["tmp"], {}
    uid = UID_BASE + os.getpid()  # the host PID: unique among running sandboxes
    os.chdir(tmp)
    if enter_namespaces(report):
        pid = os.fork()  # the child is PID 1 of the new namespace
        if pid:
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        # If the host kills the process above at its deadline, this one (and with it the namespace) dies too.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    elif os.geteuid() == 0:
        try:  # at least a mount namespace for the disk bound
            _unshare(CLONE_NEWNS)
        except OSError as exc:
            report["disk_error"] = str(exc)
    if "disk_error" not in report:
        bound_disk(tmp, job["limits"]["disk_mb"], report)
    if os.geteuid() == 0:
        preload_if_unreadable(report)
    # Opened before the drop: the program's uid may not be able to reach them by path (they stay readable
    # through the descriptors, which the ruleset holds; see preload_if_unreadable for what that allows).
    readable = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in readable_paths()}
    drop_root(tmp, uid, report)
    landlock(tmp, readable, report)
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
