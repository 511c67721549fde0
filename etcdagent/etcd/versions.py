"""What differs between etcd versions, in one place.

The etcd layer talks to etcd 3.4, 3.5 and 3.6 (the versions the tests run: 3.4.23, 3.5.1, 3.5.30,
3.6.14). Every fact below is one the code relies on, with the versions it was measured on; the
client, the auth layer, the error translation and the /metrics reader take it from here, so
support for another version starts with this module rather than with a new branch in each of them.

Facts that live elsewhere, because their module may not import the etcd layer:

* ``models.MemberStatus.db_size_quota``: the status answer carries ``dbSizeQuota`` from etcd 3.6
  on; before that the quota is only in /metrics (``etcd_server_quota_backend_bytes``), which
  ``observe.snapshot.MemberSnapshot.quota`` falls back to.
* ``models``: etcd 3.4 omits every zero value of a status answer (no ``revision`` on a fresh store,
  no ``errors``, no ``isLearner``), and 3.4 answers ``{}`` to the alarm list when there is no
  alarm; the models give every field a default.
* ``act.lock_requests``: the lease and txn answers the maintenance lock relies on, measured
  identical on 3.4.23 and 3.5.1 (which also answer lease grant and keepalive without a token;
  3.5.30 and 3.6.14 answer nothing without one, ``TOKENLESS_PATHS``).
"""

from __future__ import annotations

from typing import Any

from etcdagent.models import release

API_PATH = "/v3/"
"""The gateway's URL prefix on etcd >= 3.4 (older versions served /v3beta/ or /v3alpha/).

Fixed rather than discovered: etcd3gw would otherwise ask /version first, a round trip per member.
"""

TOKENLESS_PATHS = frozenset({"/maintenance/status", "/cluster/member/list"})
"""Gateway calls the client sends without an auth token until refused, with authentication on.

They are what must still answer on a member without a leader, and authenticating goes through
raft: no leader, no new token. Measured with authentication on and no token (3-member clusters):

* 3.4.23 and 3.5.1 answer status and the member list, and also the alarm list and disarm, lease
  grant and keepalive, compaction and move-leader; they refuse kv calls (HTTP 400
  ``{"code":3,"message":"etcdserver: user name is empty"}``) and hash and defragment (HTTP 500
  ``{"code":2,"message":"auth: user name is empty"}``).
* 3.5.30 and 3.6.14 refuse every call, status and the member list included, with that HTTP 400
  (hash, hashkv and defragment: the HTTP 500 above on 3.5.30). The refusal is
  ``EtcdTokenRequiredError``: the client authenticates and asks again.
* Without a leader (two of three members killed), a token issued before still works on 3.5.30
  and 3.6.14 (status and the member list answer with it: tokens are checked locally), but a new
  one cannot be had (/v3/auth/authenticate times out), and ``/health`` answers HTTP 503
  ``{"health":"false","reason":"RAFT NO LEADER"}`` (3.4.23: ``{"health":"false"}``, no reason).
  A daemon that holds a token keeps seeing the survivor; a fresh ``etcdagent status`` cannot, and
  says so (``auth.TokenAuth``).
* The alarm list goes through raft on every version measured: no leader, no answer (it times out).
"""

NO_TOKEN_CAN_BE_ISSUED = "RAFT NO LEADER"
"""What ``/health`` says (its ``reason``, etcd 3.5+) when the member has no leader, the one case
where authenticating cannot succeed however long one waits (measured on 3.5.1, 3.5.30, 3.6.14)."""

HEALTH_PATH = "/health"
VERSION_PATH = "/version"
"""Unauthenticated GETs every version serves beside the gateway: /health
(``{"health":"true"|"false"[,"reason":...]}``) and /version (``{"etcdserver":"3.5.30",...}``)."""


def answers_without_token(path: str) -> bool:
    """True for a gateway call sent without a token until refused (see ``TOKENLESS_PATHS``)."""
    return path in TOKENLESS_PATHS


ROOT_ONLY: dict[str, tuple[str, str]] = {
    "/maintenance/defragment": ("Defragment", ""),
    "/maintenance/hashkv": ("HashKV", ""),
    "/maintenance/hash": ("Hash", ""),
    "/maintenance/transfer-leadership": ("MoveLeader", "3.4.42+, 3.5.28+ and 3.6.0+"),
    "/kv/compaction": ("Compact", "3.4.42+, 3.5.28+ and 3.6.9+"),
    "/maintenance/alarm": ("Alarm", "3.4.42+, 3.5.28+ and 3.6.9+"),
    "/maintenance/status": ("Status", "3.4.42+, 3.5.28-3.5.31 and 3.6.0-3.6.11"),
}
"""Gateway path -> (etcd's name of the call, the versions that require the root role for it;
empty: every version). Alarm: disarming; any logged-in user may list the alarms.

With authentication on, a user without the root role is refused these (the versions are etcd's
source, v3.4.42 / v3.5.33 / v3.6.14). Measured as a user with a read/write role on a key prefix:

* 3.4.23 and 3.5.1: hash and defragment refused, HTTP 500 ``{"code":2,"message":"auth: permission
  denied"}``; status, compaction, alarm disarm and move-leader allowed.
* 3.5.30: status, compaction, alarm disarm and move-leader refused, HTTP 403
  ``{"code":7,"message":"etcdserver: permission denied"}``; hash, hashkv and defragment the HTTP
  500 above; the member list and the alarm list allowed.
* 3.6.14: compaction, alarm disarm, move-leader, hash, hashkv and defragment refused with the HTTP
  403; status, the member list and the alarm list allowed.

A call not listed here and refused for permission is a key the user's roles do not cover.
"""

