"""Observe: turn the cluster into a ClusterSnapshot.

Reads only. Members are found from the first configured endpoint that answers (then the members
the last discovery found), then every member is asked concurrently for its status and metrics,
so a 5-member cluster costs about one member's round trips. A member that does not answer
becomes a row with its error, never an exception: the caller decides what a missing member
means. ``daemon.local_member`` is resolved here, where asking a URL who answers on it is allowed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from etcdagent.errors import (
    ClusterUnavailableError,
    EtcdAuthError,
    EtcdError,
    EtcdTLSError,
    EtcdUnreachableError,
)
from etcdagent.etcd.client import ClusterClient
from etcdagent.etcd.versions import hashkv_missing
from etcdagent.models import Alarm, Member, MemberList, MemberMetrics, MemberStatus
from etcdagent.observe.defrag_records import read_defrag_records
from etcdagent.observe.snapshot import (
    ClusterSnapshot,
    DefragRecord,
    MemberSnapshot,
    names_member,
)


class _AllFailedTransiently(Exception):
    def __init__(self, errors: list[EtcdError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def discovery_endpoints(cluster: ClusterClient) -> list[str]:
    """The configured endpoints, then (with discovery) the client URLs of the members the last
    successful discovery found: when the configured ones are one restarting member (kubeadm's
    127.0.0.1 and the node's own URL), the others still answer for the member list, and only
    the restarting member looks down instead of the whole cluster."""
    configured = cluster.endpoints
    if not cluster.settings.connection.discover:
        return configured
    return configured + [u for u in dict.fromkeys(cluster.known_urls) if u not in configured]


def discover(cluster: ClusterClient) -> tuple[MemberList, str]:
    """The member list from the first endpoint that answers (``discovery_endpoints``).

    Each round asks every endpoint once; rounds repeat under the retry deadline only while every
    failure is transient, so a typo fails fast and a restarting member gets a second chance.
    """

    def one_round() -> tuple[MemberList, str]:
        errors: list[EtcdError] = []
        for endpoint in discovery_endpoints(cluster):
            try:
                return cluster.member(endpoint).member_list(retry=False), endpoint
            except EtcdAuthError as exc:
                if exc.operation == "authenticate" and not exc.transient:
                    raise  # a wrong password: the same on every endpoint (etcd 3.5.30+, 3.6)
                errors.append(exc)
            except EtcdError as exc:
                errors.append(exc)
        if all(e.transient for e in errors):
            raise _AllFailedTransiently(errors)
        raise ClusterUnavailableError(
            _no_endpoint_message(errors), transient=any(e.transient for e in errors)
        )

    retrying = Retrying(
        stop=stop_after_delay(cluster.settings.connection.retry_deadline),
        wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
        retry=retry_if_exception(lambda e: isinstance(e, _AllFailedTransiently)),
        sleep=cluster.sleep,
        reraise=True,
    )
    try:
        return retrying(one_round)
    except _AllFailedTransiently as exc:
        raise ClusterUnavailableError(_no_endpoint_message(exc.errors)) from None


def _no_endpoint_message(errors: list[EtcdError]) -> str:
    answered = any(not isinstance(e, EtcdUnreachableError | EtcdTLSError) for e in errors)
    # "answered" only when none did: a member that refuses (no token without a leader) answers.
    lead = "no etcd endpoint could list the members" if answered else "no etcd endpoint answered"
    return f"{lead}: " + "; ".join(str(e) for e in errors)


def _assign_endpoints(cluster: ClusterClient, members: tuple[Member, ...]) -> dict[int, str]:
    """Which URL to use for each member: a configured one if it is the member's, else (with
    discovery) the member's first advertised client URL."""
    configured = cluster.endpoints
    assigned: dict[int, str] = {}
    for member in members:
        own = [u.rstrip("/") for u in member.client_urls]
        match = next((ep for ep in configured if ep in own), None)
        if match is not None:
            assigned[member.id] = match
    unmatched = [ep for ep in configured if ep not in assigned.values()]
    if not cluster.settings.connection.discover:
        # An endpoint that is no member's advertised URL (a VIP, a DNS alias): ask who it is.
        for endpoint in unmatched:
            try:
                status = cluster.member(endpoint).status()
            except EtcdError:
                continue
            assigned.setdefault(status.member_id, endpoint)
        return assigned
    for member in members:
        if member.id not in assigned and member.client_urls:
            assigned[member.id] = member.client_urls[0].rstrip("/")
    return assigned


def resolve_local_member(
    cluster: ClusterClient, members: tuple[Member, ...]
) -> tuple[int | None, str | None]:
    """The member ``daemon.local_member`` names, and why none for now when that may pass.

    By name or advertised client URL first (no request); a URL no member advertises (kubeadm:
    members advertise https://<node-ip>:2379, the agent reaches its own on 127.0.0.1) names the
    member answering there, asked for its status. While that URL does not answer (the local
    etcd restarting) the member that last answered there is kept, if it is still a member.
    """
    local = cluster.settings.daemon.local_member
    if local is None:
        return None, None
    named = next((m for m in members if names_member(m, local)), None)
    member_id: int | None = named.id if named is not None else None
    unresolved: str | None = None
    if member_id is None and "://" in local:
        url = local.rstrip("/")
        ids = {m.id for m in members}
        try:
            # Once: a member that does not answer must not slow every observation down.
            answered = cluster.member(url).status(retry=False).member_id
        except EtcdError as exc:
            remembered = cluster.answered_on(url)
            if remembered in ids:
                member_id = remembered
            else:
                unresolved = f"no member advertises {url}, and it did not answer ({exc})"
        else:
            cluster.remember_answer(url, answered)
            member_id = answered if answered in ids else None  # else plainly none
    return member_id, unresolved


