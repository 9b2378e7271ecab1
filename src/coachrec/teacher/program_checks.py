"""Criteria a program checks exactly: each returns a score in [0, 1] and a rationale.

Scores are the share of the slate that is fine (1.0 = no problem), so a single leaked item in a
slate of ten scores 0.9 and fails a criterion whose pass threshold is 1.0.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from coachrec.teacher.cases import JudgeCase
from coachrec.teacher.catalog_view import CatalogView

CheckResult = tuple[float, str]
Check = Callable[[JudgeCase, CatalogView], CheckResult]

_SIMILAR_TO = re.compile(r"^similar to (?P<title>.+)$")


def _share_ok(bad: int, n: int) -> float:
    return 1.0 if n == 0 else 1.0 - bad / n


ITEM_CLAUSES = ("require_genres", "exclude_genres", "ranges", "exclude_items")
"""The `policy.Constraints` clauses that can forbid an item besides `exclude_seen`."""


def constraint_adherence(case: JudgeCase, catalog: CatalogView) -> CheckResult:
    if any(case.constraints.get(clause) for clause in ITEM_CLAUSES):
        reasons = catalog.violations(case.constraints, case.items, case.history)
    else:  # only existence and `exclude_seen` can flag an item, and "already seen" is not_consumed's
        reasons = ["nonexistent item" if row < 0 else None for row in catalog.rows(case.items)]
    bad = [(item, r) for item, r in zip(case.items, reasons, strict=False) if r is not None and r != "already seen"]
    if not bad:
        return 1.0, "every shown item satisfies the request's constraints"
    shown = "; ".join(f"{catalog.title(i)}: {r}" for i, r in bad[:3])
    return _share_ok(len(bad), len(case.items)), f"{len(bad)} shown item(s) break the constraints: {shown}"


def no_duplicates(case: JudgeCase, catalog: CatalogView) -> CheckResult:
    dupes = len(case.items) - len(set(case.items))
    if not dupes:
        return 1.0, "no item is shown twice"
    repeated = sorted({i for i in case.items if case.items.count(i) > 1})
    return _share_ok(dupes, len(case.items)), f"{dupes} duplicate slot(s): {[catalog.title(i) for i in repeated[:3]]}"


def not_consumed(case: JudgeCase, catalog: CatalogView) -> CheckResult:
    if not case.constraints.get("exclude_seen", True):
        return 1.0, "the request allows items the user has seen"
    seen = set(case.history)
    consumed = [i for i in case.items if i in seen]
    if not consumed:
        return 1.0, "no shown item is in the user's recent history"
    return _share_ok(len(consumed), len(case.items)), (
        f"{len(consumed)} shown item(s) were already consumed: {[catalog.title(i) for i in consumed[:3]]}"
    )


def slate_complete(case: JudgeCase, catalog: CatalogView) -> CheckResult:
    if len(case.items) >= case.k:
        return 1.0, f"{len(case.items)} of {case.k} items shown"
    why = f" ({case.note})" if case.note else ""
    return len(case.items) / case.k, f"only {len(case.items)} of the {case.k} items asked for were shown{why}"


def upstream_constraint_leak(case: JudgeCase, catalog: CatalogView) -> CheckResult:
    forbidden = case.policy_drops.get("forbidden", 0) + case.policy_drops.get("nonexistent", 0)
    caught = len(case.guardrail_violations)
    if not forbidden and not caught:
        return 1.0, "no stage had to drop a forbidden item"
    parts = []
    if forbidden:
        parts.append(f"the policy filter dropped {forbidden} forbidden/nonexistent candidate(s)")
    if caught:
        why = sorted({str(v.get("reason")) for v in case.guardrail_violations})
        parts.append(f"the guardrail caught {caught} item(s) ({', '.join(why)})")
    return 0.0, "retrievers proposed items the request forbids: " + "; ".join(parts)


def explanation_grounding(case: JudgeCase, catalog: CatalogView) -> CheckResult:
    cited = [(_SIMILAR_TO.match(r), item) for r, item in zip(case.reasons, case.items, strict=False)]
    checked = [(m.group("title"), item) for m, item in cited if m is not None]
    if not checked:
        return 1.0, "no explanation cites a history item"
    in_history = catalog.titled_in(case.history)
    wrong = [(t, item) for t, item in checked if not in_history(t)]
    if not wrong:
        return 1.0, f"all {len(checked)} cited history items are in the user's history"
    shown = "; ".join(f"{catalog.title(i)} cites {t!r}" for t, i in wrong[:3])
    return _share_ok(len(wrong), len(checked)), f"{len(wrong)} explanation(s) cite items not in the history: {shown}"


CHECKS: dict[str, Check] = {
    "constraint_adherence": constraint_adherence,
    "no_duplicates": no_duplicates,
    "not_consumed": not_consumed,
    "slate_complete": slate_complete,
    "upstream_constraint_leak": upstream_constraint_leak,
    "explanation_grounding": explanation_grounding,
}
