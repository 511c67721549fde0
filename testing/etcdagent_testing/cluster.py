"""Real etcd clusters for tests: local processes on loopback, fast raft timings, throwaway dirs.

Usage::

    with EtcdCluster(3) as cluster:
        cluster.put("k", "v")
        follower = cluster.followers()[0]
        follower.kill()
        cluster.wait_healthy()          # the two others still agree on a leader
        follower.restart()

The pieces live next door: each member's process in :mod:`etcdagent_testing.member`, its
ports, files and flags in :mod:`etcdagent_testing.member_config`, the process registry that
keeps a crashed test from leaking etcd processes in :mod:`etcdagent_testing.processes`, and
the gateway requests (``put``, ``get``, auth...) in :mod:`etcdagent_testing.gateway`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import requests

from etcdagent_testing import processes
from etcdagent_testing.binaries import etcd_binary, etcd_version
from etcdagent_testing.certs import TLSFiles, make_tls_files
from etcdagent_testing.errors import EtcdHarnessError, EtcdRequestError, PortClash
from etcdagent_testing.gateway import GatewayRequests
from etcdagent_testing.member import EtcdMember
from etcdagent_testing.member_config import EtcdFlags, lay_out_members

__all__ = ["EtcdCluster"]

_START_ATTEMPTS = 3


class EtcdCluster(GatewayRequests):
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
        advertise_client_urls: Mapping[str, str] | None = None,
    ) -> None:
        """``advertise_client_urls``: member name -> the client URL it advertises instead of the
        one it listens on (a proxy in front of it, ``status_proxy``); the harness's own requests
        still go to the member directly."""
        if size < 1:
            raise ValueError("size must be >= 1")
        super().__init__()
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
        self.advertise_client_urls = dict(advertise_client_urls or {})
        self._owns_base_dir = base_dir is None
        self.base_dir: Path = base_dir if base_dir is not None else Path()
        self.cluster_token = f"etcdagent-{uuid.uuid4().hex[:12]}"
        self.members: list[EtcdMember] = []
        self.tls_files: TLSFiles | None = None
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
                except PortClash as exc:
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
        # called through its module so that a test can substitute it to force a port clash
        layouts = lay_out_members(
            self.base_dir,
            self.size,
            iter(processes.free_ports(n_ports)),
            scheme=self.scheme,
            separate_metrics=self.separate_metrics,
            advertise_client_urls=self.advertise_client_urls,
        )
        flags = EtcdFlags(
            binary=self.binary,
            initial_cluster_token=f"{self.cluster_token}-{attempt}",
            quota_backend_bytes=self.quota_backend_bytes,
            tls_files=self.tls_files,
            client_cert_auth=self.client_cert_auth,
            extra_args=self.extra_args,
        )
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in layouts)
        self.members = [EtcdMember(self, layout) for layout in layouts]
        for member, layout in zip(self.members, layouts, strict=True):
            member.args = flags.command_line(layout, initial_cluster)
        deadline = time.monotonic() + self.start_timeout
        for member in self.members:
            # One at a time: a new member asks every peer URL whether it is already
            # bootstrapped, with a 1 s timeout per peer; a peer whose port is open but not
            # served yet costs that whole second. Started in turn, each peer is either not
            # listening (refused at once) or already serving: the cluster is up in ~0.2 s.
            member._spawn()
            member.wait_serving_peers(deadline)
        self.wait_healthy(max(1.0, deadline - time.monotonic()))
        for member in self.members:
            member.member_id()
        self._wait_schema_settled(deadline)

    def _wait_schema_settled(self, deadline: float) -> None:
        """On 3.6+, wait until every member reports its release's storage schema.

        A fresh 3.6 member reports no storage version, then 3.5.0, until the cluster version is
        set and the schema migrated, a moment after the leader is elected. Tests that read the
        storage version (or compare the agent's status with etcd's own) flaked on that window.
        """
        parts = self.version.split(".")
        if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
            return
        if (int(parts[0]), int(parts[1])) < (3, 6):
            return
        want = f"{parts[0]}.{parts[1]}.0"
        seen: dict[str, str | None] = {}
        while True:
            for member in self.members:
                try:
                    seen[member.name] = self.member_status(member, timeout=1).get("storageVersion")
                except (requests.RequestException, EtcdRequestError):
                    seen[member.name] = None
            if all(v == want for v in seen.values()):
                return
            if time.monotonic() >= deadline:
                raise EtcdHarnessError(f"storage schema not {want} in time: {seen}")
            time.sleep(0.1)

    def _kill_members(self) -> None:
        for member in self.members:
            member.kill()

    def stop(self) -> None:
        """Kill every member (paused ones too), reap them, remove the base dir if ours.

        Idempotent.
        """
        self._kill_members()
        self._close_sessions()
        if self._owns_base_dir and self._started and not self._stopped:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self._stopped = self._started

    # -- health ----------------------------------------------------------------------------------

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
            for member in watched:
                member.raise_if_exited()
            live = [m for m in targets if m.running and not m.paused]
            leaders: dict[str, int] = {}
            problem = ""
            for member in live:
                try:
                    status = self.member_status(member, timeout=1)
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
