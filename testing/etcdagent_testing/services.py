"""Prometheus and its Pushgateway, started by tests on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serve_on_free_port(
    argv: Callable[[int, int], list[str]],
    log_path: Path,
    *,
    what: str,
    ready_path: str = "/-/ready",
    timeout: float = 20.0,
    attempts: int = 3,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``argv(port, attempt)`` until one answers ``ready_path``; yield (url, process).

    Retried on new ports: a free port can be taken between probing and binding. The process is
    always stopped at the end; its log is in ``log_path``.
    """
    for attempt in range(attempts):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv(port, attempt), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if _ready(url + ready_path):
                    yield url, proc
                    return
                time.sleep(0.05)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    raise RuntimeError(f"{what} did not start: {log_path.read_text(errors='replace')[-3000:]}")
