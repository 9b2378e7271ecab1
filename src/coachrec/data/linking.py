"""Entity linking: movie titles written in many ways -> items of a `Catalog`.

Titles arrive as DBpedia names (`Water_(1985_film)`, `Police_Academy_(film)`), as MovieLens
titles (`Matrix, The (1999)`, `Seven (a.k.a. Se7en) (1995)`) and as people write them in
text (`Police Academy (1984)`, "I loved the matrix"). All of them reduce to one *key*:
accents folded, lower case, `&` as "and", apostrophes dropped, other punctuation as spaces,
a trailing ", The" moved to the front and a leading English article dropped, so "The
Matrix", "Matrix, The" and "matrix" share the key `matrix`. A year, when given, is kept
beside the key.

`TitleIndex.link(title, year)` matches on key and year (exact, then one year either side),
falls back to the key alone when exactly one item has it, and otherwise reports the title
as ambiguous with its candidates: nothing is dropped without a count. `link_conversations`
links a conversational data set's candidate movies and reports coverage (`LinkReport`).
`MentionFinder` finds titles inside free text (a token n-gram dictionary built once per
catalog; a request is a few dictionary look-ups per word), for the request path.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

import numpy as np

from coachrec.data.catalog import Catalog

if TYPE_CHECKING:
    from coachrec.data.conversations import Conversations

__all__ = [
    "CandidateLinks", "Link", "LinkReport", "Mention", "MentionFinder", "TitleIndex", "link_conversations",
    "normalize_title", "parse_title", "title_key", "written_names",
]  # fmt: skip

Rule = Literal["title+year", "title+year±1", "title", "alias", "written", "ambiguous", "other-year", "unlinked"]
#: rules that produce a link ("written": by the name the dialogs write, when the DBpedia name fails)
LINKED_RULES: tuple[str, ...] = ("title+year", "title+year±1", "title", "alias", "written")

ARTICLES = frozenset({"the", "a", "an"})
# MovieLens writes leading articles at the end, in several languages: "Haine, La (1995)".
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.+?),\s*(?P<art>the|a|an|la|le|les|l'|il|el|los|las|lo|die|der|das|un|une|gli|i|det|den|en)\s*$",
    re.IGNORECASE,
)
_TRAILING_PARENS = re.compile(r"\s*\(([^()]*)\)\s*$")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_TOKEN = re.compile(r"&|[^\W_]+(?:['’`][^\W_]+)*")
_APOSTROPHES = str.maketrans("", "", "'’`")
_STOPWORDS = frozenset(
    [
        "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by", "from", "as", "is",
        "it", "its", "i", "me", "my", "we", "us", "you", "your", "he", "him", "his", "she", "her", "they", "them",
        "their", "this", "that", "these", "those", "be", "am", "are", "was", "were", "been", "do", "did", "does",
        "have", "has", "had", "not", "no", "so", "up", "out", "down", "off", "over", "all", "any", "some", "one",
        "two", "what", "who", "how", "why", "when", "where", "which", "if", "then", "than", "there", "here", "just",
        "too", "very", "can", "will", "would", "should", "could", "get", "got", "go", "going", "like", "love", "life",
        "home"
    ]
)  # fmt: skip


def _fold(text: str) -> str:
    """Accents folded (NFKD without combining marks), lower case."""
    nfkd = unicodedata.normalize("NFKD", text)
    return "".join(c for c in nfkd if not unicodedata.combining(c)).lower()


def tokens(text: str) -> list[str]:
    """The key tokens of a text: folded, apostrophes dropped inside words, `&` as "and"."""
    return ["and" if m.group() == "&" else m.group().translate(_APOSTROPHES) for m in _TOKEN.finditer(_fold(text))]


def _move_article(title: str) -> str:
    m = _TRAILING_ARTICLE.match(title.strip())
    if not m:
        return title.strip()
    art = m.group("art")
    return f"{art}{'' if art.endswith(chr(39)) else ' '}{m.group('body').strip()}"


def leading_article(title: str) -> str:
    """The English article a title starts with ("Matrix, The" -> "the"), else ""."""
    toks = tokens(_move_article(title))
    return toks[0] if len(toks) > 1 and toks[0] in ARTICLES else ""


def title_key(title: str) -> str:
    """The matching key of a bare title (no year, no parentheticals): "Matrix, The" -> "matrix";
    "Volume" is written "vol" ("Kill Bill: Volume 1" and "Kill Bill: Vol. 1" share a key)."""
    toks = ["vol" if t == "volume" else t for t in tokens(_move_article(title))]
    if len(toks) > 1 and toks[0] in ARTICLES:
        toks = toks[1:]
    return " ".join(toks)


@dataclass(frozen=True)
class ParsedTitle:
    """A title split into its main part, its year, alternative titles and qualifiers."""

    main: str
    year: int | None
    aliases: tuple[str, ...] = ()
    qualifiers: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return title_key(self.main)

    @property
    def alias_keys(self) -> tuple[str, ...]:
        keys = (title_key(a) for a in self.aliases)
        return tuple(k for k in dict.fromkeys(keys) if k and k != self.key)


def parse_title(title: str) -> ParsedTitle:
    """Split "Title (alias) (1999)", a DBpedia name "Title_(1985_film)" or a URI into parts.

    Trailing parentheticals are peeled off one at a time. In a DBpedia name every one is a
    disambiguator (a qualifier: "film", "2006 Indian film", "miniseries"), its year, if any,
    the film's year. In other titles one holding only a year (or a year and qualifier words)
    gives the year, qualifier words alone are a qualifier, anything else is an alternative
    title ("a.k.a. Se7en", MovieLens' original-language titles). A title with a subtitle
    ("Saw 3D: The Final Chapter", "Avengers: Infinity War - Part I") also gets its part before
    the colon, and its part before " - ", as aliases. Percent-escapes in DBpedia names are decoded."""
    s = title.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1]
    dbpedia = "dbpedia.org/resource/" in s or ("_" in s and " " not in s)
    if "dbpedia.org/resource/" in s:
        s = s.rsplit("/", 1)[-1]
    if dbpedia:
        s = unquote(s).replace("_", " ")  # "What_About_Bob%3F"
    year: int | None = None
    aliases: list[str] = []
    qualifiers: list[str] = []
    while True:
        m = _TRAILING_PARENS.search(s)
        if not m or m.start() == 0:
            break
        inner = m.group(1).strip()
        s = s[: m.start()].rstrip()
        y = _YEAR.search(inner)
        rest = _YEAR.sub("", inner).strip(" ,-")
        if y and year is None and (dbpedia or not rest or _is_qualifier(rest)):
            year = int(y.group(1))
            if rest:
                qualifiers.append(rest)
        elif dbpedia or _is_qualifier(inner):
            qualifiers.append(inner)
        else:
            aliases.append(re.sub(r"^(a\.k\.a\.|aka)\s*", "", inner, flags=re.IGNORECASE))
    aliases.reverse()
    for head in (s.split(":", 1)[0].strip(), s.split(" - ", 1)[0].strip()):
        if not dbpedia and head != s and len(tokens(head)) >= 1 and not all(t in _STOPWORDS for t in tokens(head)):
            aliases.append(head)
    return ParsedTitle(s, year, tuple(aliases), tuple(reversed(qualifiers)))


_QUALIFIER_WORDS = frozenset(
    [
        "film", "films", "movie", "series", "miniseries", "tv", "franchise", "american", "british", "indian",
        "australian", "canadian", "french", "german", "japanese", "korean", "chinese", "hong", "kong", "italian",
        "spanish", "animated", "musical", "documentary", "short", "soundtrack", "serial", "telefilm", "remake",
        "trilogy", "novel", "character", "play", "comics", "comic", "book", "video", "game", "anime"
    ]
)  # fmt: skip


def _is_qualifier(text: str) -> bool:
    words = tokens(text)
    return bool(words) and all(w in _QUALIFIER_WORDS for w in words)


def normalize_title(title: str) -> tuple[str, int | None]:
    """(key, year) of any written title: `normalize_title("Matrix, The (1999)") == ("matrix", 1999)`."""
    p = parse_title(title)
    return p.key, p.year


# ---------------------------------------------------------------------- catalog index
@dataclass(frozen=True)
class Link:
    """Where one title went: the item index (or None), the rule that decided, the candidates
    when ambiguous (item indices)."""

    title: str
    item: int | None
    rule: Rule
    candidates: tuple[int, ...] = ()


class TitleIndex:
    """Keys (and years) of every catalog title, built once. `year` per item comes from the
    catalog's `year` attribute when it has one, else from the title."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        titles = catalog.titles()
        years_attr = catalog.frame["year"].to_list() if "year" in catalog.frame.columns else [None] * len(titles)
        self.keys: list[str] = []
        self.articles: list[str] = []
        self.years: list[int | None] = []
        self.by_key: dict[str, list[int]] = {}
        self.by_alias: dict[str, list[int]] = {}
        self.parsed: list[ParsedTitle] = [parse_title(t or "") for t in titles]
        for i, p in enumerate(self.parsed):
            y = years_attr[i] if years_attr[i] is not None else p.year
            self.keys.append(p.key)
            self.articles.append(leading_article(p.main))
            self.years.append(int(y) if y is not None else None)
            if p.key:
                self.by_key.setdefault(p.key, []).append(i)
            for a in p.alias_keys:
                self.by_alias.setdefault(a, []).append(i)

    def _resolve(self, items: list[int], article: str) -> list[int]:
        """Among same-key items, those with the title's own leading article ("The Heat" is
        "Heat, The (2013)", not "Heat (1995)"), if that leaves any; then one of items that
        are the same title and year listed twice (MovieLens has a few)."""
        same = [i for i in items if self.articles[i] == article]
        items = same or items
        if len({(self.keys[i], self.articles[i], self.years[i]) for i in items}) == 1:
            return items[:1]
        return items

    def _by_year(self, items: list[int], year: int, slack: int) -> list[int]:
        return [i for i in items if (item_year := self.years[i]) is not None and abs(item_year - year) <= slack]

    def link(self, title: str, year: int | None = None) -> Link:
        """Link one title; `year` overrides a year written in the title. Keys are tried in
        order: the title's own key against catalog titles, its aliases against catalog
        titles, then its key against catalog aliases (rule "alias")."""
        p = parse_title(title)
        year = year if year is not None else p.year
        other_year = False
        tries = [(k, self.by_key, False) for k in (p.key, *p.alias_keys)] + [(p.key, self.by_alias, True)]
        for key, table, is_alias in tries:
            items = table.get(key, [])
            if not items:
                continue
            article = leading_article(p.main)
            if year is None:
                items = self._resolve(items, article)
                if len(items) == 1:
                    return Link(title, items[0], "alias" if is_alias else "title")
                return Link(title, None, "ambiguous", tuple(items))
            exact = self._resolve(self._by_year(items, year, 0), article) if self._by_year(items, year, 0) else []
            near = exact or self._resolve(self._by_year(items, year, 1), article)
            if len(near) == 1:
                rule: Rule = "alias" if is_alias else ("title+year" if exact else "title+year±1")
                return Link(title, near[0], rule)
            if len(near) > 1:
                return Link(title, None, "ambiguous", tuple(near))
            undated = [i for i in items if self.years[i] is None]
            if len(items) == 1 and undated:
                return Link(title, undated[0], "alias" if is_alias else "title")
            other_year = True  # in the catalog only from other years: another film (a remake)
        return Link(title, None, "other-year" if other_year else "unlinked")

    def link_many(self, titles: Sequence[str], years: Sequence[int | None] | None = None) -> list[Link]:
        ys = years if years is not None else [None] * len(titles)
        return [self.link(t, y) for t, y in zip(titles, ys, strict=True)]


# ---------------------------------------------------------------------- conversations
@dataclass(frozen=True)
class LinkReport:
    """Coverage of a linking: of the candidate set and of the targets (a target counts once
    per (turn, target) pair). Unlinked and ambiguous titles are counted and exemplified."""

    catalog: str
    n_candidates: int
    linked_candidates: int
    n_targets: int
    linked_targets: int
    n_mentions: int
    linked_mentions: int
    unlinked: int
    ambiguous: int
    by_rule: dict[str, int]
    unlinked_examples: tuple[str, ...] = ()
    ambiguous_examples: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def candidate_coverage(self) -> float:
        return self.linked_candidates / max(self.n_candidates, 1)

    @property
    def target_coverage(self) -> float:
        return self.linked_targets / max(self.n_targets, 1)

    @property
    def mention_coverage(self) -> float:
        return self.linked_mentions / max(self.n_mentions, 1)

    def lines(self) -> list[str]:
        """A plain-text summary, one fact a line (for a progress note or a report)."""
        out = [
            f"candidates linked to {self.catalog}: {self.linked_candidates:,} of {self.n_candidates:,} "
            f"({self.candidate_coverage:.1%})",
            f"targets linked: {self.linked_targets:,} of {self.n_targets:,} ({self.target_coverage:.1%})",
            f"earlier-mentioned movies linked: {self.linked_mentions:,} of {self.n_mentions:,} "
            f"({self.mention_coverage:.1%})",
            f"candidates unlinked: {self.unlinked:,}; ambiguous: {self.ambiguous:,}; by rule: "
            + ", ".join(f"{k} {v:,}" for k, v in self.by_rule.items()),
        ]
        if self.unlinked_examples:
            out.append("unlinked e.g.: " + "; ".join(self.unlinked_examples))
        if self.ambiguous_examples:
            out.append("ambiguous e.g.: " + "; ".join(f"{t} -> {' | '.join(c)}" for t, c in self.ambiguous_examples))
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "catalog": self.catalog,
            "candidates": self.n_candidates,
            "linked_candidates": self.linked_candidates,
            "candidate_coverage": round(self.candidate_coverage, 4),
            "targets": self.n_targets,
            "linked_targets": self.linked_targets,
            "target_coverage": round(self.target_coverage, 4),
            "mentions": self.n_mentions,
            "linked_mentions": self.linked_mentions,
            "mention_coverage": round(self.mention_coverage, 4),
            "unlinked": self.unlinked,
            "ambiguous": self.ambiguous,
            "by_rule": dict(self.by_rule),
            "unlinked_examples": list(self.unlinked_examples),
            "ambiguous_examples": [[t, list(c)] for t, c in self.ambiguous_examples],
        }


