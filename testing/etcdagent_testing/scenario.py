"""Building blocks for fault scenarios: data to keep, garbage to reclaim, the agent as a process,
and the checks every scenario ends with (cluster healthy, data intact, never two defrags at once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from etcdagent.settings import Settings, load_settings
from etcdagent_testing.cluster import EtcdCluster
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags

# Test databases are small: lower the "worth it" size so the default rule applies to them.
SMALL_DB_ENV = {"ETCDAGENT_DEFRAG__MIN_DB_SIZE": "1MiB", "ETCDAGENT_DEFRAG__WAIT_BETWEEN": "200ms"}


def seed_keys(cluster: EtcdCluster, count: int = 30, prefix: str = "/known/") -> dict[str, str]:
    """Keys whose values every scenario must find unchanged at the end."""
    known = {f"{prefix}{i:03d}": f"value-{i}-{os.urandom(4).hex()}" for i in range(count)}
    for key, value in known.items():
        cluster.put(key, value)
    return known


def fragment(cluster: EtcdCluster, n_keys: int = 200, value_size: int = 16 * 1024) -> int:
    """Overwritten garbage, so compaction and defragmentation have work; returns the revision."""
    return cluster.write_garbage(n_keys=n_keys, value_size=value_size, rounds=4)


def assert_intact(cluster: EtcdCluster, known: Mapping[str, str]) -> None:
    for key, value in known.items():
        got = cluster.get(key)
        assert got == value.encode(), f"{key}: {got!r} != {value!r}"


def assert_never_two_defrags(cluster: EtcdCluster) -> None:
    """From etcd's own log lines, not from the agent's account."""
    intervals = defrag_intervals(cluster)
    assert max_concurrent_defrags(intervals) <= 1, intervals


def assert_healthy_end(cluster: EtcdCluster, known: Mapping[str, str], timeout: float = 30) -> None:
    """What every fault scenario ends with."""
    cluster.wait_healthy(timeout=timeout)
    assert_intact(cluster, known)
    assert_never_two_defrags(cluster)


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "etcdagent", *args]


def start_agent(
    *args: str, env: Mapping[str, str] | None = None, small_db: bool = True
) -> subprocess.Popen[str]:
    """`etcdagent <args>` as its own process (signals, locks and leases behave for real)."""
    full_env = {**os.environ, **(SMALL_DB_ENV if small_db else {}), **(env or {})}
    return subprocess.Popen(
        agent_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def run_agent_json(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 150
) -> tuple[int, dict[str, Any], str]:
    """Run a one-shot command with --output json; (exit code, report, stderr)."""
    proc = start_agent(*args, "--output", "json", env=env)
    out, err = proc.communicate(timeout=timeout)
    assert out, err[-3000:]
    return proc.returncode, json.loads(out), err


def wait_for(check: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll something the test cannot inject (etcd's own progress, a process's output)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def first_defrag_finished(cluster: EtcdCluster) -> bool:
    return any(i.end is not None for i in defrag_intervals(cluster))


def members_defragmented(cluster: EtcdCluster) -> Sequence[str]:
    return [i.member for i in defrag_intervals(cluster) if i.end is not None]


def daemon_settings(endpoints: Sequence[str], **groups: Any) -> Settings:
    """Fast, deterministic daemon settings: short timeouts, no window, revision retention.
    Each keyword is a settings group merged over these (a list, e.g. windows, replaces)."""
    base: dict[str, Any] = {
        "connection": {
            "endpoints": ",".join(endpoints),
            "request_timeout": "2s",
            "retry_deadline": "500ms",
        },
        "windows": [],
        "compaction": {"retain_revisions": 0},
        "defrag": {"min_db_size": "1MiB", "wait_between": "100ms"},
        "daemon": {"listen": "127.0.0.1:0", "interval": "1s"},
    }
    for group, values in groups.items():
        base[group] = {**base.get(group, {}), **values} if isinstance(values, dict) else values
    return load_settings(base)
