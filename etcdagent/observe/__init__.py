"""Observe: read the cluster into immutable snapshots, derive signals, judge health. Reads only."""
