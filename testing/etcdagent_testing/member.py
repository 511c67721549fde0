"""One etcd process of a test cluster: start, kill, freeze and thaw it, read what it logged."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etcdagent_testing.errors import EtcdHarnessError, PortClash
from etcdagent_testing.member_config import MemberLayout
from etcdagent_testing.processes import forget, hard_kill, spawn

if TYPE_CHECKING:
    from etcdagent_testing.cluster import EtcdCluster

__all__ = ["EtcdMember"]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EtcdMember:
    """One etcd process of an :class:`EtcdCluster`."""

    def __init__(self, cluster: EtcdCluster, layout: MemberLayout) -> None:
        self.cluster = cluster
        self.name = layout.name
        self.client_url = layout.client_url  # where it listens; the harness talks to it here
        self.advertised_client_url = layout.advertised_client_url  # what the member list says
        self.peer_url = layout.peer_url
        self.metrics_url = layout.metrics_url
        self.data_dir = layout.data_dir
        self.log_path = layout.log_path
        self.output_path = layout.output_path  # etcd's stdout/stderr
        self.args: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._member_id: int | None = None

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "down"
        return f"<EtcdMember {self.name} {self.client_url} pid={self.pid} {state}>"

    # -- process control ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the current (or last) process, None if never started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive (including when SIGSTOPped)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        """True between :meth:`stop` (SIGSTOP) and :meth:`cont` (SIGCONT)."""
        return self.running and self._paused

    def _spawn(self) -> None:
        if self.running:
            raise EtcdHarnessError(f"{self.name} is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(self.args, self.output_path)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise EtcdHarnessError(f"{self.name} is not running")
        self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the process and reap it (no-op if it is not running)."""
        if self._proc is not None:
            hard_kill(self._proc)
        self._paused = False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGSTOP the process (freeze it: it stops answering but keeps its sockets).

        Returns once every thread is stopped: a thread inside an uninterruptible call (an fsync
        on a loaded disk) stops only when the call returns, and until then the member may still
        answer (a harness test saw a status answered after the signal, in CI).
        """
        self._signal(signal.SIGSTOP)
        self._paused = True
        deadline = time.monotonic() + timeout
        while not self._all_threads_stopped():
            if time.monotonic() >= deadline:
                raise EtcdHarnessError(f"{self.name} did not stop within {timeout:g}s of SIGSTOP")
            time.sleep(0.01)

    def _all_threads_stopped(self) -> bool:
        """Whether /proc shows every thread of the process in the stopped state (T)."""
        assert self._proc is not None
        tasks = Path(f"/proc/{self._proc.pid}/task")
        try:
            stats = [(t / "stat").read_text() for t in tasks.iterdir()]
        except OSError:
            return True  # gone, or not Linux: nothing left to wait for
        # The state follows the parenthesised command name, which may itself hold spaces.
        return all(stat.rsplit(")", 1)[1].split()[0] in ("T", "t") for stat in stats)

    def cont(self) -> None:
        """SIGCONT a process frozen by :meth:`stop`."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def terminate(self, timeout: float = 10) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if self._paused:
            proc.send_signal(signal.SIGCONT)
            self._paused = False
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        hard_kill(proc)

    def restart(self, wait: bool = True) -> None:
        """Kill the process if it runs, start it again with the same data dir and ports.

        With ``wait`` the call returns once the member answers status and knows a leader.
        """
        self.kill()
        self._spawn()
        if wait:
            self.cluster.wait_healthy(self.cluster.start_timeout, members=[self])

    # -- startup checks --------------------------------------------------------------------------

    def raise_if_exited(self) -> None:
        """Raise (with log tails) if the process was started and has exited since.

        A member that died on "address already in use" raises :class:`PortClash`: a port
        probed free was taken before etcd bound it, and the cluster retries on new ports.
        """
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        detail = f"etcd {self.name} exited with code {proc.returncode}\n{self.log_tail()}"
        forget(proc)
        texts = (_tail(self.output_path, 200), _tail(self.log_path, 200))
        if any("address already in use" in text for text in texts):
            raise PortClash(detail)
        raise EtcdHarnessError(detail)

    def wait_serving_peers(self, deadline: float) -> None:
        """Wait until etcd logs that it serves peer traffic (or dies, or time is up)."""
        offset = 0
        while True:
            self.raise_if_exited()
            try:
                with self.log_path.open("rb") as log:
                    log.seek(offset)
                    chunk = log.read()
            except FileNotFoundError:
                chunk = b""
            if b"serving peer traffic" in chunk:
                return
            # re-read from the last complete line next time
            offset += chunk.rfind(b"\n") + 1
            if time.monotonic() >= deadline:
                return  # wait_healthy reports the failure with the logs
            time.sleep(0.005)

    # -- queries -------------------------------------------------------------------------------

    def status(self, timeout: float = 5) -> dict[str, Any]:
        """``/v3/maintenance/status`` of this member (with a root token where etcd needs one)."""
        return self.cluster.member_status(self, timeout=timeout)

    def member_id(self) -> int:
        """This member's raft id (``header.member_id`` of its status answer)."""
        if self._member_id is None:
            self._member_id = int(self.status()["header"]["member_id"])
        return self._member_id

    def log_lines(self) -> list[dict[str, Any]]:
        """etcd's JSON log lines for this member (all runs, oldest first)."""
        result: list[dict[str, Any]] = []
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return result
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                result.append(entry)
        return result

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of etcd's log and of its stdout/stderr, for failure reports."""
        parts = [f"--- {self.name} log {self.log_path}", _tail(self.log_path, lines)]
        output = _tail(self.output_path, lines)
        if output.strip():
            parts += [f"--- {self.name} output {self.output_path}", output]
        return "\n".join(parts)
