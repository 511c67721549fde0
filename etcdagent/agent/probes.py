"""/healthz and /readyz over several clusters: one answer for the prober, one line per cluster.

One agent process may maintain several clusters (the main etcd and the events etcd), each with
its own loop. Kubernetes probes the process: it is ready only when every cluster's loop can
reach its etcd, and alive only when every loop still turns, so the plain answer is the worst of
all. The body says which cluster is the problem (``events: etcd not reached for 95s``), and
``?cluster=NAME`` asks about one, for a person or a per-cluster check. With a single cluster the
answer is the one-line ``ok`` or reason it always was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from etcdagent.settings.clusters import DEFAULT_CLUSTER

# A check answers None when all is well, else why not (one line, shown to the prober).
Check = Callable[[], str | None]
Checks = Mapping[str, Check]


@dataclass(frozen=True)
class ProbeAnswer:
    ok: bool
    text: str
    known: bool = True  # False: the cluster asked for is not one of this process's


def _run(check: Check) -> str | None:
    try:
        problem = check()
    except Exception as exc:  # a broken check must answer, not kill the request
        problem = f"check failed: {type(exc).__name__}: {exc}"
    return None if problem is None else (" ".join(problem.split()) or "not ok")


def probe(checks: Checks, cluster: str | None = None) -> ProbeAnswer:
    """The answer for all clusters (``cluster`` None) or for the one named."""
    if cluster is not None:
        check = checks.get(cluster)
        if check is None:
            names = ", ".join(checks) or "none"
            return ProbeAnswer(False, f"no cluster {cluster!r} here (clusters: {names})", False)
        problem = _run(check)
        return ProbeAnswer(problem is None, problem or "ok")
    problems = {name: _run(check) for name, check in checks.items()}
    ok = all(p is None for p in problems.values())
    if len(problems) <= 1:
        return ProbeAnswer(ok, next(iter(problems.values()), None) or "ok")
    return ProbeAnswer(ok, "\n".join(f"{name}: {p or 'ok'}" for name, p in problems.items()))


def as_checks(check: Check | Checks | None, name: str = DEFAULT_CLUSTER) -> dict[str, Check]:
    """A single check (one cluster, as a test or a one-cluster caller passes it) or none."""
    if check is None:
        return {}
    if callable(check):
        return {name: check}
    return dict(check)
