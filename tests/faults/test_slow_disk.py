"""Scenario 12: a slow disk under one member.

How the slowness is produced (honestly, by the kernel's filesystem path, not by a threshold):
one follower's data directory is moved onto a FUSE passthrough filesystem served by this file
(run as ``python tests/faults/test_slow_disk.py BACKING MOUNTPOINT CONTROL``, with fusepy and
libfuse 2). Every call is passed to the real directory underneath; ``fsync``/``fdatasync`` of a
file first sleeps for as many seconds as the CONTROL file (outside the mount) holds, while it
exists. The member's WAL fsyncs and bbolt commits therefore take that long in wall time, which
is what etcd's ``etcd_disk_wal_fsync_duration_seconds`` and
``etcd_disk_backend_commit_duration_seconds`` histograms record. Removing CONTROL is the disk
becoming fast again.

Limits: only fsync is slowed (reads and writes go at the speed of a Python FUSE server, which is
slower than the disk but far below the gates); a real slow disk also slows reads, page-cache
writeback and the other members' disks sharing the device. The agent reads the latency from
etcd's own histograms, so what the test checks is the agent's reaction to a member whose fsync
p99 crosses the gate, made by a member that really waits for its fsyncs.

What else was evaluated on the development machine: a device-mapper ``delay`` target needs the
kernel's device-mapper driver (``/dev/mapper/control`` is missing in the sandbox, no
``modprobe``); LD_PRELOAD cannot interpose etcd's syscalls (a static Go binary). Without
``/dev/fuse``, libfuse 2 or fusepy the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from etcdagent_testing import EtcdCluster, EtcdMember
from etcdagent_testing.clock import FakeClock
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags
from etcdagent_testing.scenario import assert_healthy_end, fragment, seed_keys, wait_for

from etcdagent.agent.daemon import Daemon
from etcdagent.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ClusterFactory = Callable[..., EtcdCluster]

NIGHT = datetime(2026, 11, 30, 2, 5, tzinfo=UTC)  # inside the 02:00-03:00 UTC window
FSYNC_DELAY = 1.0  # seconds per fsync on the slow member: gates are 0.5 s (WAL), 0.25 s (commit)
LOOKBACK = 60.0


# -- the FUSE passthrough (runs in its own process) ---------------------------------------------


def _serve(backing: str, mountpoint: str, control: str) -> None:  # pragma: no cover - subprocess
    fuse: Any = importlib.import_module("fuse")

    def full(path: str) -> str:
        return os.path.join(backing, path.lstrip("/"))

    def slow() -> None:
        try:
            delay = float(Path(control).read_text().strip() or "0")
        except (OSError, ValueError):
            return
        if delay > 0:
            time.sleep(delay)

    class Passthrough:
        def __call__(self, op: str, *args: Any) -> Any:
            handler = getattr(self, op, None)
            if handler is None:
                raise fuse.FuseOSError(errno.ENOSYS)
            return handler(*args)

        def access(self, path: str, mode: int) -> None:
            if not os.access(full(path), mode):
                raise fuse.FuseOSError(errno.EACCES)

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(full(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(full(path), uid, gid)

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.lstat(full(path))
            keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink")
            attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
            attrs.update(st_size=st.st_size, st_uid=st.st_uid, st_blocks=st.st_blocks)
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(full(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(full(path))

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(full(path), mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(full(path))

        def unlink(self, path: str) -> None:
            os.unlink(full(path))

        def rename(self, old: str, new: str) -> None:
            os.rename(full(old), full(new))

        def link(self, target: str, name: str) -> None:
            os.link(full(name), full(target))

        def symlink(self, name: str, target: str) -> None:
            os.symlink(target, full(name))

        def statfs(self, path: str) -> dict[str, Any]:
            sv = os.statvfs(full(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
            return {
                k: getattr(sv, k) for k in (*keys, "f_files", "f_flag", "f_frsize", "f_namemax")
            }

        def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
            os.utime(full(path), times)

        def open(self, path: str, flags: int) -> int:
            return os.open(full(path), flags)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            # Read-write: bbolt reads the file it created through mmap on this handle.
            return os.open(full(path), os.O_RDWR | os.O_CREAT, mode)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(full(path), length)

        def flush(self, path: str, fh: int) -> None:
            return None

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            slow()
            if datasync:
                os.fdatasync(fh)
            else:
                os.fsync(fh)

        def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
            return None

    fuse.FUSE(
        Passthrough(),
        mountpoint,
        foreground=True,
        nothreads=False,
        big_writes=True,
        max_write=131072,
    )


# -- helpers -----------------------------------------------------------------------------------


def _fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if importlib.util.find_spec("fuse") is None:
        return "fusepy is not installed (pip install fusepy)"
    if ctypes.util.find_library("fuse") is None:
        return "libfuse 2 is not installed (apt-get install libfuse2 fuse)"
    return None


def _unmount(mountpoint: Path) -> None:
    for command in (["fusermount", "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run(command, capture_output=True, check=False, timeout=30)
        if result.returncode == 0:
            return


@contextlib.contextmanager
def slow_disk_under(member: EtcdMember, control: Path) -> Iterator[None]:
    """Restart ``member`` with its data directory on the fsync-delaying FUSE passthrough."""
    missing = _fuse_missing()
    if missing:
        message = f"no way to slow one member's fsync here: {missing}"
        if os.environ.get("CI"):
            # CI installs FUSE (scripts/setup --test-tools): missing there is a broken setup.
            pytest.fail(message + " (run bash scripts/setup --test-tools)")
        pytest.skip(message)
    mountpoint = member.data_dir
    backing = mountpoint.with_name(mountpoint.name + ".backing")
    member.terminate()
    mountpoint.rename(backing)
    mountpoint.mkdir(mode=0o700)
    server_log = (member.cluster.base_dir / "fuse.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, __file__, str(backing), str(mountpoint), str(control)],
        stdin=subprocess.DEVNULL,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: os.path.ismount(mountpoint), timeout=15, what="the FUSE mount")
        member.restart()
        yield
    finally:
        member.kill()
        _unmount(mountpoint)
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        server_log.close()


def _settings(cluster: EtcdCluster) -> Settings:
    return load_settings(
        {
            "connection": {"endpoints": ",".join(cluster.endpoints)},
            "windows": [{"schedule": "0 2 * * *", "duration": "1h", "timezone": "UTC"}],
            "compaction": {"retain_revisions": 0},
            "defrag": {"min_db_size": "1MiB", "wait_between": "100ms"},
            "daemon": {"listen": "127.0.0.1:0", "interval": "1s", "lookback": f"{LOOKBACK}s"},
        }
    )


def _gate(daemon: Daemon, gate: str) -> float | None:
    return daemon.registry.get_sample_value("etcdagent_gate_blocking", {"gate": gate})


def _caught_up(cluster: EtcdCluster, member: EtcdMember) -> bool:
    leader = cluster.leader()
    want = int(leader.status().get("raftIndex", 0))
    status = member.status()
    return int(status.get("raftAppliedIndex", status.get("raftIndex", 0))) >= want


# -- the scenario ------------------------------------------------------------------------------


def test_slow_fsync_blocks_maintenance_until_the_disk_recovers(
    etcd_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    cluster = etcd_cluster_factory(3)
    known = seed_keys(cluster)
    fragment(cluster)
    slow_member = cluster.followers()[-1]
    control = tmp_path / "fsync-delay"

    with slow_disk_under(slow_member, control):
        clock = FakeClock(NIGHT)
        daemon = Daemon(lambda: _settings(cluster), clock=clock)
        try:
            control.write_text(f"{FSYNC_DELAY}\n")  # the disk turns slow
            assert daemon.cycle()
            cluster.write_garbage(n_keys=60, value_size=512, rounds=1, txn_ops=1)
            wait_for(lambda: _caught_up(cluster, slow_member), timeout=60, what="catch-up")
            clock.advance(15)
            assert daemon.cycle()

            decision = daemon.last_decision
            assert decision is not None
            assert "wal_fsync_p99" in decision.blocking, decision.gates
            assert slow_member.name in decision.blocking["wal_fsync_p99"]
            assert _gate(daemon, "wal_fsync_p99") == 1
            assert _gate(daemon, "backend_commit_p99") == 1
            p99 = daemon.registry.get_sample_value(
                "etcdagent_member_wal_fsync_p99_seconds",
                {"member": slow_member.name, "member_id": f"{slow_member.member_id():x}"},
            )
            assert p99 is not None and p99 > 0.5
            assert defrag_intervals(cluster) == []

            control.unlink()  # the disk is fast again
            cluster.put("/after/slow", "x")
            wait_for(lambda: _caught_up(cluster, slow_member), timeout=60, what="catch-up")
            assert daemon.cycle()  # the last sample with the slow fsyncs in it
            clock.advance(LOOKBACK + 15)  # a quiet interval: the slow samples leave the lookback
            opened = False
            for _ in range(4):
                cluster.write_garbage(n_keys=20, value_size=512, rounds=1, txn_ops=1)
                assert daemon.cycle()
                decision = daemon.last_decision
                assert decision is not None
                if "wal_fsync_p99" not in decision.blocking and daemon.last_report is not None:
                    opened = True
                    break
                clock.advance(15)
            assert opened, daemon.last_decision
            assert _gate(daemon, "wal_fsync_p99") == 0
            assert _gate(daemon, "backend_commit_p99") == 0
            assert daemon.last_decision is not None and daemon.last_decision.blocking == {}
            runs = daemon.registry.get_sample_value(
                "etcdagent_maintenance_runs_total", {"trigger": "window", "result": "done"}
            )
            assert runs == 1
            intervals = defrag_intervals(cluster)
            assert {i.member for i in intervals} == {m.name for m in cluster.members}
            assert max_concurrent_defrags(intervals) == 1
            assert_healthy_end(cluster, known)
        finally:
            daemon.cluster.close()


if __name__ == "__main__":  # the FUSE server, started by slow_disk_under()
    _serve(sys.argv[1], sys.argv[2], sys.argv[3])
