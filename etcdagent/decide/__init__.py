"""Decide: pure functions from snapshots, settings and the time to plans with reasons."""
