"""Real etcd clusters for tests: local processes on loopback, fast raft timings, throwaway dirs.

Usage::

    with EtcdCluster(3) as cluster:
        cluster.put("k", "v")
        follower = cluster.followers()[0]
        follower.kill()
        cluster.wait_healthy()          # the two others still agree on a leader
        follower.restart()

Every etcd process is started in its own session and tracked in a module-level registry; an
``atexit`` hook kills whatever is still alive, so a crashed test does not leak processes.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from etcdagent_testing.binaries import etcd_binary, etcd_version
from etcdagent_testing.certs import TLSFiles, make_tls_files

__all__ = [
    "EtcdCluster",
    "EtcdHarnessError",
    "EtcdMember",
    "EtcdRequestError",
    "TLSFiles",
    "kill_all_etcd_processes",
]

_HEARTBEAT_MS = 50
_ELECTION_MS = 500
_START_ATTEMPTS = 3
_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
_MAX_TXN_BYTES = 1024 * 1024  # stay below --max-request-bytes (1.5 MiB default)
_TOKEN_MAX_AGE = 60.0  # simple tokens live 300 s by default; refresh well before


# --------------------------------------------------------------------------------------------
# process registry


_registry_lock = threading.Lock()
_registry: dict[int, subprocess.Popen[bytes]] = {}


def _register(proc: subprocess.Popen[bytes]) -> None:
    with _registry_lock:
        _registry[proc.pid] = proc


def _unregister(proc: subprocess.Popen[bytes]) -> None:
    with _registry_lock:
        _registry.pop(proc.pid, None)


def _hard_kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGCONT + SIGKILL the process (and its session), then reap it."""
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _unregister(proc)


def kill_all_etcd_processes() -> None:
    """Kill every etcd process this module started that is still alive (used at exit)."""
    with _registry_lock:
        procs = list(_registry.values())
    for proc in procs:
        _hard_kill(proc)


atexit.register(kill_all_etcd_processes)


# --------------------------------------------------------------------------------------------
# errors


class EtcdHarnessError(RuntimeError):
    """The harness could not start or drive the cluster."""


class EtcdRequestError(RuntimeError):
    """A gateway request answered a non-200 status."""

    def __init__(self, url: str, status: int, body: str) -> None:
        self.url = url
        self.status = status
        self.body = body
        parsed: Any = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
        self.json: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        super().__init__(f"POST {url} -> HTTP {status}: {body.strip()}")

    @property
    def message(self) -> str:
        """etcd's error message (``error`` on 3.4/3.5, ``message`` on 3.6), or the raw body."""
        msg = self.json.get("message") or self.json.get("error")
        return str(msg) if msg else self.body


class _PortClash(EtcdHarnessError):
    pass


# --------------------------------------------------------------------------------------------
# helpers


def _free_ports(count: int) -> list[int]:
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


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _clean_env() -> dict[str, str]:
    """The environment without ETCD_* variables (etcd reads them as flags)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ETCD_") or k == "ETCD_UNSUPPORTED_ARCH"
    }


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# member


class EtcdMember:
    """One etcd process of an :class:`EtcdCluster`."""

    def __init__(
        self,
        cluster: EtcdCluster,
        name: str,
        *,
        client_url: str,
        peer_url: str,
        metrics_url: str | None,
        data_dir: Path,
        log_path: Path,
        output_path: Path,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.client_url = client_url
        self.peer_url = peer_url
        self.metrics_url = metrics_url
        self.data_dir = data_dir
        self.log_path = log_path
        self.output_path = output_path  # etcd's stdout/stderr
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
        with self.output_path.open("ab") as out:
            proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_clean_env(),
            )
        self._proc = proc
        self._paused = False
        _register(proc)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise EtcdHarnessError(f"{self.name} is not running")
        self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the process and reap it (no-op if it is not running)."""
        if self._proc is not None:
            _hard_kill(self._proc)
        self._paused = False

    def stop(self) -> None:
        """SIGSTOP the process (freeze it: it stops answering but keeps its sockets)."""
        self._signal(signal.SIGSTOP)
        self._paused = True

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
        _hard_kill(proc)

    def restart(self, wait: bool = True) -> None:
        """Kill the process if it runs, start it again with the same data dir and ports.

        With ``wait`` the call returns once the member answers status and knows a leader.
        """
        self.kill()
        self._spawn()
        if wait:
            self.cluster.wait_healthy(self.cluster.start_timeout, members=[self])

    # -- queries -------------------------------------------------------------------------------

    def status(self, timeout: float = 5) -> dict[str, Any]:
        """``/v3/maintenance/status`` of this member."""
        return self.cluster.request(self, "maintenance/status", {}, timeout=timeout)

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


# --------------------------------------------------------------------------------------------
# cluster


