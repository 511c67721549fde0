"""The local resources a test cluster takes: loopback ports and etcd processes.

Every etcd process is started in its own session and tracked in a module-level registry; an
``atexit`` hook kills whatever is still alive, so a crashed test does not leak processes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["clean_env", "forget", "free_ports", "hard_kill", "kill_all_etcd_processes", "spawn"]

_registry_lock = threading.Lock()
_registry: dict[int, subprocess.Popen[bytes]] = {}


def _register(proc: subprocess.Popen[bytes]) -> None:
    with _registry_lock:
        _registry[proc.pid] = proc


def forget(proc: subprocess.Popen[bytes]) -> None:
    """Stop tracking ``proc`` (it is dead and reaped, nothing is left to kill at exit)."""
    with _registry_lock:
        _registry.pop(proc.pid, None)


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def clean_env() -> dict[str, str]:
    """The environment without ETCD_* variables (etcd reads them as flags)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ETCD_") or k == "ETCD_UNSUPPORTED_ARCH"
    }


def spawn(args: Sequence[str], output_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in a session of its own (stdout and stderr appended to ``output_path``),
    tracked until :func:`hard_kill` or :func:`forget`.

    Its own session, so that a SIGKILL of the group reaches whatever it forks, and a Ctrl-C
    at the terminal reaches only the test run, which then cleans up in order.
    """
    with output_path.open("ab") as out:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=clean_env(),
        )
    _register(proc)
    return proc


def hard_kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGCONT + SIGKILL the process (and its session), then reap it."""
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    forget(proc)


def kill_all_etcd_processes() -> None:
    """Kill every etcd process this harness started that is still alive (used at exit)."""
    with _registry_lock:
        procs = list(_registry.values())
    for proc in procs:
        hard_kill(proc)


atexit.register(kill_all_etcd_processes)
