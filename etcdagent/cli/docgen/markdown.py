"""What both generated files share: the command that regenerates them and the table cells."""

from __future__ import annotations

REGENERATE = "python -m etcdagent.cli.docgen"
REQUIRED = "required"  # the default column of a list item's field that has no default


def cell(text: str) -> str:
    """Text that cannot break a markdown table row."""
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    """``text`` in backticks; an empty cell and the word "required" stay plain."""
    return f"`{text}`" if text and text != REQUIRED else text
