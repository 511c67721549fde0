"""One NOSPACE recovery per incident, cluster-wide, although etcd grants no lease under NOSPACE.

The maintenance lock is a key put under a fresh lease; under a NOSPACE alarm etcd refuses both
(lease grant and put: HTTP 429). What it still serves there, measured on 3.4.23, 3.5.1, 3.5.30
and 3.6.14: reads, a plain DeleteRange, and keep-alives and revokes of leases granted before.
A transaction made only of deletes passes the quota on 3.4 and from 3.5.7, but 3.5.0-3.5.6
refuse it too once the file has reached the quota (etcd commit 378ad6b, backported to 3.5.7), so
the exclusion is built from plain DeleteRange alone, whose ``deleted`` count tells exactly one
caller that it removed the key.

**Slots.** While the cluster takes writes, each daemon keeps ``SLOTS`` recovery slots in etcd.
Slot ``i`` is two keys, ``/etcdagent/nospace/slot/<i>/free`` and ``.../alive``, both under one
lease of ``lock.ttl`` seconds, which the daemons renew while the slot is free:

* **free** (both keys): anyone may claim it;
* **claimed** (``alive`` only): its holder renews the lease, nobody else does;
* **gone** (neither): its lease expired: nobody kept it, or its holder died.

Claiming is deleting ``free``. A claimer takes the lowest free slot, and only while no slot is
claimed; right after winning it reads the slots again and, if another claim shows up (two agents
that read the slots on either side of a new incident's start), gives its own up: at most one
agent recovers. A holder renews its slot's lease from a thread, like the lock; one that dies
stops renewing, its slot is gone one TTL later, and the next free slot can be claimed. Once
writes work again the holder writes ``free`` back and the slot is free for the next incident;
if they do not (the recovery was refused), it revokes the lease and the slot is gone.

Each daemon also keeps a **keeper** key under its own lease: with a keeper alive, the slots are
the rule, and when none is left free the daemon and ``run --once`` refuse rather than recover
unlocked beside the others; an operator's ``etcdagent recover`` then still may (it says so).
Without any keeper (a CronJob-only deployment) nobody keeps slots, and recovery goes on as
before: unlocked, after checking that no lock is held and no member is being defragmented.
"""

from __future__ import annotations

import base64
import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from etcdagent.act.lock_renewal import LeaseRenewal
from etcdagent.act.lock_requests import LockRequests, int_field
from etcdagent.errors import EtcdAgentError, EtcdError, LockBusyError, LockLostError
from etcdagent.etcd.client import MemberClient

log = structlog.get_logger(__name__)

PREFIX = "/etcdagent/nospace/"
SLOT_PREFIX = PREFIX + "slot/"
KEEPER_PREFIX = PREFIX + "keepers/"
SLOTS = 3  # recoveries per incident whose holder may die before the next one must wait


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode("ascii")


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode("ascii")


def free_key(index: int) -> str:
    return f"{SLOT_PREFIX}{index}/free"


def alive_key(index: int) -> str:
    return f"{SLOT_PREFIX}{index}/alive"


