"""Faithfulness: the claims an explanation makes, each marked supported or not by its input.

A claim is a catalog title, a genre, a year, any other number, an instruction-like phrase, or
a link (a URL or e-mail address, which no fact ever holds).
`Grounding` holds what the explanation was allowed to say (the facts it was built from);
`ClaimChecker.check` extracts every claim from a text and marks it. An instruction-like phrase
is never supported: explanations state facts, they do not pass on orders found in data.

Titles are found against the whole catalog (so a hallucinated but real title is caught), plus
any `Something (1999)` pattern (so an invented title is caught too), plus any other run of two
or more capitalised words not at a sentence start (an invented title without a year, a name):
such a run is supported only inside a title, tag or genre of the facts. Year-less catalog title
matches need at least two words, so common one-word titles ("Heat", "Up") do not fire on prose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from coachrec.llm.prompts import INSTRUCTION_PATTERN
from coachrec.llm.quotable import LINK_PATTERN, skeleton

ClaimKind = Literal["title", "genre", "year", "number", "instruction", "link"]

_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_CAP = r"[A-Z0-9][\w'’:&!.-]*"
_SMALL = r"(?:of|the|a|an|and|in|on|to|for|with|from|at|by)"
_TITLE_WITH_YEAR = re.compile(rf"{_CAP}(?:,?\s+(?:{_CAP}|{_SMALL}(?=\s+[A-Z0-9]))){{0,10}}\s*\(\d{{4}}\)")
"""A run of capitalised words (small words only between capitalised ones) before `(year)`."""
_NAME_RUN = re.compile(rf"(?<![\w'’-]){_CAP}(?:,?\s+(?:{_SMALL}\s+)*{_CAP})+")
"""Two or more capitalised words in a row (small words between): how a name is written."""
_NAME_WORD = re.compile(_CAP)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"“(]\s*)$")
_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
COMMON_GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Science Fiction",
    "Thriller",
    "War",
    "Western",
    "Biography",
    "History",
    "Sport",
    "Family",
)
"""Genre words checked in every text besides the catalog's own (MovieLens and IMDb genres)."""

_WORD = re.compile(r"[\w'’-]+")


def norm(text: str) -> str:
    return " ".join(text.casefold().replace("’", "'").split())


def bare_title(title: str) -> str:
    """A title without its trailing `(year)`."""
    return _YEAR_SUFFIX.sub("", title).strip()


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    value: str
    supported: bool
    start: int
    end: int


@dataclass
class Grounding:
    """What an explanation may claim: titles, genres and numbers (years included) of its facts."""

    titles: set[str] = field(default_factory=set)
    genres: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    phrases: set[str] = field(default_factory=set)
    """Quoted catalog text (tags): its words are the catalog's, not claims of the explanation."""

    def add_title(self, title: str) -> None:
        self.titles.add(norm(title))
        self.titles.add(norm(bare_title(title)))
        year = _YEAR_SUFFIX.search(title)
        if year:
            self.numbers.add(year.group(1))

    def add_genres(self, genres: Iterable[str]) -> None:
        self.genres.update(norm(g) for g in genres)

    def add_number(self, value: int | str) -> None:
        self.numbers.add(str(value))

    def add_phrase(self, text: str) -> None:
        self.phrases.add(text.casefold())