@dataclass
class CandidateLinks:
    """Catalog item of each candidate column of a `Conversations` (-1: not linked)."""

    item: np.ndarray
    links: list[Link] = field(repr=False)
    report: LinkReport

    def history(self, entity_columns: np.ndarray) -> np.ndarray:
        """Catalog items of candidate columns, unlinked ones (and -1 columns) left out."""
        cols = np.asarray(entity_columns, dtype=np.int64)
        items = self.item[cols[cols >= 0]]
        return items[items >= 0]


def link_conversations(
    conv: Conversations, catalog: Catalog, *, catalog_name: str = "catalog", examples: int = 8
) -> CandidateLinks:
    """Link every candidate movie of `conv` to `catalog` by its DBpedia name (title, and the
    year when the name carries one); where that fails (unlinked, another year, ambiguous), by
    the name the dialogs write for it (`written_names`: "Click (2006)" for `Click_(2010_film)`,
    whose DBpedia entity is a wrong guess; rule "written"). Measures coverage of candidates, of
    targets and of the earlier-mentioned movies. The written names are the dataset's own
    entity annotations; which turn a movie is a target of plays no part."""
    index = TitleIndex(catalog)
    uris = dict(zip(conv.entities["id"].to_list(), conv.entities["uri"].to_list(), strict=True))
    written = written_names(conv)
    links = []
    for e in conv.candidates.tolist():
        lk = index.link(uris[int(e)])
        if lk.item is None:
            for name in written.get(int(e), ()):
                alt = index.link(name)
                if alt.item is not None:
                    lk = Link(uris[int(e)], alt.item, "written")
                    break
        links.append(lk)
    item = np.array([-1 if lk.item is None else lk.item for lk in links], dtype=np.int64)
    cols = conv.column(conv.targets["target"].to_numpy())
    linked_t = int(((cols >= 0) & (item[np.maximum(cols, 0)] >= 0)).sum())
    mention_cols = conv.column(conv.turns["prev_entity"].explode().drop_nulls().to_numpy())
    mention_cols = mention_cols[mention_cols >= 0]
    by_rule: dict[str, int] = {}
    for lk in links:
        by_rule[lk.rule] = by_rule.get(lk.rule, 0) + 1
    titles = catalog.titles()
    unl = [
        display(uris[int(e)])
        for e, lk in zip(conv.candidates, links, strict=True)
        if lk.rule in ("unlinked", "other-year")
    ]
    amb = [
        (display(uris[int(e)]), tuple(titles[i] for i in lk.candidates[:4]))
        for e, lk in zip(conv.candidates, links, strict=True)
        if lk.rule == "ambiguous"
    ]
    step_u = max(1, len(unl) // examples) if unl else 1
    step_a = max(1, len(amb) // examples) if amb else 1
    report = LinkReport(
        catalog=catalog_name,
        n_candidates=len(links),
        linked_candidates=int((item >= 0).sum()),
        n_targets=conv.n_targets,
        linked_targets=linked_t,
        n_mentions=len(mention_cols),
        linked_mentions=int((item[mention_cols] >= 0).sum()),
        unlinked=by_rule.get("unlinked", 0) + by_rule.get("other-year", 0),
        ambiguous=by_rule.get("ambiguous", 0),
        by_rule={k: by_rule[k] for k in (*LINKED_RULES, "ambiguous", "other-year", "unlinked") if k in by_rule},
        unlinked_examples=tuple(unl[::step_u][:examples]),
        ambiguous_examples=tuple(amb[::step_a][:examples]),
    )
    return CandidateLinks(item, links, report)


def _similar(a: str, b: str) -> float:
    """Jaccard similarity of two keys' token sets (0 when either is empty)."""
    x, y = set(a.split()), set(b.split())
    return len(x & y) / len(x | y) if x and y else 0.0


def written_names(conv: Conversations, min_similarity: float = 0.6) -> dict[int, list[str]]:
    """Per movie entity, the names the dialogs write for it, most often first: each turn's
    `response_names` (not aligned with its entities) are matched to its movie entities by key
    similarity to the DBpedia name (the best, at least `min_similarity`; one-word keys must be
    equal), so "Avengers: Infinity War (2018)" names `Avengers:_Infinity_War`."""
    if "response_names" not in conv.turns.columns:
        return {}
    movie = set(conv.candidates.tolist())
    key_of = {int(e): parse_title(u).key for e, u in zip(conv.entities["id"].to_list(), conv.entities["uri"].to_list(),
                                                         strict=True) if int(e) in movie}  # fmt: skip
    counts: dict[int, Counter[str]] = {}
    for ents, names in zip(conv.turns["response_entities"].to_list(), conv.turns["response_names"].to_list(),
                           strict=True):  # fmt: skip
        parsed = [(n, parse_title(n).key) for n in names or [] if n]
        for e in ents or []:
            key = key_of.get(int(e))
            if not key or not parsed:
                continue
            best, sim = max(((n, _similar(key, k)) for n, k in parsed), key=lambda x: x[1])
            if sim >= min_similarity and (len(key.split()) > 1 or sim == 1.0):
                counts.setdefault(int(e), Counter())[best] += 1
    return {e: [n for n, _ in c.most_common()] for e, c in counts.items()}


def display(uri: str) -> str:
    s = uri.strip("<>").rsplit("/", 1)[-1]
    return s.replace("_", " ")


# ---------------------------------------------------------------------- mentions in text
@dataclass(frozen=True)
class Mention:
    """A title found in text: the item (best candidate), the character span `[start, end)`,
    the matched text, the year written after it (if any), every candidate item when the title
    alone is ambiguous (best first), and a confidence in [0, 1]."""

    item: int
    start: int
    end: int
    text: str
    year: int | None
    candidates: tuple[int, ...]
    confidence: float

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


_YEAR_AFTER = re.compile(r"\s*\(\s*(1[89]\d\d|20\d\d)\s*\)")


class MentionFinder:
    """Titles of a catalog found in free text, built once per catalog.

    Every title key (and alias key) becomes a token tuple in a dictionary; a text is
    tokenised once and, at each word that starts some title, the longest title starting there
    wins (left to right, non-overlapping). A year in parentheses right after the title picks
    among same-titled items ("Psycho (1960)"); otherwise the most popular candidate is first
    (`popularity`, one value per item; by default catalog order).

    Confidence says how likely the words name the film rather than being ordinary words: 1.0
    with a matching year, 0.9 for titles of two or more words that are not all common words,
    0.7 for one-word titles written capitalised or after the title's own article ("the
    matrix"), 0.3 for a lower-case one-word title, 0.1 for common words such as "it" or
    "up" without a year. `find` keeps mentions at or above `min_confidence` (0.5)."""

    def __init__(self, catalog: Catalog, popularity: np.ndarray | None = None, *, max_words: int = 12):
        self.catalog = catalog
        self.index = TitleIndex(catalog)
        self.max_words = max_words
        pop = np.zeros(len(catalog)) if popularity is None else np.asarray(popularity, dtype=np.float64)
        if len(pop) != len(catalog):
            raise ValueError(f"popularity has {len(pop)} values for {len(catalog)} items")
        self.table: dict[tuple[str, ...], list[int]] = {}
        self.article: dict[int, str] = {}
        for i, p in enumerate(self.index.parsed):
            for key in (p.key, *p.alias_keys):
                if key:
                    self.table.setdefault(tuple(key.split()), []).append(i)
            lead = tokens(_move_article(p.main))
            if lead and lead[0] in ARTICLES and len(lead) > 1:
                self.article[i] = lead[0]
        order = np.lexsort((np.arange(len(pop)), -pop))
        rank = np.empty(len(pop), dtype=np.int64)
        rank[order] = np.arange(len(pop))
        for words, items in self.table.items():
            self.table[words] = sorted(set(items), key=lambda i: rank[i])
        self.longest: dict[str, int] = {}
        for words in self.table:
            self.longest[words[0]] = max(self.longest.get(words[0], 0), len(words))

    def find(self, text: str, min_confidence: float = 0.5) -> list[Mention]:
        """Mentions in `text`, in order of position."""
        folded = _fold(text)
        if len(folded) != len(text):  # folding changed lengths: spans from the folded text
            text = folded
        matches = list(_TOKEN.finditer(folded))
        toks = ["and" if m.group() == "&" else m.group().translate(_APOSTROPHES) for m in matches]
        toks = ["vol" if t == "volume" else t for t in toks]  # as `title_key`
        out: list[Mention] = []
        i = 0
        while i < len(toks):
            longest = self.longest.get(toks[i], 0)
            found = None
            for n in range(min(longest, self.max_words, len(toks) - i), 0, -1):
                items = self.table.get(tuple(toks[i : i + n]))
                if items:
                    found = (n, items)
                    break
            if found is None:
                i += 1
                continue
            n, items = found
            start, end = matches[i].start(), matches[i + n - 1].end()
            mention = self._mention(text, toks, matches, i, n, start, end, items)
            if mention is not None and mention.confidence >= min_confidence:
                out.append(mention)
                i += n
            else:
                i += 1
        return out

    def _mention(
        self,
        text: str,
        toks: list[str],
        matches: list[re.Match[str]],
        i: int,
        n: int,
        start: int,
        end: int,
        items: list[int],
    ) -> Mention | None:
        year = None
        ym = _YEAR_AFTER.match(text, end)
        if ym:
            year = int(ym.group(1))
            dated = [c for c in items if self.index.years[c] == year] or [
                c for c in items if (item_year := self.index.years[c]) is not None and abs(item_year - year) <= 1
            ]
            if not dated:
                return None  # the title with a year the catalog does not have: another film
            items = dated
        words = toks[i : i + n]
        has_article = i > 0 and toks[i - 1] in ARTICLES and self.article.get(items[0]) == toks[i - 1]
        if has_article:
            start = matches[i - 1].start()
        surface = text[matches[i].start() : end]
        capitalised = surface[:1].isupper()
        common = all(w in _STOPWORDS for w in words)
        if year is not None:
            conf = 1.0
        elif common:
            conf = 0.1 if not (capitalised and has_article) else 0.3
        elif n >= 2:
            conf = 0.9
        elif capitalised or has_article:
            conf = 0.7
        else:
            conf = 0.3
        if ym:
            end = ym.end()
        return Mention(items[0], start, end, text[start:end], year, tuple(items), conf)
