"""Grounded explanations: one short reason per recommended item, built only from given facts.

Facts come from the input of the request and the catalog: the history item the retriever (or
RUM's attention) says the item is recommended because of, genres the item shares with the
user's recent history, the item's own genres, year and tags. A template turns facts into a
reason; an optional LLM rephrases them, and its text is kept only if every claim in it (titles,
genres, years, numbers) is supported by the facts and it carries no instruction-like phrase.
The catalog text a fact may carry is an allowlist, not raw text: a title, genre or tag becomes a
fact only in the plain form `coachrec.llm.quotable` accepts (no invisible or look-alike
characters, no markup, URL or instruction, the item's own year), so an injection attempt in the
catalog never becomes a fact.

    explainer = GroundedExplainer(catalog)                     # template only
    out = explainer.explain([12, 40], history=np.array([3, 7, 9]), because={12: 7})
    out[0].text, out[0].claims, out[0].unsupported
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from coachrec.data import Catalog
from coachrec.llm.backend import LLMBackend, Usage
from coachrec.llm.faithfulness import Claim, ClaimChecker, Grounding
from coachrec.llm.prompts import clean_data, explain_prompt
from coachrec.llm.quotable import quotable_genre, quotable_tag, quotable_titles

OnUnsupported = Literal["drop", "flag"]


@dataclass(frozen=True)
class ExplainConfig:
    """`recent`: history items searched for shared genres; `max_tags`: tags quoted per item;
    `on_unsupported`: "drop" replaces an LLM reason with unsupported claims by the template
    reason, "flag" keeps it and reports the claims."""

    recent: int = 20
    max_genres: int = 3
    max_tags: int = 2
    max_tokens: int = 48
    on_unsupported: OnUnsupported = "drop"


@dataclass
class ItemFacts:
    item: int
    title: str
    facts: list[str]
    grounding: Grounding
    template: str


@dataclass
class Explanation:
    item: int
    text: str
    source: Literal["template", "llm", "llm-flagged", "llm-dropped"]
    facts: list[str]
    claims: list[Claim]
    unsupported: list[Claim] = field(default_factory=list)
    """Unsupported claims of the text the model wrote (dropped or flagged per config)."""
    usage: Usage | None = None


class GroundedExplainer:
    """Builds facts and reasons for items of one catalog (rows = model item indices)."""

    def __init__(
        self, catalog: Catalog, backend: LLMBackend | None = None, config: ExplainConfig | None = None
    ) -> None:
        self.backend = backend
        self.config = config or ExplainConfig()
        frame = catalog.frame
        raw_titles = [str(t or "") for t in frame["title"].to_list()]
        self.titles: list[str] = [clean_data(t, 120) for t in raw_titles]
        self.years: list[int | None] = frame["year"].to_list() if "year" in frame.columns else [None] * len(self.titles)
        self.quotable: list[bool] = quotable_titles(raw_titles, self.years)
        """Titles a reason may name: the allowlist of `coachrec.llm.quotable`, on the raw text."""
        self.genres: list[list[str]] = [[g for g in gs if g and quotable_genre(g)] for gs in frame["genres"].to_list()]
        self.tags: list[list[str]] = [
            [clean_data(t, 40) for t in ts or () if quotable_tag(t)] for ts in frame["tags"].to_list()
        ]
        vocabulary = sorted({g for gs in self.genres for g in gs})
        self.checker = ClaimChecker(self.titles, vocabulary)

    # -- facts -------------------------------------------------------------------------------

    def facts(self, item: int, history: np.ndarray, because: int | None = None) -> ItemFacts:
        """Facts about `item` for a user with `history` (item indices, oldest first); `because`
        is the history item the retriever or RUM attention credits for it, when known."""
        c = self.config
        title = self.titles[item]
        grounding = Grounding()
        facts: list[str] = []
        genres = self.genres[item][: c.max_genres]
        anchor = because if because is not None and self._quotable(because) else self._genre_neighbour(item, history)
        clauses: list[str] = []
        if anchor is not None:
            shared = [g for g in self.genres[item] if g in set(self.genres[anchor])][: c.max_genres]
            grounding.add_title(self.titles[anchor])
            grounding.add_genres(shared)
            if because is not None and anchor == because:
                facts.append(f"recommended because the user watched {self.titles[anchor]}")
                clauses.append(f"Because you watched {self.titles[anchor]}")
                if shared:
                    facts.append(f"shares the genres {', '.join(shared)} with {self.titles[anchor]}")
            else:
                facts.append(
                    f"shares the genres {', '.join(shared)} with {self.titles[anchor]}, which the user watched"
                )
                clauses.append(f"{_join(shared)}, like {self.titles[anchor]} that you watched")
        if genres:
            grounding.add_genres(genres)
            facts.append(f"genres: {', '.join(genres)}")
            if anchor is None:
                clauses.append(_join(genres))
        year = self.years[item]
        if year is not None:
            grounding.add_number(int(year))
            facts.append(f"released in {int(year)}")
        tags = [t for t in self.tags[item] if t][: c.max_tags]
        for tag in tags:
            grounding.add_phrase(tag)
        if tags:
            facts.append(f"tagged {', '.join(tags)}")
            clauses.append("tagged " + ", ".join(f"“{t}”" for t in tags))
        if self._quotable(item):
            grounding.add_title(title)
        template = "; ".join(clauses) + "." if clauses else "Picked by the recommender for you."
        return ItemFacts(item, title, facts, grounding, template)

    def _quotable(self, item: int) -> bool:
        return self.quotable[item]

    def _genre_neighbour(self, item: int, history: np.ndarray) -> int | None:
        """The most recent history item sharing the most genres with `item` (None if none)."""
        mine = set(self.genres[item])
        if not mine:
            return None
        best, best_shared = None, 0
        for h in reversed(np.asarray(history, dtype=np.int64)[-self.config.recent :].tolist()):
            shared = len(mine.intersection(self.genres[h]))
            if shared > best_shared and self._quotable(h):
                best, best_shared = h, shared
        return best

    # -- reasons -----------------------------------------------------------------------------

    def explain(
        self,
        items: Sequence[int],
        history: np.ndarray,
        because: Mapping[int, int] | None = None,
        use_llm: bool = False,
    ) -> list[Explanation]:
        """One reason per item; with `use_llm` (and a backend) the LLM phrases the facts."""
        out = []
        for item in items:
            f = self.facts(int(item), history, (because or {}).get(int(item)))
            if use_llm and self.backend is not None:
                out.append(self._phrase(f))
            else:
                out.append(
                    Explanation(f.item, f.template, "template", f.facts, self.checker.check(f.template, f.grounding))
                )
        return out

    def check(self, text: str, grounding: Grounding) -> list[Claim]:
        return self.checker.check(text, grounding)

    def _phrase(self, f: ItemFacts) -> Explanation:
        assert self.backend is not None
        completion = self.backend.complete(
            explain_prompt(f.title, f.facts),
            max_tokens=self.config.max_tokens,
            temperature=0.0,
            stop=["\n", "<|im_end|>"],
        )
        text = " ".join(completion.text.split()).strip().strip('"')
        claims = self.checker.check(text, f.grounding)
        bad = [c for c in claims if not c.supported]
        if not text:
            bad = [Claim("instruction", "(empty answer)", False, 0, 0)]
        if bad and self.config.on_unsupported == "drop":
            return Explanation(
                f.item,
                f.template,
                "llm-dropped",
                f.facts,
                self.checker.check(f.template, f.grounding),
                bad,
                completion.usage,
            )
        return Explanation(f.item, text, "llm-flagged" if bad else "llm", f.facts, claims, bad, completion.usage)


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