AGENT_KEY_PREFIX = "/etcdagent/"
"""Where the agent reads and writes keys (lock, markers, probes): what a non-root user's role must
cover (``etcdctl role grant-permission <role> --prefix readwrite /etcdagent/``)."""


def error_fields(body: dict[str, Any]) -> tuple[Any, Any]:
    """(gRPC code, message) of an error answer of the gateway, whichever version sent it.

    etcd 3.4 and 3.5.1 send ``{"error", "code", "message"}`` (the same text twice); 3.6, and the
    3.5.30 build measured, ``{"code", "message"}`` without ``error`` (``details`` only when not
    empty); a streaming call (lease keepalive) ``{"error": {"code", "message"}}`` on 3.5.30 and
    3.6.14. The message is falsy (usually ``""``) when the body has none at all: 3.4.23 and 3.5.1
    answer an unknown path with the plain text "Not Found" and a wrong method with "Method Not
    Allowed" (HTTP 404 / 405), which are no JSON.
    """
    nested = body.get("error")
    if isinstance(nested, dict):
        body = nested
    return body.get("code"), body.get("message") or body.get("error") or ""


UNKNOWN_PATH_MESSAGES = frozenset({"not found", "404 page not found"})
"""The whole message of a 404 for a path the gateway does not serve: ``{"code":5,"message":"Not
Found"}`` on 3.5.30 and 3.6.14, plain-text "Not Found" on 3.4.23 and 3.5.1 (e.g. hashkv before
3.5.10). Matched whole, because code 5 with HTTP 404 is also "requested lease not found"."""

LEARNER_REFUSAL = "rpc not supported for learner"
"""What a learner answers to any call but status: HTTP 503 code 14 on 3.4.23, 3.5.1 and 3.5.30,
HTTP 400 code 9 on 3.6.14 (kv, lease, alarm, member list, defragment alike): matched on the message,
since the status and the code changed."""

CANCELED_STATUS = 499
"""HTTP status of a canceled call (gRPC code 1) from grpc-gateway v2 (3.6); Go's server sends it as
``499 status code 499``, a reason phrase ``http.HTTPStatus`` does not know."""


RENAMED_METRICS = {
    "etcd_debugging_mvcc_db_total_size_in_bytes": "etcd_mvcc_db_total_size_in_bytes",
}
"""Metric families that older versions also export under another name: old name -> current name.

etcd 3.4 exports the DB size under both names, 3.5 only under the current one. The /metrics reader
takes either, the first one on the page winning.
"""


HASHKV_SINCE = (3, 5, 10)
"""The first release whose gateway serves ``/v3/maintenance/hashkv`` (the hash of the keyspace at
one revision, with the compacted revision it was taken over).

Measured: 3.5.30 and 3.6.14 answer ``{"header", "hash", "compact_revision"}`` (3.6 adds
``hash_revision``), a revision below the compacted one is ``code 11 ... has been compacted``, and
with authentication on only the root role may ask (3.5.30: HTTP 500 ``auth: permission denied``
for another user; 3.6.14: 403); 3.4.23 and 3.5.1 answer a plain-text 404. Asked at exactly a
compaction's revision, a member answers the hash it took while compacting, with the previous
compaction's revision as ``compact_revision`` (-1 after the first compaction). The
older ``/v3/maintenance/hash`` hashes the whole file at whatever revision each member is at, so on
a cluster taking writes two members' answers differ without meaning anything.
"""


def hashkv_missing(version: str) -> str | None:
    """Why a member of this etcd version cannot be asked for its HashKV, or None when it can.

    ``observe`` stores the answer in each member's snapshot, because ``decide`` (which names the
    check in the plan) may not import this layer. An unparsable version is given the benefit of
    the doubt: the act layer treats a 404 as "not available" too.
    """
    ours = release(version)
    if ours is None or ours >= HASHKV_SINCE:
        return None
    since = ".".join(str(n) for n in HASHKV_SINCE)
    return f"etcd {version} has no HashKV on its gateway ({since}+)"
