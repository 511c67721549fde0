"""The conditions users have, for fault scenarios: a database big enough that a defrag takes
seconds, clients writing all the while, and several agents whose cycles are out of step.

* :func:`load_live_data` fills a cluster with live data (1 MiB values, below etcd's 1.5 MiB
  ``--max-request-bytes``) and :func:`add_garbage` adds overwritten history, compacted, so a
  defragmentation has pages to reclaim and a lot to copy: seconds per member, longer than a
  short lock TTL.
* :class:`SteadyWriter` puts small keys at a steady rate through every member in turn during a
  sweep and records each acknowledged write and each error, so a test can check at the end that
  every write etcd acknowledged is still there.
* :func:`start_replicas` starts ``etcdagent run --local-member`` daemons, one per member, their
  cycles deliberately out of step (different intervals and start delays), with a maintenance
  window that is always open (:data:`ALWAYS_OPEN`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from etcdagent_testing.cluster import EtcdCluster
from etcdagent_testing.errors import EtcdRequestError
from etcdagent_testing.member import EtcdMember
from etcdagent_testing.scenario import SMALL_DB_ENV, agent_command

__all__ = [
    "ALWAYS_OPEN",
    "MIB",
    "Agent",
    "LoadResult",
    "SteadyWriter",
    "WriteError",
    "add_garbage",
    "agents_reaped",
    "compact",
    "db_sizes",
    "load_live_data",
    "spawn_agent",
    "start_replicas",
    "stop_agents",
]

MIB = 1024 * 1024
VALUE_SIZE = MIB  # etcd's --max-request-bytes is 1.5 MiB: one value per request, with room
_LOAD_WORKERS = 4  # puts in flight: etcd batches their fsyncs, ~3x the rate of one at a time

# A weekly window lasting the whole week (the longest a window may be, back to back with the
# next): planned maintenance may start at any time, and the "defrag would overrun the window's
# end" estimate only matters in the minutes before Sunday 00:00 UTC.
ALWAYS_OPEN = json.dumps([{"schedule": "0 0 * * 0", "duration": "7d", "timezone": "UTC"}])


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class LoadResult:
    """What a load wrote and how long it took (seconds of wall time)."""

    keys: int
    bytes: int
    seconds: float
    revision: int


def _put_values(
    cluster: EtcdCluster, keys: Sequence[str], value_size: int, workers: int
) -> LoadResult:
    """Put ``value_size`` random bytes under each key, ``workers`` requests in flight, spread
    over the running members (a follower forwards to the leader: every member does work)."""
    members = [m for m in cluster.members if m.running and not m.paused]
    # One random block, made unique per key by a prefix: urandom for each MiB costs more than
    # the put, and etcd does not compress, so repeated bytes cost it the same as random ones.
    block = os.urandom(value_size)
    start = time.monotonic()
    revisions: list[int] = []

    def put(index: int) -> int:
        key = keys[index]
        value = key.encode().ljust(32, b"\0") + block[32:]
        body = {"key": _b64(key), "value": _b64(value)}
        member = members[index % len(members)]
        answer = cluster.request(member, "kv/put", body, timeout=30)
        return int(answer["header"]["revision"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        revisions.extend(pool.map(put, range(len(keys))))
    return LoadResult(
        keys=len(keys),
        bytes=len(keys) * value_size,
        seconds=time.monotonic() - start,
        revision=max(revisions, default=0),
    )


def load_live_data(
    cluster: EtcdCluster,
    mib: int,
    *,
    prefix: str = "/live/",
    value_size: int = VALUE_SIZE,
    workers: int = _LOAD_WORKERS,
) -> LoadResult:
    """Write about ``mib`` MiB of live data: ``mib`` keys of 1 MiB each (by default).

    Live data is what a defrag copies, so it sets the defrag's duration.
    """
    count = max(1, mib * MIB // value_size)
    keys = [f"{prefix}{i:06d}" for i in range(count)]
    return _put_values(cluster, keys, value_size, workers)


def add_garbage(
    cluster: EtcdCluster,
    mib: int,
    *,
    prefix: str = "/churn/",
    keys: int = 4,
    value_size: int = VALUE_SIZE,
    workers: int = _LOAD_WORKERS,
) -> LoadResult:
    """Overwrite a few keys ``mib`` times in all, then compact: ``mib`` MiB of free pages
    (what a defrag reclaims), the live data barely changed."""
    count = max(1, mib * MIB // value_size)
    names = [f"{prefix}{i % keys:04d}" for i in range(count)]
    result = _put_values(cluster, names, value_size, workers)
    compact(cluster, result.revision)
    return result


def compact(cluster: EtcdCluster, revision: int | None = None) -> int:
    """Compact the whole history up to ``revision`` (default: the current one), physically:
    the call returns once every member's backend freed the old revisions' pages."""
    member = next(m for m in cluster.members if m.running and not m.paused)
    if revision is None:
        answer = cluster.request(member, "kv/range", {"key": _b64("/"), "limit": 1})
        revision = int(answer["header"]["revision"])
    try:
        cluster.request(
            member, "kv/compaction", {"revision": revision, "physical": True}, timeout=60
        )
    except EtcdRequestError as exc:
        if "compacted" not in exc.message:  # already compacted this far
            raise
    return revision


def db_sizes(cluster: EtcdCluster) -> dict[str, tuple[int, int]]:
    """member name -> (file size, bytes in use), from each member's status."""
    sizes: dict[str, tuple[int, int]] = {}
    for member in cluster.members:
        status = member.status()
        sizes[member.name] = (int(status["dbSize"]), int(status.get("dbSizeInUse", 0)))
    return sizes


