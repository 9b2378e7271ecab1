"""Hard constraints compiled to a boolean mask over the whole catalog.

A request's `Constraints` (exclude or require genres, numeric attribute ranges, exclude seen
items, exclude explicit item ids) are compiled by a `ConstraintIndex` — built once per catalog —
into one vectorized boolean mask: `mask[i]` is True iff item index `i` may be shown. Retrievers
use the mask to search only allowed items; the policy stage filters with it; the guardrail
re-checks the final list item by item with `violations`, which evaluates each clause separately
so a dropped item carries the clause it broke.

Never leaking means: anything the index cannot prove allowed is forbidden. An item with a missing
value of a ranged attribute fails the range; an unknown genre or attribute name is an error (a
typo in an exclusion must not silently allow everything).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from coachrec.data import Catalog, IdMap


class ConstraintError(ValueError):
    """A constraint names something the catalog does not have, or is self-contradictory.

    `field` names the offending constraint field (e.g. `"require_genres"`, `"ranges.year"`).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Range:
    """An inclusive numeric range; a None bound is open; min > max is empty (nothing satisfies it)."""

    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"range bounds must be finite numbers, got {bound!r}")


@dataclass(frozen=True)
class Constraints:
    """Hard constraints of one request.

    `require_genres`: an item must have at least one of them (all of them with
    `require_all_genres`). `exclude_genres`: an item with any of them is forbidden. `ranges`:
    numeric catalog attribute -> inclusive `Range`. `exclude_seen`: the user's history is
    forbidden. `exclude_items`: raw item ids that must not be returned. Genre names match
    case-insensitively.
    """

    require_genres: tuple[str, ...] = ()
    exclude_genres: tuple[str, ...] = ()
    require_all_genres: bool = False
    ranges: Mapping[str, Range] = field(default_factory=dict)
    exclude_seen: bool = True
    exclude_items: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for traces."""
        return {
            "require_genres": list(self.require_genres),
            "exclude_genres": list(self.exclude_genres),
            "require_all_genres": self.require_all_genres,
            "ranges": {k: {"min": r.min, "max": r.max} for k, r in self.ranges.items()},
            "exclude_seen": self.exclude_seen,
            "exclude_items": list(self.exclude_items),
        }


class ConstraintIndex:
    """Columnar views of a catalog that constraints compile against (built once, read-only).

    Holds a dense item x genre boolean matrix and one float64 array per numeric attribute
    (NaN where the value is missing).
    """

    def __init__(self, catalog: Catalog, items: IdMap | None = None) -> None:
        self.items = items if items is not None else catalog.items
        if len(self.items) != len(catalog):
            raise ValueError(f"catalog has {len(catalog)} rows but the item map has {len(self.items)} ids")
        self.n_items = len(catalog)
        genres, names = catalog.genre_matrix()
        self.genre_names: list[str] = names
        self.genres = np.asarray(genres.todense(), dtype=bool)
        self._genre_col = {name.lower(): i for i, name in enumerate(names)}
        self.attributes: dict[str, np.ndarray] = {}
        for name in catalog.attributes:
            column = catalog.frame[name]
            if column.dtype.is_numeric():
                self.attributes[name] = column.cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float64)
        self._all = np.ones(self.n_items, dtype=bool)

    # -- compiling ---------------------------------------------------------------------------

    def genre_columns(self, names: Sequence[str], field_name: str) -> np.ndarray:
        """Column indices of genre names; an unknown name is a `ConstraintError`."""
        cols = []
        for name in names:
            col = self._genre_col.get(str(name).lower())
            if col is None:
                raise ConstraintError(field_name, f"unknown genre {name!r}; the catalog has {self.genre_names}")
            cols.append(col)
        return np.asarray(cols, dtype=np.int64)

    def attribute(self, name: str) -> np.ndarray:
        values = self.attributes.get(name)
        if values is None:
            raise ConstraintError(
                f"ranges.{name}",
                f"no numeric catalog attribute {name!r}; numeric attributes are {sorted(self.attributes)}",
            )
        return values

    def validate(self, constraints: Constraints) -> None:
        """Raise `ConstraintError` if the constraints name unknown genres or attributes."""
        self.genre_columns(constraints.require_genres, "require_genres")
        self.genre_columns(constraints.exclude_genres, "exclude_genres")
        for name in constraints.ranges:
            self.attribute(name)

    def mask(self, constraints: Constraints, seen: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask over every item index: True where the item satisfies every constraint.

        `seen` holds the item indices of the user's history (used when `exclude_seen`).
        """
        allowed = self._all.copy()
        if constraints.require_genres:
            cols = self.genre_columns(constraints.require_genres, "require_genres")
            sub = self.genres[:, cols]
            allowed &= sub.all(axis=1) if constraints.require_all_genres else sub.any(axis=1)
        if constraints.exclude_genres:
            cols = self.genre_columns(constraints.exclude_genres, "exclude_genres")
            allowed &= ~self.genres[:, cols].any(axis=1)
        for name, rng in constraints.ranges.items():
            values = self.attribute(name)
            ok = ~np.isnan(values)  # a missing value cannot be shown to satisfy a range
            if rng.min is not None:
                ok &= values >= rng.min
            if rng.max is not None:
                ok &= values <= rng.max
            allowed &= ok
        if constraints.exclude_items:
            allowed[self.items.encode(constraints.exclude_items, unknown="drop")] = False
        if constraints.exclude_seen and seen is not None and len(seen):
            allowed[np.asarray(seen, dtype=np.int64)] = False
        return allowed

    # -- checking ----------------------------------------------------------------------------

    def violations(self, constraints: Constraints, idx: np.ndarray, seen: Iterable[int] = ()) -> list[str | None]:
        """For each item index, the first constraint it breaks (None if it satisfies all).

        Evaluated clause by clause on just these items, independently of `mask`, so the
        guardrail is a second opinion rather than the same computation run twice.
        """
        idx = np.asarray(idx, dtype=np.int64)
        out: list[str | None] = [None] * len(idx)

        def flag(bad: np.ndarray, reason: str) -> None:
            for j in np.flatnonzero(bad):
                if out[j] is None:
                    out[j] = reason

        valid = (idx >= 0) & (idx < self.n_items)
        flag(~valid, "nonexistent item")
        safe = np.where(valid, idx, 0)
        if constraints.exclude_items:
            excluded = set(self.items.encode(constraints.exclude_items, unknown="drop").tolist())
            flag(np.isin(safe, list(excluded)) & valid, "explicitly excluded item")
        if constraints.exclude_seen:
            flag(np.isin(safe, np.fromiter(seen, dtype=np.int64)) & valid, "already seen")
        if constraints.require_genres:
            sub = self.genres[safe][:, self.genre_columns(constraints.require_genres, "require_genres")]
            has = sub.all(axis=1) if constraints.require_all_genres else sub.any(axis=1)
            flag(~has & valid, f"lacks required genre(s) {list(constraints.require_genres)}")
        if constraints.exclude_genres:
            cols = self.genre_columns(constraints.exclude_genres, "exclude_genres")
            flag(
                self.genres[safe][:, cols].any(axis=1) & valid,
                f"has excluded genre(s) {list(constraints.exclude_genres)}",
            )
        for name, rng in constraints.ranges.items():
            values = self.attribute(name)[safe]
            lo = -np.inf if rng.min is None else rng.min
            hi = np.inf if rng.max is None else rng.max
            flag(~((values >= lo) & (values <= hi)) & valid, f"{name} outside [{rng.min}, {rng.max}]")
        return out
