"""Stable mapping between raw ids (strings) and contiguous integer indices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl


class IdMap:
    """Raw id <-> index. Built once, then frozen, so indices are stable for a fitted model.

    Raw ids are kept as strings. Order is sorted (numerically when every id is an integer),
    so the same data always yields the same indices.
    """

    def __init__(self, raw_ids: Sequence[str]):
        self._ids = np.asarray(list(raw_ids), dtype=object)
        self._index = {rid: i for i, rid in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            raise ValueError("IdMap: raw ids must be unique")

    @classmethod
    def build(cls, raw: Iterable[object]) -> IdMap:
        uniq = {str(r) for r in raw}
        if all(u.lstrip("-").isdigit() for u in uniq):
            ordered = sorted(uniq, key=int)
        else:
            ordered = sorted(uniq)
        return cls(ordered)

    def _lookup_keys(self) -> pl.Series:
        if not hasattr(self, "_keys"):
            self._keys = pl.Series(self._ids.tolist(), dtype=pl.Utf8)
            self._vals = pl.Series(np.arange(len(self._ids), dtype=np.int64))
        return self._keys

    def _lookup_vals(self) -> pl.Series:
        self._lookup_keys()
        return self._vals

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw: object) -> bool:
        return str(raw) in self._index

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def index(self, raw: object) -> int:
        try:
            return self._index[str(raw)]
        except KeyError:
            raise KeyError(f"unknown id {raw!r} (not seen when the mapping was built)") from None

    def encode(self, raw: Iterable[object], unknown: str = "error") -> np.ndarray:
        """Map raw ids to indices. `unknown`: "error" raises, "drop" removes, "mask" gives -1."""
        if unknown not in ("error", "drop", "mask"):
            raise ValueError(f"unknown= must be 'error', 'drop' or 'mask', got {unknown!r}")
        raw = list(raw)
        ser = pl.Series([r if isinstance(r, str) else str(r) for r in raw], dtype=pl.Utf8)
        out = ser.replace_strict(self._lookup_keys(), self._lookup_vals(), default=-1, return_dtype=pl.Int64).to_numpy()
        if unknown == "error" and (out < 0).any():
            bad = [r for r, o in zip(raw, out, strict=False) if o < 0][:5]
            raise KeyError(f"{int((out < 0).sum())} unknown id(s), e.g. {bad}")
        if unknown == "drop":
            out = out[out >= 0]
        return out

    def decode(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        return self._ids[np.asarray(idx, dtype=np.int64)]

    def extend(self, raw: Iterable[object]) -> IdMap:
        """A new map with unseen ids appended after the existing ones (old indices unchanged)."""
        new = [str(r) for r in dict.fromkeys(str(r) for r in raw) if str(r) not in self._index]
        return IdMap(list(self._ids) + new)
