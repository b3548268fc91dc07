"""Batch scans: the planner, tiles and the dask scan (incremental, resumable)."""