class NoSlotError(EtcdAgentError):
    """No recovery slot is free or claimed: the exclusion cannot be had this incident.

    ``keepers`` names the daemons that keep slots (none: nobody does, recovery goes unlocked).
    """

    def __init__(self, message: str, *, keepers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keepers = keepers


@dataclass(frozen=True)
class Slot:
    index: int
    lease_id: int
    free: bool
    alive: bool

    @property
    def claimed(self) -> bool:
        return self.alive and not self.free


@dataclass(frozen=True)
class SlotView:
    """The slots and keepers as one read of the prefix saw them."""

    slots: dict[int, Slot]
    keepers: tuple[str, ...]

    @property
    def claimed(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.claimed]

    @property
    def free(self) -> list[Slot]:
        return sorted((s for s in self.slots.values() if s.free and s.alive), key=lambda s: s.index)


def read_slots(requests: LockRequests) -> SlotView:
    """One linearizable range over the prefix: every slot key and every keeper."""
    answer = requests.call(
        "nospace slots read", "/kv/range", {"key": _b64(PREFIX), "range_end": _prefix_end(PREFIX)}
    )
    found: dict[int, dict[str, int]] = {}
    keepers: list[str] = []
    for kv in answer.get("kvs") or []:
        if not isinstance(kv, dict):
            continue
        try:
            key = base64.b64decode(kv.get("key", "")).decode("utf-8", errors="replace")
        except (ValueError, TypeError):
            continue
        if key.startswith(KEEPER_PREFIX):
            keepers.append(key.removeprefix(KEEPER_PREFIX))
            continue
        index, _, kind = key.removeprefix(SLOT_PREFIX).partition("/")
        if index.isdigit() and kind in ("free", "alive"):
            found.setdefault(int(index), {})[kind] = int_field(kv, "lease")
    slots = {
        i: Slot(
            index=i,
            lease_id=keys.get("alive") or keys.get("free") or 0,
            free="free" in keys,
            alive="alive" in keys,
        )
        for i, keys in found.items()
    }
    return SlotView(slots=slots, keepers=tuple(sorted(keepers)))


def _grant(requests: LockRequests, ttl: float) -> int:
    answer = requests.call("nospace slot lease grant", "/lease/grant", {"TTL": str(int(ttl))})
    return int_field(answer, "ID")


def _put_txn(
    requests: LockRequests, absent: str, puts: Sequence[str], value: str, lease: int
) -> bool:
    """Put ``puts`` under ``lease`` if ``absent`` does not exist; whether it did."""
    txn = {
        "compare": [
            {"key": _b64(absent), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        ],
        "success": [
            {"request_put": {"key": _b64(k), "value": _b64(value), "lease": str(lease)}}
            for k in puts
        ],
    }
    answer = requests.call("nospace slot create", "/kv/txn", txn)
    return bool(answer.get("succeeded"))


class SlotKeeper:
    """A daemon's part in the slots: keep its keeper key, create missing slots, renew free ones.

    Runs from its own thread for the daemon's lifetime (a cycle may be stuck in a long defrag).
    Under NOSPACE creating fails and only renewing goes on, which is what keeps the slots.
    """

    def __init__(
        self,
        members: Callable[[], Sequence[MemberClient]],
        *,
        holder: str,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.ttl = max(2.0, float(int(ttl)))
        # Short requests: a member busy defragmenting must not hold the round up until the free
        # slots' leases expire; the next member answers instead.
        self._requests = LockRequests(members, clock, timeout=max(1.0, self.ttl / 4))
        self._keeper_lease = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def keep_once(self) -> None:
        """One round; raises on etcd errors (the thread logs them and tries again)."""
        self._keep_keeper()
        view = read_slots(self._requests)
        for slot in view.free:
            self._requests.keepalive(slot.lease_id)
        for index in range(1, SLOTS + 1):
            known = view.slots.get(index)
            if known is None or not known.alive:
                self._create(index)

    def _keep_keeper(self) -> None:
        if self._keeper_lease:
            ttl, _ = self._requests.keepalive(self._keeper_lease)
            if ttl > 0:
                return
        lease = _grant(self._requests, self.ttl)
        key = KEEPER_PREFIX + self.holder
        self._requests.call(
            "nospace keeper put",
            "/kv/put",
            {"key": _b64(key), "value": _b64(self.holder), "lease": str(lease)},
        )
        self._keeper_lease = lease

    def _create(self, index: int) -> None:
        """A fresh lease with both keys; a lost race against another keeper revokes it."""
        lease = _grant(self._requests, self.ttl)
        if not _put_txn(
            self._requests,
            alive_key(index),
            (free_key(index), alive_key(index)),
            self.holder,
            lease,
        ):
            self._requests.revoke_quietly(lease, alive_key(index))
            return
        log.info("nospace recovery slot created", slot=index, ttl=self.ttl)

    def start(self) -> SlotKeeper:
        self._thread = threading.Thread(  # in the starter's context: its log fields (cluster)
            target=contextvars.copy_context().run,
            args=(self._loop,),
            name="etcdagent-nospace-slots",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop keeping; our keeper key goes with its lease now, the slots live on."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self._keeper_lease:
            self._requests.revoke_quietly(self._keeper_lease, KEEPER_PREFIX + self.holder)
            self._keeper_lease = 0

    def _loop(self) -> None:
        interval = self.ttl / 3
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.keep_once()
                delay = interval
            except Exception as exc:  # this thread must keep trying until stopped
                if self._stop.is_set():
                    return
                log.debug("nospace slots: keeping failed", error=str(exc))
                delay = interval / 2


class RecoveryClaim:
    """Holds one recovery slot for the length of one recovery (see the module docstring)."""

    def __init__(
        self,
        members: Callable[[], Sequence[MemberClient]],
        *,
        holder: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.5,
    ) -> None:
        self.holder = holder
        self._clock = clock
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._requests = LockRequests(members, clock)
        self.slot: Slot | None = None
        self._renewal: LeaseRenewal | None = None

    def acquire(self, timeout: float) -> None:
        """Claim a slot, waiting up to ``timeout`` while another agent holds one.

        ``LockBusyError`` when another claim stays; ``NoSlotError`` when no slot is free or
        claimed (``keepers`` on it tells whether daemons keep slots at all).
        """
        deadline = self._clock() + timeout
        while True:
            view = read_slots(self._requests)
            busy = self._busy(view)
            if busy is None:
                if not view.free:
                    raise NoSlotError(
                        "no NOSPACE recovery slot is free"
                        + (f" (kept by {', '.join(view.keepers)})" if view.keepers else ""),
                        keepers=view.keepers,
                    )
                if self._take(view.free[0]):
                    return
                continue  # lost the race for that slot: look again
            if self._clock() >= deadline:
                raise LockBusyError(busy, holder="another agent")
            self._sleep(min(self._poll_interval, max(0.0, deadline - self._clock())))

    @staticmethod
    def _busy(view: SlotView) -> str | None:
        if not view.claimed:
            return None
        which = ", ".join(str(s.index) for s in view.claimed)
        return f"NOSPACE recovery already running by another agent (it holds recovery slot {which})"

    def _take(self, slot: Slot) -> bool:
        """Delete the slot's ``free`` key; True when ours (and no other claim showed up)."""
        answer = self._requests.call(
            "nospace claim", "/kv/deleterange", {"key": _b64(free_key(slot.index))}
        )
        if int_field(answer, "deleted") != 1:
            return False
        others = [s for s in read_slots(self._requests).claimed if s.index != slot.index]
        if others:
            # Another agent claimed too, having read the slots before our claim: both give up
            # rather than both recover; the next cycle claims again.
            self._requests.revoke_quietly(slot.lease_id, alive_key(slot.index))
            raise LockBusyError(
                f"NOSPACE recovery claimed by another agent at the same moment (slot "
                f"{others[0].index}); gave recovery slot {slot.index} up",
                holder="another agent",
            )
        ttl, sent = self._requests.keepalive(slot.lease_id)
        if ttl <= 0:
            raise LockLostError(f"recovery slot {slot.index}: its lease expired as it was claimed")
        self.slot = slot
        self._renewal = LeaseRenewal(
            self._requests,
            key=alive_key(slot.index),
            holder=self.holder,
            lease_id=slot.lease_id,
            ttl=float(ttl),
            expires_at=sent + ttl,
            clock=self._clock,
        )
        self._renewal.start()
        log.info("nospace recovery claimed", slot=slot.index, holder=self.holder)
        return True

    def ensure_held(self) -> None:
        renewal = self._renewal
        if renewal is None:
            raise LockLostError("NOSPACE recovery slot not claimed (or already given back)")
        reason = renewal.lost_reason()
        if reason is not None:
            raise LockLostError(f"NOSPACE recovery slot lost: {reason}")

    def release(self) -> None:
        """Give the slot back for the next incident when writes work; else let it go."""
        renewal, self._renewal = self._renewal, None
        slot, self.slot = self.slot, None
        if renewal is None or slot is None:
            return
        renewal.stop()
        try:
            self._requests.call(
                "nospace slot release",
                "/kv/put",
                {
                    "key": _b64(free_key(slot.index)),
                    "value": _b64(self.holder),
                    "lease": str(slot.lease_id),
                },
            )
            log.info("nospace recovery slot given back", slot=slot.index)
        except EtcdError as exc:
            # Still NOSPACE (the recovery was refused) or unreachable: the slot goes with its
            # lease, and the next incident's claim takes another one.
            log.info(
                "nospace recovery slot not given back: revoked", slot=slot.index, error=str(exc)
            )
            self._requests.revoke_quietly(slot.lease_id, alive_key(slot.index))