class ClaimChecker:
    """Extracts claims against a catalog's titles and genre names (plus `COMMON_GENRES`)."""

    def __init__(self, titles: Sequence[str], genres: Sequence[str]) -> None:
        by_first: dict[str, set[str]] = {}
        for title in titles:
            for variant in {norm(title), norm(bare_title(title))}:
                words = variant.split()
                if not words or (variant == norm(bare_title(title)) and (len(words) < 2 or len(variant) < 8)):
                    continue
                by_first.setdefault(words[0], set()).add(variant)
        self._by_first = {w: sorted(v, key=len, reverse=True) for w, v in by_first.items()}
        names = sorted({g for g in (*genres, *COMMON_GENRES) if g and not g.startswith("(")}, key=len, reverse=True)
        self._genre_re = (
            re.compile(r"(?<![\w-])(" + "|".join(re.escape(g) for g in names) + r")(?![\w-])", re.IGNORECASE)
            if names
            else None
        )

    def check(self, text: str, grounding: Grounding) -> list[Claim]:
        """Every claim in `text`, in order of position, each marked supported or not."""
        claims: list[Claim] = []
        taken = [False] * len(text)

        def add(kind: ClaimKind, value: str, start: int, end: int, supported: bool) -> None:
            claims.append(Claim(kind, value, supported, start, end))
            taken[start:end] = [True] * (end - start)

        def free(start: int, end: int) -> bool:
            return not any(taken[start:end])

        for m in INSTRUCTION_PATTERN.finditer(text):
            add("instruction", m.group(0), m.start(), m.end(), False)
        if not claims and INSTRUCTION_PATTERN.search(skeleton(text)):  # hidden by look-alikes or invisibles
            claims.append(Claim("instruction", text, False, 0, len(text)))
        for m in LINK_PATTERN.finditer(text):
            if free(m.start(), m.end()):
                add("link", m.group(0), m.start(), m.end(), False)
        low = text.casefold()
        for phrase in grounding.phrases:
            for m in re.finditer(re.escape(phrase), low):
                if free(m.start(), m.end()):
                    taken[m.start() : m.end()] = [True] * (m.end() - m.start())
        for start, end in self._catalog_titles(text):
            if free(start, end):
                add("title", text[start:end], start, end, norm(text[start:end]) in grounding.titles)
        for m in _TITLE_WITH_YEAR.finditer(text):
            if free(m.start(), m.end()):
                add("title", m.group(0).strip(), m.start(), m.end(), norm(m.group(0)) in grounding.titles)
        if self._genre_re is not None:
            for m in self._genre_re.finditer(text):
                if free(m.start(), m.end()):
                    add("genre", m.group(0), m.start(), m.end(), norm(m.group(0)) in grounding.genres)
        for start, end in self._names(text, taken):
            value = text[start:end]
            add("title", value, start, end, self._grounded_name(value, grounding))
        for m in _YEAR.finditer(text):
            if free(m.start(), m.end()):
                add("year", m.group(0), m.start(), m.end(), m.group(0) in grounding.numbers)
        for m in _NUMBER.finditer(text):
            if free(m.start(), m.end()):
                add("number", m.group(0), m.start(), m.end(), m.group(0) in grounding.numbers)
        return sorted(claims, key=lambda c: c.start)

    @staticmethod
    def _names(text: str, taken: list[bool]) -> list[tuple[int, int]]:
        """Spans that read as a name (a title without a year that is not the catalog's, say):
        runs of at least two free capitalised words, the first word of a sentence not counted."""
        spans = []
        for run in _NAME_RUN.finditer(text):
            words = [
                w for w in _NAME_WORD.finditer(text, run.start(), run.end()) if not any(taken[w.start() : w.end()])
            ]
            groups: list[list[re.Match[str]]] = []
            for w in words:  # split where a taken span (a genre, a grounded phrase) interrupts
                if groups and not any(taken[groups[-1][-1].end() : w.start()]):
                    groups[-1].append(w)
                else:
                    groups.append([w])
            for group in groups:
                if _SENTENCE_START.search(text[: group[0].start()]):
                    group = group[1:]
                if len(group) >= 2:
                    end = group[-1].end()
                    while text[end - 1] in ".,:;!'’-":  # sentence punctuation is not part of the name
                        end -= 1
                    spans.append((group[0].start(), end))
        return spans

    @staticmethod
    def _grounded_name(value: str, grounding: Grounding) -> bool:
        name = norm(value).strip(".,:;!")
        return any(name in known for known in (*grounding.titles, *grounding.phrases, *grounding.genres))

    def unsupported(self, text: str, grounding: Grounding) -> list[Claim]:
        return [c for c in self.check(text, grounding) if not c.supported]

    def _catalog_titles(self, text: str) -> list[tuple[int, int]]:
        """Spans of catalog titles in `text`, longest match at each word start, no overlaps."""
        low = text.casefold().replace("’", "'")
        spans: list[tuple[int, int]] = []
        position = 0
        for m in _WORD.finditer(low):
            if m.start() < position:
                continue
            for title in self._by_first.get(m.group(0), ()):
                end = m.start() + len(title)
                if norm(low[m.start() : end]) == title and (end == len(low) or not low[end].isalnum()):
                    spans.append((m.start(), end))
                    position = end
                    break
        return spans
