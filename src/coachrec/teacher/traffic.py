"""Replayed traffic: requests for known users, some with constraints or a free-text request.

The mix exercises what the teacher judges: hard constraints (genre exclusions and
requirements, year ranges), free-text requests (which today's pipeline does not read, so
request-match failures are expected and real), and plain requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coachrec.policy import Constraints, Range
from coachrec.serve.pipeline import RecommendRequest

CONTEXTS: tuple[tuple[str, Constraints], ...] = (
    ("something funny and light for tonight", Constraints()),
    ("a scary horror movie", Constraints()),
    ("an animated film the kids can watch", Constraints(require_genres=("Children",))),
    ("no horror please, I want a romance", Constraints(exclude_genres=("Horror",))),
    ("a classic from before 1980", Constraints(ranges={"year": Range(None, 1979)})),
    ("a recent sci-fi film", Constraints(ranges={"year": Range(2005, None)})),
)
CONSTRAINTS: tuple[Constraints, ...] = (
    Constraints(exclude_genres=("Horror", "Thriller")),
    Constraints(require_genres=("Documentary",)),
    Constraints(require_genres=("Animation",), ranges={"year": Range(2000, None)}),
    Constraints(ranges={"year": Range(1990, 1999)}),
)


def replay_requests(
    users: Sequence[str], n: int, *, k: int = 10, context_rate: float = 0.3, constraint_rate: float = 0.3, seed: int = 0
) -> list[RecommendRequest]:
    """`n` requests for users drawn from `users`: a `context_rate` share with a free-text request
    (and the constraints it implies), a `constraint_rate` share with constraints only."""
    if not users:
        raise ValueError("replay_requests needs at least one user")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        user = str(users[int(rng.integers(len(users)))])
        u = rng.random()
        if u < context_rate:
            text, constraints = CONTEXTS[int(rng.integers(len(CONTEXTS)))]
            out.append(
                RecommendRequest(
                    user_id=user, k=k, constraints=constraints, context=text, request_id=f"replay-{seed}-{i}"
                )
            )
        elif u < context_rate + constraint_rate:
            constraints = CONSTRAINTS[int(rng.integers(len(CONSTRAINTS)))]
            out.append(RecommendRequest(user_id=user, k=k, constraints=constraints, request_id=f"replay-{seed}-{i}"))
        else:
            out.append(RecommendRequest(user_id=user, k=k, request_id=f"replay-{seed}-{i}"))
    return out