class EtcdCluster:
    """A local etcd cluster of ``size`` members (m1..mN) on 127.0.0.1."""

    def __init__(
        self,
        size: int = 3,
        *,
        base_dir: Path | None = None,
        binary: Path | None = None,
        quota_backend_bytes: int | None = None,
        tls: bool = False,
        client_cert_auth: bool = True,
        auth: bool = False,
        root_password: str = "rootpw-secret",
        separate_metrics: bool = False,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self.binary = Path(binary) if binary is not None else etcd_binary()
        self.version = etcd_version(self.binary)
        self.quota_backend_bytes = quota_backend_bytes
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.auth = auth
        self.root_password = root_password
        self.separate_metrics = separate_metrics
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self._owns_base_dir = base_dir is None
        self.base_dir: Path = base_dir if base_dir is not None else Path()
        self.cluster_token = f"etcdagent-{uuid.uuid4().hex[:12]}"
        self.members: list[EtcdMember] = []
        self.tls_files: TLSFiles | None = None
        self.auth_enabled = False
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_lock = threading.Lock()
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"<EtcdCluster {self.version} size={self.size} {self.endpoints}>"

    @property
    def endpoints(self) -> list[str]:
        """Client URLs in member order."""
        return [m.client_url for m in self.members]

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> EtcdCluster:
        """Start every member, wait for a healthy cluster with a leader, set up auth if asked."""
        if self._started:
            raise EtcdHarnessError("cluster already started")
        self._started = True
        if self._owns_base_dir:
            self.base_dir = Path(tempfile.mkdtemp(prefix="etcdagent-test-"))
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.tls:
                self.tls_files = make_tls_files(self.base_dir / "tls")
            last: Exception | None = None
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._start_once(attempt)
                    break
                except _PortClash as exc:
                    last = exc
                    self._kill_members()
            else:
                raise EtcdHarnessError(
                    f"etcd could not start after {_START_ATTEMPTS} attempts: {last}"
                )
            if self.auth:
                self._enable_auth()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_once(self, attempt: int) -> None:
        n_ports = self.size * (3 if self.separate_metrics else 2)
        ports = iter(_free_ports(n_ports))
        scheme = self.scheme
        members: list[EtcdMember] = []
        for i in range(1, self.size + 1):
            name = f"m{i}"
            data_dir = self.base_dir / f"{name}.etcd"
            log_path = self.base_dir / f"{name}.log"
            output_path = self.base_dir / f"{name}.out"
            if data_dir.exists():
                shutil.rmtree(data_dir)
            for path in (log_path, output_path):
                path.unlink(missing_ok=True)
            members.append(
                EtcdMember(
                    self,
                    name,
                    client_url=f"{scheme}://127.0.0.1:{next(ports)}",
                    peer_url=f"{scheme}://127.0.0.1:{next(ports)}",
                    metrics_url=(
                        f"http://127.0.0.1:{next(ports)}" if self.separate_metrics else None
                    ),
                    data_dir=data_dir,
                    log_path=log_path,
                    output_path=output_path,
                )
            )
        self.members = members
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for member in members:
            member.args = self._args(member, initial_cluster, attempt)
        deadline = time.monotonic() + self.start_timeout
        for member in members:
            # One at a time: a new member asks every peer URL whether it is already
            # bootstrapped, with a 1 s timeout per peer; a peer whose port is open but not
            # served yet costs that whole second. Started in turn, each peer is either not
            # listening (refused at once) or already serving: the cluster is up in ~0.2 s.
            member._spawn()
            self._wait_serving_peers(member, deadline)
        self.wait_healthy(max(1.0, deadline - time.monotonic()))
        for member in members:
            member.member_id()

    def _wait_serving_peers(self, member: EtcdMember, deadline: float) -> None:
        """Wait until ``member`` logs that it serves peer traffic (or dies, or time is up)."""
        offset = 0
        while True:
            self._check_alive([member])
            try:
                with member.log_path.open("rb") as log:
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

    def _args(self, member: EtcdMember, initial_cluster: str, attempt: int) -> list[str]:
        args = [
            str(self.binary),
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-token", f"{self.cluster_token}-{attempt}",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(_HEARTBEAT_MS),
            "--election-timeout", str(_ELECTION_MS),
            "--logger", "zap",
            "--log-outputs", str(member.log_path),
        ]  # fmt: skip
        if member.metrics_url is not None:
            args += ["--listen-metrics-urls", member.metrics_url]
        if self.quota_backend_bytes is not None:
            args += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
        if self.tls_files is not None:
            tf = self.tls_files
            args += [
                "--cert-file", str(tf.server_cert),
                "--key-file", str(tf.server_key),
                "--peer-cert-file", str(tf.server_cert),
                "--peer-key-file", str(tf.server_key),
                "--peer-trusted-ca-file", str(tf.ca_file),
                "--peer-client-cert-auth",
            ]  # fmt: skip
            if self.client_cert_auth:
                # --trusted-ca-file alone already makes etcd (3.4 and 3.5) demand a client
                # cert, so it is only passed together with --client-cert-auth.
                args += ["--trusted-ca-file", str(tf.ca_file), "--client-cert-auth"]
        args += self.extra_args
        return args

    def _kill_members(self) -> None:
        for member in self.members:
            member.kill()

    def stop(self) -> None:
        """Kill every member (paused ones too), reap them, remove the base dir if ours.

        Idempotent.
        """
        self._kill_members()
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()
        if self._owns_base_dir and self._started and not self._stopped:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self._stopped = self._started

    # -- health ----------------------------------------------------------------------------------

    def _check_alive(self, members: Sequence[EtcdMember]) -> None:
        for member in members:
            proc = member._proc
            if proc is None or proc.poll() is None:
                continue
            detail = f"etcd {member.name} exited with code {proc.returncode}\n{member.log_tail()}"
            _unregister(proc)
            texts = (_tail(member.output_path, 200), _tail(member.log_path, 200))
            if any("address already in use" in text for text in texts):
                raise _PortClash(detail)
            raise EtcdHarnessError(detail)

    def wait_healthy(
        self, timeout: float = 30.0, members: Sequence[EtcdMember] | None = None
    ) -> None:
        """Wait until every given member that runs (and is not paused) answers status and all
        report the same non-zero leader. Members default to the whole cluster.

        Raises :class:`EtcdHarnessError` (with log tails) on timeout or if a process died
        while we waited for it.
        """
        targets = list(self.members if members is None else members)
        watched = [m for m in targets if m.running]
        deadline = time.monotonic() + timeout
        problem = "no member running"
        while True:
            self._check_alive(watched)
            live = [m for m in targets if m.running and not m.paused]
            leaders: dict[str, int] = {}
            problem = ""
            for member in live:
                try:
                    status = self.request(member, "maintenance/status", {}, timeout=1)
                except (requests.RequestException, EtcdRequestError) as exc:
                    problem = f"{member.name}: {exc}"
                    break
                leaders[member.name] = int(status.get("leader", 0))
                if member._member_id is None:
                    member._member_id = int(status["header"]["member_id"])
            if not problem:
                distinct = set(leaders.values())
                if not live:
                    problem = "no member running"
                elif 0 in distinct:
                    problem = f"no leader yet: {leaders}"
                elif len(distinct) > 1:
                    problem = f"members disagree on the leader: {leaders}"
                else:
                    return
            if time.monotonic() >= deadline:
                tails = "\n".join(m.log_tail() for m in targets)
                raise EtcdHarnessError(
                    f"cluster not healthy after {timeout:.1f}s: {problem}\n{tails}"
                )
            time.sleep(0.05)

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The current leader (asks the live members; waits up to ``timeout`` for one)."""
        deadline = time.monotonic() + timeout
        problem = ""
        while True:
            for member in self.members:
                if not member.running or member.paused:
                    continue
                try:
                    leader_id = int(member.status(timeout=1).get("leader", 0))
                except (requests.RequestException, EtcdRequestError) as exc:
                    problem = f"{member.name}: {exc}"
                    continue
                if not leader_id:
                    problem = f"{member.name} knows no leader"
                    continue
                match = next((c for c in self.members if c._member_id == leader_id), None)
                if match is None:
                    problem = f"leader id {leader_id} is not one of our members"
                elif not match.running or match.paused:
                    # The survivors still name a leader that is dead or frozen: wait for the
                    # election instead of handing the test a member that cannot lead.
                    problem = f"{member.name} still follows {match.name}, which is down"
                else:
                    return match
            if time.monotonic() >= deadline:
                raise EtcdHarnessError(f"no leader after {timeout:.1f}s: {problem}")
            time.sleep(0.05)

    def followers(self) -> list[EtcdMember]:
        """Every member except the current leader (in member order, running or not)."""
        leader = self.leader()
        return [m for m in self.members if m is not leader]

    # -- HTTP ------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A per-thread ``requests.Session`` carrying the cluster's TLS client cert and CA.

        ``trust_env`` is off: with it on, ``REQUESTS_CA_BUNDLE`` silently replaces
        ``session.verify``.
        """
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Ignore REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (they would override session.verify),
            # proxies and netrc: we only ever talk to 127.0.0.1.
            session.trust_env = False
            if self.tls_files is not None:
                session.verify = str(self.tls_files.ca_file)
                session.cert = (str(self.tls_files.client_cert), str(self.tls_files.client_key))
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def request(
        self,
        member: EtcdMember,
        path: str,
        body: dict[str, Any],
        *,
        token: str | None = None,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """POST ``body`` to ``member.client_url + "/v3/" + path`` and return the JSON answer.

        Raises :class:`EtcdRequestError` on a non-200 answer (the body is in the message).
        """
        url = f"{member.client_url}/v3/{path.lstrip('/')}"
        headers = {"Authorization": token} if token else None
        resp = self.session().post(url, json=body, headers=headers, timeout=timeout)
        if resp.status_code != 200:
            raise EtcdRequestError(url, resp.status_code, resp.text)
        result = resp.json() if resp.content else {}
        if not isinstance(result, dict):
            raise EtcdRequestError(url, resp.status_code, resp.text)
        return result

    def _default_member(self) -> EtcdMember:
        for member in self.members:
            if member.running and not member.paused:
                return member
        raise EtcdHarnessError("no member is running")

    # -- auth ------------------------------------------------------------------------------------

    def _enable_auth(self) -> None:
        member = self._default_member()
        self.request(member, "auth/role/add", {"name": "root"})
        self.request(member, "auth/user/add", {"name": "root", "password": self.root_password})
        self.request(member, "auth/user/grant", {"user": "root", "role": "root"})
        self.request(member, "auth/enable", {})
        self.auth_enabled = True

    def root_token(self, member: EtcdMember | None = None, *, fresh: bool = False) -> str:
        """A root token obtained from ``member`` (cached per member for a minute)."""
        member = member or self._default_member()
        now = time.monotonic()
        with self._tokens_lock:
            cached = self._tokens.get(member.name)
        if cached is not None and not fresh and now - cached[1] < _TOKEN_MAX_AGE:
            return cached[0]
        answer = self.request(
            member, "auth/authenticate", {"name": "root", "password": self.root_password}
        )
        token = str(answer["token"])
        with self._tokens_lock:
            self._tokens[member.name] = (token, now)
        return token

    def _authed(self, member: EtcdMember, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``request`` with a root token when auth is on (refreshed once on a bad token)."""
        if not self.auth_enabled:
            return self.request(member, path, body)
        try:
            return self.request(member, path, body, token=self.root_token(member))
        except EtcdRequestError as exc:
            if exc.status != 401 and "token" not in exc.message:
                raise
        return self.request(member, path, body, token=self.root_token(member, fresh=True))

    # -- KV helpers ------------------------------------------------------------------------------

    def put(self, key: str, value: str | bytes, member: EtcdMember | None = None) -> int:
        """Put ``key`` through the gateway; return the new revision."""
        member = member or self._default_member()
        answer = self._authed(member, "kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(answer["header"]["revision"])

    def get(self, key: str, member: EtcdMember | None = None) -> bytes | None:
        """Linearizable get of ``key``; None when absent."""
        member = member or self._default_member()
        answer = self._authed(member, "kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", ""))

    def write_garbage(
        self, n_keys: int, value_size: int, rounds: int = 1, *, txn_ops: int = _MAX_TXN_OPS
    ) -> int:
        """Write ``n_keys`` keys ``/garbage/NNNNNNNN`` of ``value_size`` random bytes, ``rounds``
        times over (old revisions become free pages after a compaction: fragmentation).

        Puts are batched into ``/v3/kv/txn`` requests of up to ``txn_ops`` puts (and ~1 MiB):
        each transaction is ONE revision. ``txn_ops=1`` sends plain puts, one revision per key
        (~400-450 puts/s on loopback, fsync-bound). Returns the last revision. Raises
        :class:`EtcdRequestError` (HTTP 429, "database space exceeded") at the quota.
        """
        if n_keys < 1 or rounds < 1 or txn_ops < 1:
            raise ValueError("n_keys, rounds and txn_ops must be >= 1")
        member = self._default_member()
        per_put = value_size * 4 // 3 + 64
        batch = max(1, min(txn_ops, _MAX_TXN_OPS, _MAX_TXN_BYTES // per_put))
        revision = 0
        for _ in range(rounds):
            for start in range(0, n_keys, batch):
                puts = [
                    {"key": _b64(f"/garbage/{i:08d}"), "value": _b64(os.urandom(value_size))}
                    for i in range(start, min(start + batch, n_keys))
                ]
                if len(puts) == 1:
                    answer = self._authed(member, "kv/put", puts[0])
                else:
                    ops = [{"requestPut": put} for put in puts]
                    answer = self._authed(member, "kv/txn", {"success": ops})
                revision = int(answer["header"]["revision"])
        return revision

    def alarms(self, member: EtcdMember | None = None) -> list[dict[str, Any]]:
        """The active alarms (``[{"memberID": "...", "alarm": "NOSPACE"}]``)."""
        member = member or self._default_member()
        answer = self._authed(member, "maintenance/alarm", {"action": "GET"})
        alarms = answer.get("alarms") or []
        return [a for a in alarms if isinstance(a, dict)]
