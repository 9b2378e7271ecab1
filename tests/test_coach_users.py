"""The three-way user split: selection, gate, unused; no selection step ever reads a gate user."""

from __future__ import annotations

import numpy as np

from coachrec.coach.distill import DistillConfig, distill, selection_rows
from coachrec.coach.loop import split_users
from coachrec.coach.trust import Trust
from coachrec.data import leave_one_out
from coachrec.serve import PipelineConfig, Stack
from coachrec.teacher import JudgeCase, load_rubric


class SpyCommittee:
    """A relevance committee stand-in that records every user it is asked about."""

    model_id = "spy"
    verdict = "likely liked (P(rating>=4)"

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.rng = np.random.default_rng(0)

    def probability(self, user, history, items):
        self.users.add(str(user))
        return self.rng.random(len(items))


def test_split_is_disjoint_seeded_and_covers_everyone():
    users = [str(i) for i in range(610)]
    a, b = split_users(users, seed=0), split_users(users, seed=0)
    assert a == b and split_users(users, seed=1) != a
    parts = [set(a.selection), set(a.gate), set(a.unused)]
    assert sum(map(len, parts)) == 610 and set().union(*parts) == set(users)
    assert not (parts[0] & parts[1]) and not (parts[1] & parts[2]) and not (parts[0] & parts[2])
    assert (len(a.selection), len(a.gate)) == (244, 244)


def test_distillation_selects_on_selection_users_only(ml_small):
    split = leave_one_out(ml_small)
    users = split_users([str(u) for u in split.train.users.ids], seed=0)
    rows = selection_rows(split, users.selection, 10_000, seed=0)
    task = split.task("valid")
    picked = {str(split.train.users.ids[int(task.users[r])]) for r in rows}
    assert picked and picked <= set(users.selection)

    champion = Stack.fit(split.train, ("pop",), PipelineConfig(candidates=30))
    rubric = load_rubric()
    trust = {"relevance": Trust("relevance", "recommender", True, "test")}
    cases = [
        JudgeCase(f"t{u}", None, u, 0, 0, 10, [], [], [], [], [], {}, None, ["pop"], []) for u in users.selection[:20]
    ]
    spy = SpyCommittee()
    distill(
        champion,
        spy,
        cases,
        split,
        rubric,
        trust,
        "irrelevant_items",
        DistillConfig(valid_users=100, strengths=(0.5,)),
        users=users.selection,
    )
    assert spy.users and spy.users <= set(users.selection)
    assert not spy.users & set(users.gate)