def _observe_member(
    cluster: ClusterClient, member: Member, endpoint: str | None, with_metrics: bool = True
) -> MemberSnapshot:
    if not member.started:
        return MemberSnapshot(
            member=member,
            endpoint=None,
            error="member was added but has not started (no client URLs)",
        )
    if endpoint is None:
        return MemberSnapshot(
            member=member,
            endpoint=None,
            error="not observed: none of the configured endpoints is this member's and "
            "discovery is off",
        )
    status: MemberStatus | None = None
    metrics: MemberMetrics | None = None
    error = metrics_error = None
    silent = False
    try:
        # A member advertising a malformed URL is that member's error, not the snapshot's.
        client = cluster.member(endpoint, member.name)
    except EtcdError as exc:
        return MemberSnapshot(member=member, endpoint=endpoint, error=str(exc))
    try:
        status = client.status()
        if status.member_id != member.id:
            error = (
                f"{endpoint}: answers as member {status.member_id:x}, not {member.id_hex} "
                "(a stale or mismatched endpoint?)"
            )
            status = None
    except EtcdError as exc:
        error = str(exc)
        silent = isinstance(exc, EtcdUnreachableError | EtcdTLSError)
    if not with_metrics:
        metrics_error = "not scraped (status only)"
    elif silent:
        # Asking again on another path would only double the wait for a member that is down.
        metrics_error = "not scraped: the member does not answer"
    else:
        try:
            metrics = client.metrics()
        except EtcdError as exc:
            metrics_error = str(exc)
    return MemberSnapshot(
        member=member,
        endpoint=endpoint,
        status=status,
        metrics=metrics,
        error=error,
        metrics_error=metrics_error,
        hashkv_missing=hashkv_missing(status.version) if status is not None else None,
    )


def _check_credentials(cluster: ClusterClient, snapshot: ClusterSnapshot) -> None:
    """A wrong password fails now, not at the first maintenance step that needs it.

    Only while a quorum answers, and on a member that has a leader: a token goes through raft,
    so asking without one would only wait for a timeout.
    """
    if not cluster.settings.auth.username:
        return
    if sum(s.reachable for s in snapshot.voting) < snapshot.quorum:
        return
    for snap in snapshot.voting:
        if (
            snap.endpoint
            and snap.status is not None
            and snap.status.leader
            and cluster.member(snap.endpoint).check_credentials()
        ):
            return


def _read_records(
    cluster: ClusterClient, snaps: tuple[MemberSnapshot, ...]
) -> tuple[dict[int, DefragRecord], str | None]:
    """The defrag records, from the first answering member that has a leader (a range goes
    through raft: without a leader it would only wait); or why they could not be read."""
    for snap in snaps:
        if snap.endpoint and snap.status is not None and snap.status.leader:
            try:
                return read_defrag_records(cluster.member(snap.endpoint, snap.member.name)), None
            except EtcdError as exc:
                return {}, f"defrag records not read: {exc}"
    return {}, "defrag records not read: no member with a leader answered"


def take_snapshot(
    cluster: ClusterClient, *, workers: int = 16, with_metrics: bool = True
) -> ClusterSnapshot:
    """Observe every member once. Raises ClusterUnavailableError only when no endpoint answers.

    ``workers`` bounds how many members are asked at once (1 = one after another, the baseline
    of bench/bench_status.py). ``with_metrics=False`` skips the /metrics scrapes (~150 KB each,
    rendered by the member) and the defrag records: for tight polling loops that only need the
    statuses.
    """
    member_list, via = discover(cluster)
    members = member_list.members
    cluster.known_urls = tuple(m.client_urls[0].rstrip("/") for m in members if m.client_urls)
    assigned = _assign_endpoints(cluster, members)
    local_id, local_unresolved = resolve_local_member(cluster, members)
    cluster.local_endpoint = assigned.get(local_id) if local_id is not None else None
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(members)))) as pool:
        futures = [
            pool.submit(_observe_member, cluster, m, assigned.get(m.id), with_metrics)
            for m in members
        ]
        snaps = tuple(f.result() for f in futures)
    # Alarms come from the statuses' "errors": answered locally, so they stay visible without a
    # leader, when the alarm list call (it goes through raft) would fail.
    alarms: dict[tuple[int, str], Alarm] = {}
    for snap in snaps:
        for alarm in snap.status.alarms if snap.status else ():
            alarms.setdefault((alarm.member_id, alarm.alarm.value), alarm)
    answered = any(s.status is not None for s in snaps)
    records_error: str | None = None
    if with_metrics and answered:
        records, records_error = _read_records(cluster, snaps)
        snaps = tuple(
            s.model_copy(update={"defrag_record": records[s.member.id]})
            if s.member.id in records
            else s
            for s in snaps
        )
    snapshot = ClusterSnapshot(
        taken_at=cluster.clock(),
        cluster_id=member_list.cluster_id,
        discovered_via=via,
        members=tuple(sorted(snaps, key=lambda s: (s.member.name or "~", s.member.id))),
        alarms=tuple(alarms.values()),
        alarms_error=None if answered else "no member answered its status",
        defrag_records_error=records_error,
        local_member_id=local_id,
        local_member_unresolved=local_unresolved,
    )
    _check_credentials(cluster, snapshot)
    return snapshot
