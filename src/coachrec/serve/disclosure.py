"""What a reason may say to a caller: no stored history without `read`, no constraint-excluded item.

A reason such as "similar to McHale's Navy (1997)" quotes the user's history. When the history
came from the server (a `user_id`), only a caller allowed to read traces may see it; a caller
holding just `recommend` gets the same reason with the title withheld. And a reason never names a
history item the request's own constraints exclude (an excluded genre, attribute range or item),
whoever asks: the request said it does not want to see that item, in a slate or in its words.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from coachrec.llm.prompts import clean_data
from coachrec.serve.pipeline import Pipeline, RecommendRequest

WITHHELD = "similar to titles in your history"


def private_titles(pipeline: Pipeline, request: RecommendRequest, *, may_read_history: bool) -> list[str]:
    """Titles no reason of this request's answer may quote."""
    history, _ = pipeline.history_of(request)
    if not len(history):
        return []
    catalog = pipeline.catalog
    hide = np.zeros(len(history), dtype=bool)
    if request.user_id is not None and not may_read_history:
        given = set(request.history or ())
        stored = np.asarray([item not in given for item in catalog.decode(history)], dtype=bool)
        hide |= stored
    c = request.constraints  # seen is no reason to hide a name; without other clauses nothing is excluded
    if c.require_genres or c.exclude_genres or c.ranges or c.exclude_items:
        violations = catalog.index.violations(replace(c, exclude_seen=False), history)
        hide |= np.asarray([v is not None for v in violations], dtype=bool)
    return [str(t) for t in dict.fromkeys(catalog.titles[history[hide]].tolist()) if t]


def spellings(title: str) -> set[str]:
    """The forms a reason may quote `title` in: as stored, with its spaces collapsed (the
    item-kNN reason), and as `clean_data` writes it for the explainer (NFKC, invisible
    characters removed, whitespace collapsed)."""
    forms = {title, " ".join(title.split()), clean_data(title, 120)}
    return {f for f in forms if f}


def redact(reasons: list[str], titles: list[str]) -> list[str]:
    """`reasons` with every one quoting any of `titles` (in any of its `spellings`) replaced by
    a reason naming none."""
    if not titles or not reasons:
        return reasons
    joined = "\n".join(reasons)
    forms = {form for t in titles for form in spellings(t)}
    quoted = [t for t in forms if t in joined]  # one scan of the slate's text per spelling
    if not quoted:
        return reasons
    return [WITHHELD if any(t in r for t in quoted) else r for r in reasons]
