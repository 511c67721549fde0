"""kube-apiserver's compaction loop, run by a test one interval at a time.

A faithful emulation of k8s.io/apiserver/pkg/storage/etcd3/compact.go (``compact()``), so the
agent is tested against the protocol it cooperates with, not against the agent's own idea of it:

* a transaction: if the version of ``compact_rev_key`` equals this apiserver's ``version``, put
  ``rev`` (the revision it saw at its previous attempt) as the value; else read the key;
* on success the version is one more and, unless ``rev`` is 0 (the first attempt: "we don't
  compact on bootstrap"), it compacts (not physically) to ``rev``;
* on failure it learns the key's version and value;
* either way its next ``rev`` is the transaction's header revision, and a compaction that fails
  (already compacted further) leaves the state as updated.

``tick()`` is one interval; ``start()`` runs it on a thread every ``interval`` seconds.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from typing import Any

import requests

KEY = base64.b64encode(b"compact_rev_key").decode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class ApiserverCompactor:
    url: str  # a member's client URL
    version: int = 0  # compactTime: the key's version as this apiserver last saw it
    rev: int = 0  # the revision it will compact to next
    compactions: list[int] = field(default_factory=list)  # revisions it compacted to
    lost: int = 0  # transactions that lost the compare (someone else moved the key)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/v3/{path}", json=body, timeout=10)

    def tick(self) -> int | None:
        """One attempt; the revision compacted to, or None."""
        answer = self._post(
            "kv/txn",
            {
                "compare": [
                    {"key": KEY, "target": "VERSION", "result": "EQUAL",
                     "version": str(self.version)}
                ],
                "success": [{"request_put": {"key": KEY, "value": _b64(str(self.rev))}}],
                "failure": [{"request_range": {"key": KEY}}],
            },
        )  # fmt: skip
        answer.raise_for_status()
        body = answer.json()
        current = int(body["header"]["revision"])
        if not body.get("succeeded"):
            kv = body["responses"][0]["response_range"]["kvs"][0]
            self.version, self.rev = int(kv.get("version", 0)), current
            self.lost += 1
            return None
        self.version += 1
        target, self.rev = self.rev, current
        if target == 0:
            return None
        reply = self._post("kv/compaction", {"revision": str(target)})
        if reply.status_code != 200:
            self.errors.append(reply.text)
            return None
        self.compactions.append(target)
        return target

    def start(self, interval: float) -> None:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.tick()
                except requests.RequestException as exc:
                    self.errors.append(str(exc))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
