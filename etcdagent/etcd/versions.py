"""What differs between etcd versions, in one place.

The etcd layer talks to etcd 3.4 and 3.5 (the versions the tests run, 3.4.23 and 3.5.1) and reads
the answer shapes of 3.6 that the unit tests carry. Every fact below is one the code already
relies on; the client, the error translation and the /metrics reader take it from here, so support
for another version starts with this module rather than with a new branch in each of them.

Facts that live elsewhere, because their module may not import the etcd layer:

* ``models.MemberStatus.db_size_quota``: the status answer carries ``dbSizeQuota`` from etcd 3.6
  on; before that the quota is only in /metrics (``etcd_server_quota_backend_bytes``), which
  ``observe.snapshot.MemberSnapshot.quota`` falls back to.
* ``models``: etcd 3.4 omits every zero value of a status answer (no ``revision`` on a fresh store,
  no ``errors``, no ``isLearner``), and 3.4 answers ``{}`` to the alarm list when there is no
  alarm; the models give every field a default.
* ``act.lock_requests``: the lease and txn answers the maintenance lock relies on, measured
  identical on 3.4.23 and 3.5.1, including which of them work without an auth token.
"""

from __future__ import annotations

from typing import Any

API_PATH = "/v3/"
"""The gateway's URL prefix on etcd >= 3.4 (older versions served /v3beta/ or /v3alpha/).

Fixed rather than discovered: etcd3gw would otherwise ask /version first, a round trip per member.
"""

TOKENLESS_PATHS = frozenset({"/maintenance/status", "/cluster/member/list"})
"""Gateway calls that etcd 3.4 and 3.5 answer without an auth token, even with authentication on.

The client sends them without one until refused: authenticating goes through raft, so it fails
exactly when a member without a leader should still be able to say so. (Lease grant and keepalive
are answered without a token too, but the client authenticates before them as before any call.)
"""


def answers_without_token(path: str) -> bool:
    """True for a gateway call that needs no token (see ``TOKENLESS_PATHS``)."""
    return path in TOKENLESS_PATHS


def error_message(body: dict[str, Any]) -> Any:
    """etcd's message in an error answer of the gateway, whichever version sent it.

    etcd 3.4 and 3.5 send ``{"error", "code", "message"}`` (the same text twice); 3.6 sends
    ``{"code", "message", "details"}``, without ``error``. Both carry the gRPC status in ``code``.
    Falsy (usually ``""``) when the body has no message at all.
    """
    return body.get("message") or body.get("error") or ""


RENAMED_METRICS = {
    "etcd_debugging_mvcc_db_total_size_in_bytes": "etcd_mvcc_db_total_size_in_bytes",
}
"""Metric families that older versions also export under another name: old name -> current name.

etcd 3.4 exports the DB size under both names, 3.5 only under the current one. The /metrics reader
takes either, the first one on the page winning.
"""
