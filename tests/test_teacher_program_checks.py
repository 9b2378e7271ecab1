"""The program checks' shortcuts give the verdicts of the straightforward checks they replace,
on real served cases of ml-latest-small and on variants made to break every clause."""

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

from coachrec.models import create
from coachrec.policy import Constraints
from coachrec.serve.pipeline import Pipeline
from coachrec.teacher import CatalogView, cases_from_store
from coachrec.teacher.program_checks import (
    _SIMILAR_TO,
    ITEM_CLAUSES,
    _share_ok,
    constraint_adherence,
    explanation_grounding,
)
from coachrec.teacher.traffic import replay_requests
from coachrec.tracing import Tracer, TraceStore


def reference_constraint_adherence(case, catalog):
    """The check as written before its shortcut: every clause through `CatalogView.violations`."""
    reasons = catalog.violations(case.constraints, case.items, case.history)
    bad = [(item, r) for item, r in zip(case.items, reasons, strict=False) if r is not None and r != "already seen"]
    if not bad:
        return 1.0, "every shown item satisfies the request's constraints"
    shown = "; ".join(f"{catalog.title(i)}: {r}" for i, r in bad[:3])
    return _share_ok(len(bad), len(case.items)), f"{len(bad)} shown item(s) break the constraints: {shown}"


def reference_explanation_grounding(case, catalog):
    """The check as written before its shortcut: every history item titled."""
    history_titles = {catalog.title(h) for h in case.history}
    cited = [(_SIMILAR_TO.match(r), item) for r, item in zip(case.reasons, case.items, strict=False)]
    checked = [(m.group("title"), item) for m, item in cited if m is not None]
    if not checked:
        return 1.0, "no explanation cites a history item"
    wrong = [(t, item) for t, item in checked if t not in history_titles]
    if not wrong:
        return 1.0, f"all {len(checked)} cited history items are in the user's history"
    shown = "; ".join(f"{catalog.title(i)} cites {t!r}" for t, i in wrong[:3])
    return _share_ok(len(wrong), len(checked)), f"{len(wrong)} explanation(s) cite items not in the history: {shown}"


@pytest.fixture(scope="module")
def cases(ml_small):
    store = TraceStore(":memory:")
    models = [create("itemknn").fit(ml_small), create("pop").fit(ml_small)]
    pipeline = Pipeline.from_models(models, ml_small.catalog, tracer=Tracer(store))
    users = ml_small.users.ids[:40].tolist()
    results = [pipeline.recommend(r) for r in replay_requests(users, 60, constraint_rate=0.5, seed=11)]
    store.flush()
    out = cases_from_store(store, [r.trace_id for r in results])
    store.close()
    return out


def variants(case, ids, titles, rng):
    """The case, and copies that break constraints, repeat history items, show unknown ids, and
    cite titles that are and are not (or only as an unknown id) in the history."""
    yield case
    items = list(case.items)
    seen = list(case.history[-3:])
    unknown = ["no-such-item", "<7>"]
    mixed = items[:4] + seen + unknown + [ids[int(i)] for i in rng.choice(len(ids), 3)]
    history = [*case.history, "no-such-history-item"]
    reasons = []
    for n, _ in enumerate(mixed):
        pick = n % 5
        if pick == 0 and case.history:
            reasons.append(f"similar to {titles[case.history[int(rng.integers(len(case.history)))]]}")
        elif pick == 1:
            reasons.append(f"similar to {titles[ids[int(rng.integers(len(ids)))]]}")
        elif pick == 2:
            reasons.append("similar to <unknown item no-such-history-item>")
        elif pick == 3:
            reasons.append("similar to <unknown item never-seen>")
        else:
            reasons.append("popular right now")
    for constraints in (
        case.constraints,
        {},
        {"exclude_seen": False},
        {"require_genres": ["Comedy"]},
        {"exclude_genres": ["Drama", "Action"], "exclude_seen": False},
        {"ranges": {"year": {"min": 1995, "max": None}}},
        {"exclude_items": [mixed[0], "no-such-item"]},
        {"require_genres": ["Horror", "Comedy"], "require_all_genres": True, "exclude_items": []},
        {"require_genres": [], "exclude_genres": [], "ranges": {}, "exclude_items": [], "exclude_seen": True},
    ):
        yield replace(case, items=mixed, reasons=reasons, history=history, constraints=dict(constraints))


def test_shortcut_checks_equal_the_straightforward_checks(cases, ml_small):
    catalog = CatalogView(ml_small.catalog)
    ids = ml_small.items.ids.tolist()
    titles = {str(i): catalog.title(str(i)) for i in ids}
    rng = np.random.default_rng(0)
    compared = fails = 0
    assert sum(bool(c.constraints.get("require_genres") or c.constraints.get("ranges")) for c in cases) >= 5
    for case in cases:
        for variant in variants(case, [str(i) for i in ids], titles, rng):
            for fast, slow in (
                (constraint_adherence, reference_constraint_adherence),
                (explanation_grounding, reference_explanation_grounding),
            ):
                got, expected = fast(variant, catalog), slow(variant, catalog)
                assert got == expected, (fast.__name__, variant.constraints, got, expected)
                compared += 1
                fails += got[0] < 1.0
    assert compared == len(cases) * 10 * 2 and fails > len(cases) * 5  # the variants do fail


def test_the_shortcut_knows_every_clause_that_can_forbid_an_item():
    """A new `Constraints` clause must join ITEM_CLAUSES, or the shortcut would not check it."""
    names = {f.name for f in dataclasses.fields(Constraints)}
    assert names - {"exclude_seen", "require_all_genres"} == set(ITEM_CLAUSES)
