"""Policy: constraint masks never leak (property test against a per-item oracle), MMR, exploration."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coachrec.data import Catalog, IdMap
from coachrec.policy import ConstraintError, Constraints, EpsilonGreedy, Range, mmr
from coachrec.policy.constraints import ConstraintIndex
from coachrec.policy.diversity import normalize_rows

GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi", "Western"]

item_rows = st.lists(
    st.tuples(
        st.lists(st.sampled_from(GENRES), max_size=3, unique=True),
        st.one_of(st.none(), st.integers(1900, 2030)),
        st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
    ),
    min_size=1,
    max_size=40,
)


@st.composite
def constraints(draw: st.DrawFn, n_items: int) -> Constraints:
    def bound(lo: float, hi: float) -> float | None:
        return draw(st.one_of(st.none(), st.floats(lo, hi, allow_nan=False)))

    ranges = {}
    for attr, (lo, hi) in (("year", (1890, 2040)), ("price", (-5, 105))):
        if draw(st.booleans()):
            ranges[attr] = Range(bound(lo, hi), bound(lo, hi))  # a reversed range is empty
    return Constraints(
        require_genres=tuple(draw(st.lists(st.sampled_from(GENRES + [g.lower() for g in GENRES]), max_size=2))),
        exclude_genres=tuple(draw(st.lists(st.sampled_from(GENRES), max_size=2))),
        require_all_genres=draw(st.booleans()),
        ranges=ranges,
        exclude_seen=draw(st.booleans()),
        exclude_items=tuple(draw(st.lists(st.integers(0, n_items + 3).map(str), max_size=4))),
    )


def make_catalog(rows: list[tuple[list[str], int | None, float | None]]) -> Catalog:
    items = IdMap([str(i) for i in range(len(rows))])
    frame = pl.DataFrame(
        {
            "item": [str(i) for i in range(len(rows))],
            "title": [f"item {i}" for i in range(len(rows))],
            "genres": [g for g, _, _ in rows],
            "year": [y for _, y, _ in rows],
            "price": [p for _, _, p in rows],
        },
        schema_overrides={"genres": pl.List(pl.Utf8), "year": pl.Int64, "price": pl.Float64},
    )
    return Catalog.from_frame(frame, items)


def oracle(rows, c: Constraints, seen: set[int]) -> list[bool]:
    """Item by item, in plain Python, what the constraints allow."""
    out = []
    for i, (genres, year, price) in enumerate(rows):
        have = {g.lower() for g in genres}
        ok = True
        if c.require_genres:
            want = {g.lower() for g in c.require_genres}
            ok &= want <= have if c.require_all_genres else bool(want & have)
        ok &= not ({g.lower() for g in c.exclude_genres} & have)
        for attr, r in c.ranges.items():
            v = {"year": year, "price": price}[attr]
            ok &= v is not None and (r.min is None or v >= r.min) and (r.max is None or v <= r.max)
        ok &= str(i) not in c.exclude_items
        ok &= not (c.exclude_seen and i in seen)
        out.append(ok)
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rows=item_rows)
def test_mask_and_violations_never_leak(data: st.DataObject, rows) -> None:
    index = ConstraintIndex(make_catalog(rows))
    c = data.draw(constraints(len(rows)))
    known = {g.lower() for genres, _, _ in rows for g in genres}
    seen = data.draw(st.sets(st.integers(0, len(rows) - 1), max_size=5))
    if any(g.lower() not in known for g in c.require_genres + c.exclude_genres):
        with pytest.raises(ConstraintError):
            index.mask(c, np.array(sorted(seen), dtype=np.int64))
        return
    mask = index.mask(c, np.array(sorted(seen), dtype=np.int64))
    expected = oracle(rows, c, seen)
    assert mask.tolist() == expected
    reasons = index.violations(c, np.arange(len(rows)), seen)
    assert [r is None for r in reasons] == expected


def test_unknown_names_are_errors_naming_the_field() -> None:
    index = ConstraintIndex(make_catalog([(["Action"], 2000, 1.0)]))
    with pytest.raises(ConstraintError, match="exclude_genres: unknown genre 'Horor'"):
        index.mask(Constraints(exclude_genres=("Horor",)))
    with pytest.raises(ConstraintError, match="ranges.rating"):
        index.mask(Constraints(ranges={"rating": Range(1, 2)}))


def test_a_reversed_range_is_empty_not_an_error() -> None:
    index = ConstraintIndex(make_catalog([(["Action"], 2000, 1.0), (["Drama"], 1990, 2.0)]))
    assert not index.mask(Constraints(ranges={"year": Range(2010, 1980)})).any()


def test_violations_flag_nonexistent_items() -> None:
    index = ConstraintIndex(make_catalog([(["Action"], 2000, 1.0)]))
    assert index.violations(Constraints(), np.array([0, 1, -1])) == [None, "nonexistent item", "nonexistent item"]


def test_mmr_trades_relevance_for_diversity() -> None:
    feats = normalize_rows(np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32))
    scores = np.array([1.0, 0.9, 0.8, 0.1])
    assert mmr(scores, feats, 2, 1.0).tolist() == [0, 1, 2, 3]
    assert mmr(scores, feats, 2, 0.5).tolist() == [0, 3, 1, 2]  # picks, then the rest by score
    with pytest.raises(ValueError):
        mmr(scores, feats, 2, 1.5)


def test_epsilon_greedy_is_seeded_and_logs_propensities() -> None:
    none = EpsilonGreedy(0.0).explore(50, 10, "r1")
    assert none.order.tolist() == list(range(50)) and not none.explored.any()
    assert np.allclose(none.propensity[:10], 1.0)
    a = EpsilonGreedy(0.5, seed=3).explore(50, 10, "r1")
    b = EpsilonGreedy(0.5, seed=3).explore(50, 10, "r1")
    assert a.order.tolist() == b.order.tolist()
    assert sorted(a.order.tolist()) == list(range(50))  # a permutation: nothing invented
    assert a.explored.any()
    for slot in range(10):
        p = a.propensity[slot]
        remaining = 50 - slot
        assert math.isclose(p, 0.5 / remaining) or math.isclose(p, 0.5 + 0.5 / remaining)
    assert np.isnan(a.propensity[10:]).all()
