"""The catalog as the teacher reads it: raw id -> title, genres, year; constraint checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from coachrec.data import Catalog
from coachrec.policy import Constraints, Range
from coachrec.policy.constraints import ConstraintIndex


def constraints_from_dict(raw: Mapping[str, Any]) -> Constraints:
    """The inverse of `Constraints.to_dict` (as recorded in a trace's request)."""
    ranges = {name: Range(r.get("min"), r.get("max")) for name, r in (raw.get("ranges") or {}).items()}
    return Constraints(
        require_genres=tuple(raw.get("require_genres") or ()),
        exclude_genres=tuple(raw.get("exclude_genres") or ()),
        require_all_genres=bool(raw.get("require_all_genres", False)),
        ranges=ranges,
        exclude_seen=bool(raw.get("exclude_seen", True)),
        exclude_items=tuple(str(i) for i in raw.get("exclude_items") or ()),
    )


class CatalogView:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.index = ConstraintIndex(catalog)
        self._row = {str(item): i for i, item in enumerate(catalog.items.ids.tolist())}
        self._titles = catalog.titles()
        self._genres = catalog.frame["genres"].to_list()
        self._titled: dict[str, list[str]] = {}
        for item, row in self._row.items():
            self._titled.setdefault(self._titles[row], []).append(item)

    def rows(self, items: Sequence[str]) -> np.ndarray:
        """Catalog rows of raw ids; -1 for an id the catalog does not have."""
        return np.asarray([self._row.get(str(i), -1) for i in items], dtype=np.int64)

    def title(self, item: str) -> str:
        row = self._row.get(str(item))
        return f"<unknown item {item}>" if row is None else self._titles[row]

    def titled_in(self, history: Sequence[str]) -> Callable[[str], bool]:
        """`title in {self.title(h) for h in history}`, without titling the whole history: a
        title is there when an item of that title is, or an unknown id that reads so."""
        seen = set(map(str, history))

        def test(title: str) -> bool:
            if any(item in seen for item in self._titled.get(title, ())):
                return True
            return title.startswith("<unknown item ") and any(self.title(h) == title for h in history)

        return test

    def genres(self, item: str) -> list[str]:
        row = self._row.get(str(item))
        return [] if row is None else [g for g in self._genres[row] or [] if g and g != "(no genres listed)"]

    def describe(self, item: str) -> str:
        """`Title (year) [Genre, Genre]`: what a prompt shows of an item."""
        row = self._row.get(str(item))
        if row is None:
            return f"<unknown item {item}>"
        genres = self.genres(item)
        return f"{self._titles[row]} [{', '.join(genres)}]" if genres else self._titles[row]

    def violations(
        self, constraints: Mapping[str, Any], items: Sequence[str], history: Sequence[str]
    ) -> list[str | None]:
        """For each shown item, the constraint it breaks (None if none), checked clause by clause."""
        rows = self.rows(items)
        shown = {str(i) for i in items}  # only a shown item's being seen matters: row ids are unique
        seen = [int(r) for r in self.rows([h for h in history if str(h) in shown]) if r >= 0]
        return self.index.violations(constraints_from_dict(constraints), rows, seen)
