"""What the harness raises: it could not drive the cluster, or etcd's gateway said no."""

from __future__ import annotations

import contextlib
import json
from typing import Any

__all__ = ["EtcdHarnessError", "EtcdRequestError", "PortClash"]


class EtcdHarnessError(RuntimeError):
    """The harness could not start or drive the cluster."""


class PortClash(EtcdHarnessError):
    """A member died because one of its ports was taken meanwhile: the start is retried."""


class EtcdRequestError(RuntimeError):
    """A gateway request answered a non-200 status."""

    def __init__(self, url: str, status: int, body: str) -> None:
        self.url = url
        self.status = status
        self.body = body
        parsed: Any = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
        self.json: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        super().__init__(f"POST {url} -> HTTP {status}: {body.strip()}")

    @property
    def message(self) -> str:
        """etcd's error message (``error`` on 3.4/3.5, ``message`` on 3.6), or the raw body."""
        msg = self.json.get("message") or self.json.get("error")
        return str(msg) if msg else self.body
