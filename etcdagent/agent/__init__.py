"""The daemon: its loop, its HTTP endpoint and its own metrics."""
