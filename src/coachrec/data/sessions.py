"""Sessionization by inactivity gap."""

from __future__ import annotations

import polars as pl

from coachrec.data.dataset import Dataset


def sessionize(ds: Dataset, gap_seconds: int = 30 * 60) -> Dataset:
    """Add a `session` column: a new session starts after `gap_seconds` of inactivity.

    Session ids are global integers in (user, time) order. Needs real timestamps."""
    if not ds.timestamps:
        raise ValueError(
            f"{ds.name}: has no timestamps (only an order), so it cannot be split into sessions by time gap"
        )
    if gap_seconds <= 0:
        raise ValueError(f"gap_seconds must be positive, got {gap_seconds}")
    ev = ds.events.with_columns(
        ((pl.col("user") != pl.col("user").shift(1)) | ((pl.col("time") - pl.col("time").shift(1)) > gap_seconds))
        .fill_null(True)
        .cum_sum()
        .sub(1)
        .cast(pl.Int64)
        .alias("session")
    )
    return ds.with_events(ev)