# -- a client writing all the while ---------------------------------------------------------------


@dataclass
class WriteError:
    """A write that was not acknowledged: which member, which key, what went wrong."""

    member: str
    key: str
    error: str


@dataclass
class SteadyWriter:
    """Puts small keys at a steady rate through every member in turn, in a thread.

    Each write etcd acknowledged (HTTP 200 with a revision) goes into :attr:`acknowledged`;
    each one that failed or timed out into :attr:`errors` (it may or may not have been applied:
    it is not checked). Use as a context manager::

        with SteadyWriter(cluster) as writer:
            ...  # the sweep
        writer.assert_intact()
    """

    cluster: EtcdCluster
    rate: float = 20.0  # puts per second, attempted
    timeout: float = 2.0  # per put: a client's patience
    prefix: str = "/writer/"
    acknowledged: dict[str, str] = field(default_factory=dict)
    errors: list[WriteError] = field(default_factory=list)
    attempts: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _crash: BaseException | None = None

    def __enter__(self) -> SteadyWriter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="steady-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 10)
            self._thread = None
        if self._crash is not None:
            raise AssertionError("the steady writer crashed") from self._crash

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop(), in the test's thread
            self._crash = exc

    def _loop(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            members = [m for m in self.cluster.members if m.running and not m.paused]
            if members:
                self._write(members[turn % len(members)], turn)
                turn += 1
            next_at += period
            # Never sleep negative; a write slower than the period does not bunch the next ones.
            next_at = max(next_at, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def _write(self, member: EtcdMember, turn: int) -> None:
        key = f"{self.prefix}{turn:07d}"
        value = f"{member.name}-{turn}-{os.urandom(4).hex()}"
        self.attempts += 1
        try:
            self.cluster.request(
                member,
                "kv/put",
                {"key": _b64(key), "value": _b64(value)},
                timeout=self.timeout,
            )
        except (EtcdRequestError, requests.RequestException) as exc:
            self.errors.append(WriteError(member.name, key, f"{type(exc).__name__}: {exc}"[:300]))
            return
        self.acknowledged[key] = value

    def missing(self) -> dict[str, tuple[str, bytes | None]]:
        """Acknowledged writes that do not read back as written: key -> (written, read)."""
        wrong: dict[str, tuple[str, bytes | None]] = {}
        for key, value in self.acknowledged.items():
            got = self.cluster.get(key)
            if got != value.encode():
                wrong[key] = (value, got)
        return wrong

    def assert_intact(self) -> None:
        """Every acknowledged write reads back unchanged (linearizable reads), and the writer
        did get writes through: a writer that was refused all along proves nothing."""
        assert self.acknowledged, f"no write was acknowledged: {self.errors[:5]}"
        wrong = self.missing()
        assert not wrong, f"{len(wrong)} acknowledged writes lost or changed: {list(wrong)[:10]}"

    def summary(self) -> str:
        return (
            f"{self.attempts} writes, {len(self.acknowledged)} acknowledged, "
            f"{len(self.errors)} errors"
        )


# -- several agents --------------------------------------------------------------------------------


@dataclass
class Agent:
    """An agent process and the files it writes its output to (pipes would fill up)."""

    name: str
    proc: subprocess.Popen[str]
    stdout: Path
    stderr: Path

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The agent's JSON log lines."""
        found: list[dict[str, Any]] = []
        for line in self.err().splitlines():
            if line.startswith("{"):
                with suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        found.append(entry)
        return found


def spawn_agent(
    name: str, args: Sequence[str], directory: Path, env: Mapping[str, str] | None = None
) -> Agent:
    """`etcdagent <args>` as its own process, stdout and stderr to files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    out_path = directory / f"{name}.stdout"
    err_path = directory / f"{name}.stderr"
    full_env = {**os.environ, **SMALL_DB_ENV, **(env or {})}
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        proc = subprocess.Popen(
            agent_command(*args), stdout=out_file, stderr=err_file, text=True, env=full_env
        )
    return Agent(name, proc, out_path, err_path)


def start_replicas(
    cluster: EtcdCluster,
    directory: Path,
    env: Mapping[str, str],
    *,
    intervals: Sequence[str] = ("1s", "1.3s", "1.7s"),
    start_delays: Sequence[float] = (0.0, 0.4, 0.9),
) -> list[Agent]:
    """One `etcdagent run --local-member <name>` per member (a DaemonSet), each with its own
    interval and started after its own delay, so their cycles are out of step."""
    endpoints = ",".join(cluster.endpoints)
    agents: list[Agent] = []
    started = time.monotonic()
    for i, member in enumerate(cluster.members):
        delay = start_delays[i % len(start_delays)]
        time.sleep(max(0.0, started + delay - time.monotonic()))
        args = [
            "run", "--endpoints", endpoints, "--listen", "127.0.0.1:0",
            "--local-member", member.name, "--interval", intervals[i % len(intervals)],
            "--log-format", "json",
        ]  # fmt: skip
        agents.append(spawn_agent(f"replica-{member.name}", args, directory, env))
    return agents


def stop_agents(agents: Sequence[Agent], timeout: float = 60) -> None:
    """Kill whatever still runs (a test's cleanup; a test checks exits itself before)."""
    for agent in agents:
        if agent.proc.poll() is None:
            agent.proc.kill()
    for agent in agents:
        with suppress(subprocess.TimeoutExpired):
            agent.proc.wait(timeout=timeout)


@contextmanager
def agents_reaped(agents: list[Agent]) -> Iterator[list[Agent]]:
    """Whatever happens in the block, no agent process in ``agents`` outlives it."""
    try:
        yield agents
    finally:
        stop_agents(agents)
