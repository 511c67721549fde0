"""Reference documentation generated from the code: docs/configuration.md and docs/metrics.md.

The settings tables come from the settings model (every field, its description and default), the
flags from the click commands and the tables :mod:`etcdagent.cli.options` maps them with, and the
metrics from an :class:`~etcdagent.agent.metrics.AgentMetrics` registry. So the reference cannot
drift from the code: ``python -m etcdagent.cli.docgen`` rewrites both files, ``--check`` fails
(exit 1) when a committed file is out of date, and tests/unit/test_docs.py runs that check.

Why a generator of our own rather than a library: settings-doc 4.3.2 and pydantic-settings-export
1.1.3 were both run on :class:`~etcdagent.settings.Settings` and compared with
docs/configuration.md. Each documents the nested groups' environment names and descriptions, and
no more of what an operator needs here:

* settings-doc (``settings-doc generate -c etcdagent.settings.Settings -f markdown``) writes one
  heading per environment variable: no file key (``tls.ca_file``), no group sections or group
  docstrings, no type at all. Defaults are Python reprs of the parsed value (``300.0`` for 5m,
  ``104857600`` for 100MiB, ``True``), and fields with a ``default_factory`` (``endpoints``,
  ``windows``) show none. It does not descend into list items, so ``windows[].schedule``,
  ``duration`` and ``timezone`` are missing. Its Jinja templates get the fields and six fixed
  helper functions; :func:`settings_doc.main.render` builds its own Jinja environment, so a custom
  template cannot call :func:`~etcdagent.units.format_duration` or read the click commands.
* pydantic-settings-export (markdown generator) gets closer: a section per group with its
  docstring and defaults including factories. But its types come from the JSON schema, so a
  duration is ``number`` with default ``300.0`` and a size ``integer`` ``104857600``; optional
  fields with nested ``Annotated`` print as ``Annotated | null`` (``compaction.retain``,
  ``gates.max_request_rate``, ``emergency.time_to_quota``); ratio bounds and secrecy are lost.
  ``windows`` is an ``array`` defaulting to ``[]``, its items' fields undocumented. It is set up
  through ``[tool.pydantic_settings_export]`` in pyproject.toml, and a custom generator receives
  its own field model (type names as strings, the ``Annotated`` metadata gone), so naming
  durations and sizes would still need the code in :mod:`.annotations`.
* Neither knows the CLI: the flag of each setting and the commands accepting it, the command-only
  options, the ``ETCDAGENT_ENDPOINTS`` shorthand, which variables take JSON, or the layering of
  flags, environment, file and defaults, which are half of docs/configuration.md.

Adopting either would mean its output for the environment names plus this code for everything
else: two sources for one page. The parts: :mod:`.annotations` (what a field's annotation says),
:mod:`.flags` (which flag sets which setting), :mod:`.settings_rows` (one row per setting),
:mod:`.configuration` and :mod:`.metrics` (the two pages).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from etcdagent.cli.docgen.configuration import (
    EXAMPLE_CONFIG,
    TWO_CLUSTERS_CONFIG,
    configuration_markdown,
)
from etcdagent.cli.docgen.flags import _fields_by_name, _flag_tables, _setting_of, command_flags
from etcdagent.cli.docgen.markdown import REGENERATE
from etcdagent.cli.docgen.metrics import metrics_markdown
from etcdagent.cli.docgen.settings_rows import setting_docs

__all__ = [  # the flag helpers too: tests/unit/test_docs.py checks every option's mapping
    "CONFIGURATION_FILE",
    "EXAMPLE_CONFIG",
    "METRICS_FILE",
    "REGENERATE",
    "TWO_CLUSTERS_CONFIG",
    "_fields_by_name",
    "_flag_tables",
    "_setting_of",
    "command_flags",
    "configuration_markdown",
    "generated",
    "main",
    "metrics_markdown",
    "setting_docs",
    "stale_files",
]

CONFIGURATION_FILE = "configuration.md"
METRICS_FILE = "metrics.md"


def generated() -> dict[str, str]:
    """File name (inside docs/) -> its generated text."""
    return {CONFIGURATION_FILE: configuration_markdown(), METRICS_FILE: metrics_markdown()}


def default_docs_dir() -> Path:
    """docs/ of the source checkout this module lives in, else docs/ of the working directory."""
    root = Path(__file__).resolve().parents[3]
    return root / "docs" if (root / "pyproject.toml").is_file() else Path("docs")


def stale_files(docs_dir: Path) -> list[Path]:
    """The files of ``docs_dir`` that differ from what would be generated (or are missing)."""
    stale = []
    for name, text in generated().items():
        path = docs_dir / name
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(path)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m etcdagent.cli.docgen",
        description="Write docs/configuration.md and docs/metrics.md from the code.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file differs from what would be generated",
    )
    parser.add_argument(
        "--docs-dir", type=Path, default=None, help="where the files go (default: docs/)"
    )
    args = parser.parse_args(argv)
    docs_dir: Path = args.docs_dir or default_docs_dir()
    if args.check:
        stale = stale_files(docs_dir)
        for path in stale:
            print(f"{path} is out of date; regenerate it with: {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    docs_dir.mkdir(parents=True, exist_ok=True)
    for name, text in generated().items():
        path = docs_dir / name
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0
