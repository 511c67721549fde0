"""The command line: status, compact, defrag, recover and run, and how each shows its results."""

from etcdagent.cli.commands import cli, main

__all__ = ["cli", "main"]
