"""Request understanding: what a request or a conversation asks for, read before retrieval.

    stage = Understand(serving_catalog, popularity)      # built once per catalog
    stage(ctx, candidates, span)                        # writes ctx.intent, history, constraints

Rule-based and precompiled (regex tables and a title dictionary, no LLM), so it runs on every
request in well under a millisecond for a message and a few for a long conversation. From the
seeker's words (a conversation's recommender turns only contribute titles) it finds:

- **mentions**: titles of the catalog (`coachrec.data.linking.MentionFinder`). A title the
  seeker liked or just talked about ("like Super Troopers") joins the history the collaborative
  retrievers read; one the text says they did not like ("I didn't like X") is excluded, not
  history; one they say they have not seen stays a candidate.
- **genres** from the catalog's vocabulary and synonyms (romance, scary, funny, sci fi,
  cartoon ...), **moods** (feel-good, violent, mind-bending ...) as weights over genres, **eras
  and years** ("before 1980", "80s movies", "recent", "a classic"), **tags and people** that are
  catalog tags ("time travel", "stephen king"), each with its polarity and **negations** ("no
  horror", "not too violent", "anything but comedy").

Everything is a soft preference (`RequestIntent.genres`, `.years`, `.tags`, recency-weighted
over the seeker's turns) that `IntentRetriever` turns into scores. Only explicit statements
become hard constraints: "no horror" / "anything but comedy" / "without X" exclude the genre,
"only comedies" requires it, "before 1980" sets year max 1979, "after 2000" year min 2001,
"between 1990 and 1999" both. Hard constraints are merged into the request's own, which are
never loosened (`merge_constraints`): a text constraint that would conflict with an explicit
one is dropped and recorded. Each finding is an `Evidence` with its span, the matched words
and a confidence, recorded on the `understand` span.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from coachrec.data import Catalog
from coachrec.data.linking import MentionFinder
from coachrec.llm.quotable import quotable_genre, quotable_tag
from coachrec.policy import Constraints, Range
from coachrec.serve.candidates import TRACE_LIMIT, Candidates, RequestContext, ServingCatalog, Turn
from coachrec.serve.retrievers import RecommenderRetriever, top_allowed
from coachrec.tracing import NoopSpan, Span, SpanKind

__all__ = [
    "Evidence", "IntentParser", "IntentRetriever", "KeyedRetriever", "RequestIntent", "Understand", "YearPreference",
    "merge_constraints", "model_retriever", "record_keys", "text_keys",
]  # fmt: skip

AnySpan = Span | NoopSpan
Kind = Literal["genre", "mood", "year", "tag", "mention"]

# ---------------------------------------------------------------------- vocabulary tables
# (pattern, genres, confidence). Patterns are matched on lower-cased text at word boundaries;
# a genre the catalog does not have is ignored. More specific patterns come first.
GENRE_TERMS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    (r"rom[\s-]?coms?|romantic[\s-]comed(?:y|ies)", ("Romance", "Comedy"), 0.9),
    (r"romances?|romantic|love[\s-]stor(?:y|ies)|chick[\s-]flicks?", ("Romance",), 0.9),
    (r"horrors?|slashers?", ("Horror",), 0.95),
    (r"scary|scare me|frightening|spooky|creepy|terrifying|zombies?|haunted|ghosts?|gory", ("Horror",), 0.75),
    (r"comed(?:y|ies)|comedic", ("Comedy",), 0.95),
    (r"funny|hilarious|humou?r(?:ous)?|laughs?|silly|goofy", ("Comedy",), 0.75),
    (r"sci[\s-]?fi|science[\s-]fiction", ("Sci-Fi",), 0.95),
    (r"aliens?|outer space|space ?ships?|futuristic|dystopian|robots?", ("Sci-Fi",), 0.6),
    (r"animated|animations?|cartoons?|anime|pixar", ("Animation",), 0.9),
    (r"kids?|children'?s?|family[\s-]friendly|for the (?:whole )?family|family (?:movies?|films?)", ("Children",), 0.7),
    (
        r"action(?:[\s-]packed)?|explosions?|martial[\s-]arts|kung[\s-]fu|superhero(?:es)?|super[\s-]heroe?s?",
        ("Action",),
        0.85,
    ),
    (r"adventures?|adventurous", ("Adventure",), 0.85),
    (r"crime|gangsters?|heists?|mafia|mobsters?|mob (?:movies?|films?)", ("Crime",), 0.85),
    (r"documentar(?:y|ies)", ("Documentary",), 0.95),
    (r"dramas?|dramatic", ("Drama",), 0.9),
    (r"fantasy|fantasies|magical|wizards?|dragons?|fairy[\s-]?tales?", ("Fantasy",), 0.8),
    (r"(?:film[\s-])?noir", ("Film-Noir",), 0.9),
    (r"musicals?", ("Musical",), 0.9),
    (r"myster(?:y|ies)|whodunn?its?|detectives?", ("Mystery",), 0.85),
    (r"thrillers?|suspense(?:ful)?|psychological", ("Thriller",), 0.85),
    (r"war (?:movies?|films?|stor(?:y|ies))|wwii|ww2|world war|military", ("War",), 0.85),
    (r"westerns?|cowboys?", ("Western",), 0.9),
    (r"imax", ("IMAX",), 0.9),
)

# (pattern, mood name, genre weights): soft only, confidence 0.6
MOOD_TERMS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (
        r"feel[\s-]?good|uplifting|heart[\s-]?warming|light[\s-]?hearted|cheerful|happy",
        "feel-good",
        {"Comedy": 0.6, "Romance": 0.3, "Children": 0.2, "Horror": -0.5},
    ),
    (r"sad|tear[\s-]?jerkers?|make me cry|emotional|touching|depressing", "sad", {"Drama": 0.7, "Romance": 0.3}),
    (
        r"violent|violence|bloody|brutal|gritty|gore",
        "violent",
        {"Action": 0.5, "Crime": 0.5, "Thriller": 0.4, "Horror": 0.4, "War": 0.4},
    ),
    (r"dark|disturbing|bleak", "dark", {"Thriller": 0.4, "Crime": 0.4, "Horror": 0.3, "Mystery": 0.3, "Drama": 0.2}),
    (
        r"mind[\s-]?(?:bending|blowing|fuck\w*)|twists?|twisty|thought[\s-]provoking|cerebral|makes? you think",
        "mind-bending",
        {"Thriller": 0.5, "Mystery": 0.5, "Sci-Fi": 0.4, "Drama": 0.2},
    ),
    (r"intense|edge of (?:my|your|the) seat|gripping|tense", "intense", {"Thriller": 0.6, "Action": 0.4}),
    (r"epic", "epic", {"Adventure": 0.5, "Action": 0.3, "War": 0.3, "Fantasy": 0.3, "Drama": 0.2}),
    (r"inspiring|inspirational|true stor(?:y|ies)|biopics?", "inspiring", {"Drama": 0.6}),
    (r"cheesy|campy|b[\s-]movies?", "cheesy", {"Horror": 0.3, "Comedy": 0.3, "Sci-Fi": 0.2}),
    (r"date[\s-]night|date (?:movies?|films?)", "date night", {"Romance": 0.6, "Comedy": 0.4}),
    (r"cute|sweet|wholesome", "cute", {"Romance": 0.4, "Children": 0.3, "Comedy": 0.3, "Animation": 0.2}),
)

_YEAR = r"(?:19|20)\d\d"
_DECADE_WORDS = {
    "twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960, "seventies": 1970,
    "eighties": 1980, "nineties": 1990,
}  # fmt: skip
_DECADE = r"(?:(?:19|20)?\d0'?s|'\d0s|" + "|".join(_DECADE_WORDS) + ")"
_WHEN = rf"({_YEAR}|{_DECADE})"
_THE = r"[\s-]*(?:the\s+)?(?:year\s+)?"

_RE_BETWEEN = re.compile(
    rf"\b(?:between{_THE}{_WHEN}\s+and{_THE}{_WHEN}|from{_THE}{_WHEN}\s*(?:to|through|thru|till|until|-)\s*(?:the\s+)?{_WHEN})"
)
_RE_BEFORE = re.compile(
    rf"\b(before|pre|prior to|older than|earlier than|until|up to|up until|no later than){_THE}{_WHEN}"
)
_RE_AFTER = re.compile(rf"\b(after|post|since|newer than|later than|no earlier than){_THE}{_WHEN}")
_RE_ONWARD = re.compile(
    rf"\b(?:from{_THE})?{_WHEN}\s+(?:(on|onwards?|or later|or newer|and later|and up|and newer)"
    r"|(or earlier|or older|and earlier|and older))\b"
)
_RE_DECADE = re.compile(rf"\b(?:(early|mid|late)[\s-]+)?(?:the\s+)?{_DECADE}(?![\w'])")
_RE_SINGLE_YEAR = re.compile(rf"\b(?:in|from|of|around)\s+({_YEAR})\b")
_RE_RECENT = re.compile(
    r"\b(?:recent(?:ly)?|newer|latest|modern|new releases?|newly released|came out (?:recently|this year|last year)"
    r"|this year'?s?|in theaters)\b"
)
_RE_OLD = re.compile(
    r"(?<!year )(?<!years )\b(?:old(?:er)?|classics?|vintage|oldies?|golden age|black and white|retro)\b"
)

# negation cues: soft ones first (they are longer: "not too" before "not")
_SOFT_NEG = (
    r"not (?:too|very|overly|so|that|really|super|a (?:big |huge )?fan of|into|big on|crazy about)"
    r"|(?:don'?t|do not|didn'?t|did not|doesn'?t) (?:really )?(?:like|love|enjoy|care for|dig|fancy)"
    r"|dislike[sd]?|hate[sd]?|can'?t stand|tired of|sick of|less|fewer|too much"
)
_HARD_NEG = (
    r"no|without|nothing|none|never|anything but|anything except|anything other than|except|excluding|avoid|skip"
    r"|no more|(?:don'?t|do not|doesn'?t) (?:want|show|give|suggest|recommend|need)(?: me)?|not in the mood for"
    r"|rather not|stay away from|not"
)
_RE_NEG = re.compile(rf"\b(?:(?P<soft>{_SOFT_NEG})|(?P<hard>{_HARD_NEG}))\b")
_RE_ONLY = re.compile(r"\b(?:only|nothing but|exclusively|strictly)\b")
_RE_BOUNDARY = re.compile(
    r"[.!?;,:()\n]|\b(?:but|though|although|however|instead|rather|unless|i want|i'd like|i would like|looking for"
    r"|i like|i love|prefer|maybe|something|please)\b"
)
_SCOPE_WORDS = 6
_RE_WORD = re.compile(r"[\w'-]+")

# sentiment about a mentioned title, read in the same clause
_RE_DISLIKE_BEFORE = re.compile(
    r"\b(?:(?:didn'?t|did not|don'?t|do not|never|wasn'?t|was not|doesn'?t) (?:really |much )?"
    r"(?:like|love|enjoy|care for|get into|dig)"
    r"|hated?|disliked?|can'?t stand|couldn'?t stand|not (?:a (?:big |huge )?fan of|into|crazy about)|bored by|sick of"
    r"|tired of)\b(?:(?!\bbut\b)[^.!?;,])*$"
)
_RE_DISLIKE_AFTER = re.compile(
    r"^\W*(?:\w+\W+){0,2}?(?:was|is|were|are|seemed)?\s*(?:so |really |very |kind of |pretty |just |too )?"
    r"(?:terrible|awful|boring|bad|horrible|stupid|overrated|dumb|lame|meh|the worst|sucked|sucks"
    r"|not (?:good|great|that good|for me))\b"
)
_RE_UNSEEN_BEFORE = re.compile(
    r"\b(?:haven'?t|have not|never|not) (?:yet )?(?:seen|watched|heard of)\b(?:(?!\bbut\b)[^.!?;,])*$"
)
_STOP_TAGS = frozenset({"in netflix queue", "netflix queue", "seen more than once", "dvd", "movie", "film", "good"})


_RE_TITLE_CUE = re.compile(
    r"\b(?:like|liked|likes|love|loved|loves|enjoy|enjoyed|seen|saw|watched|watch|watching|about|called|titled"
    r"|recommend|suggest|try|fan of|favou?rite|hated?|disliked?)\W+(?:the\W+|a\W+|an\W+)?$"
)
_RE_LONGER_TITLE = re.compile(r"^(?:\s*[:\u2013-]\s*[A-Z0-9]|\s+(?!I\b)[A-Z][\w']*)")


def _plausible_title(text: str, low: str, start: int, end: int) -> bool:
    """Whether words the title dictionary matched (without a year after them) read as a title.

    A match followed by more capitalised words or ": Subtitle" is part of a longer title the
    catalog lacks ("Infinity" in "Infinity War"). An all lower-case match needs three words or
    a cue before it ("like super troopers", not "anything else"); a single word (or words
    capitalised only as a sentence opens) must not open its sentence unless a cue precedes."""
    if _RE_LONGER_TITLE.match(text[end : end + 40]):
        return False
    surface = text[start:end]
    words = surface.split()
    before = low[max(0, start - 40) : start]
    if not any(c.isupper() for c in surface):
        return len(words) >= 3 or bool(_RE_TITLE_CUE.search(before))
    opening = not before.strip() or before.rstrip()[-1:] in ".!?"
    if len(words) == 1 or not any(c.isupper() for c in surface[1:]):  # "Whatever", "Anything else?"
        return not opening or bool(_RE_TITLE_CUE.search(before))
    return True


def _lower(text: str) -> str:
    """Lower case with typographic apostrophes as `'`, the same length as `text` (spans carry over)."""
    out = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return out if len(out) == len(text) else text.replace("\u2019", "'").replace("\u2018", "'")


def _alternation(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(f"(?P<t{i}>{p})" for i, p in enumerate(patterns)) + r")\b")


def _decade_start(token: str) -> int:
    t = token.strip("'").rstrip("s").rstrip("'")
    if t in _DECADE_WORDS:
        return _DECADE_WORDS[t]
    if token.rstrip("s") in _DECADE_WORDS:
        return _DECADE_WORDS[token.rstrip("s")]
    digits = re.sub(r"\D", "", token)
    if len(digits) == 4:
        return int(digits)
    value = int(digits)
    return (1900 if value >= 20 else 2000) + value  # "80s" -> 1980, "10s" -> 2010


def _when(token: str) -> tuple[int, int]:
    """A year or a decade as an inclusive (first, last) year range."""
    if re.fullmatch(_YEAR, token):
        return int(token), int(token)
    start = _decade_start(token)
    return start, start + 9


# ---------------------------------------------------------------------- what comes out
@dataclass(frozen=True)
class Evidence:
    """One finding: `kind` and `value` (a genre, mood, year range "1980-1989", tag, or item id),
    `polarity` (+1 wanted, -1 not wanted), `hard` (became a hard constraint), `confidence`,
    the `turn` it came from (index into the request's turns) and the character span of the
    matched `text` in that turn."""

    kind: Kind
    value: str
    polarity: int
    hard: bool
    confidence: float
    turn: int
    start: int
    end: int
    text: str
    note: str = ""

    def to_trace(self) -> dict[str, Any]:
        out = {"kind": self.kind, "value": self.value, "polarity": self.polarity, "hard": self.hard,
               "confidence": round(self.confidence, 3), "turn": self.turn, "span": [self.start, self.end],
               "text": self.text}  # fmt: skip
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class YearPreference:
    """A soft era preference: items from `lo`..`hi` (inclusive; None open) get `weight`
    (negative: not wanted); the score decays over `decay` years outside the range."""

    lo: float | None
    hi: float | None
    weight: float
    decay: float = 10.0


@dataclass
class RequestIntent:
    """What the request asks for, typed. Soft preferences: `genres` (genre -> signed weight),
    `years`, `tags` (catalog tag -> signed weight). Mentions: `liked` (item indices that join the
    history, in order), `disliked` (excluded), `unseen` (named as not seen: still candidates).
    Hard constraints the text states: `exclude_genres`, `require_genres`, `year_min`/`year_max`
    (`dropped` lists those not applied because they conflict with the request's constraints).
    `query`: (text, weight) pairs for the semantic retriever (negated phrases blanked out);
    `request_text`: the seeker's last words, for the LLM reranker."""

    turns: tuple[Turn, ...]
    evidence: list[Evidence] = field(default_factory=list)
    genres: dict[str, float] = field(default_factory=dict)
    years: list[YearPreference] = field(default_factory=list)
    tags: dict[str, float] = field(default_factory=dict)
    liked: list[int] = field(default_factory=list)
    disliked: list[int] = field(default_factory=list)
    unseen: list[int] = field(default_factory=list)
    exclude_genres: tuple[str, ...] = ()
    require_genres: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    dropped: list[str] = field(default_factory=list)
    query: list[tuple[str, float]] = field(default_factory=list)
    request_text: str = ""

    @property
    def has_preferences(self) -> bool:
        """Whether anything soft was found for `IntentRetriever` to score."""
        return bool(self.genres or self.years or self.tags)

    @property
    def confidence(self) -> float:
        """The best confidence of any finding (0 when nothing was understood)."""
        return max((e.confidence for e in self.evidence), default=0.0)

    def hard_constraints(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.exclude_genres:
            out["exclude_genres"] = list(self.exclude_genres)
        if self.require_genres:
            out["require_genres"] = list(self.require_genres)
        if self.year_min is not None or self.year_max is not None:
            out["year"] = {"min": self.year_min, "max": self.year_max}
        return out

    def to_trace(self, catalog: ServingCatalog | None = None) -> dict[str, Any]:
        def ids(items: list[int]) -> list[str]:
            return catalog.decode(np.asarray(items, dtype=np.int64)) if catalog is not None else [str(i) for i in items]

        return {
            "evidence": [e.to_trace() for e in self.evidence[:TRACE_LIMIT]],
            "genres": {g: round(w, 3) for g, w in self.genres.items()},
            "years": [{"min": y.lo, "max": y.hi, "weight": round(y.weight, 3)} for y in self.years],
            "tags": {t: round(w, 3) for t, w in self.tags.items()},
            "liked": ids(self.liked),
            "disliked": ids(self.disliked),
            "unseen": ids(self.unseen),
            "hard": self.hard_constraints(),
            "dropped": self.dropped,
            "query": [[t[:200], round(w, 3)] for t, w in self.query],
            "confidence": round(self.confidence, 3),
        }


# ---------------------------------------------------------------------- parsing
@dataclass
class _Utterance:
    """What one utterance says, before recency weighting (cached per (speaker, text))."""

    evidence: list[Evidence]
    mentions: list[tuple[int, str]]  # (item, sentiment: "like" | "neutral" | "dislike" | "unseen")
    query: str


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple[bool, str], _Utterance] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[bool, str]) -> _Utterance | None:
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key: tuple[bool, str], value: _Utterance) -> None:
        with self.lock:
            self.data[key] = value
            if len(self.data) > self.size:
                self.data.popitem(last=False)


class IntentParser:
    """Compiled tables over one catalog's vocabulary (genre names, tags, titles, year range).

    `parse(turns)` -> `RequestIntent`. Seeker turns are weighted by recency (the last one 1,
    each earlier one `recency` times less) for soft preferences; hard constraints hold from any
    seeker turn. Recommender turns contribute only their titles (neutral history)."""

    def __init__(
        self,
        catalog: Catalog,
        popularity: np.ndarray | None = None,
        *,
        recency: float = 0.6,
        min_mention_confidence: float = 0.5,
        max_tags: int = 2000,
        cache_size: int = 4096,
    ) -> None:
        self.catalog = catalog
        _, names = catalog.genre_matrix()
        self.genre_names = [g for g in names if not g.startswith("(")]
        lower = {g.lower(): g for g in self.genre_names}
        self.recency = recency
        self.min_mention_confidence = min_mention_confidence
        self._genre_terms = [(tuple(lower[g.lower()] for g in gs if g.lower() in lower), c) for _, gs, c in GENRE_TERMS]
        self._genre_re = _alternation(p for p, _, _ in GENRE_TERMS)
        self._mood_terms = [
            (name, {lower[g.lower()]: w for g, w in ws.items() if g.lower() in lower}) for _, name, ws in MOOD_TERMS
        ]
        self._mood_re = _alternation(p for p, _, _ in MOOD_TERMS)
        years = catalog.frame["year"].cast(float).to_numpy() if "year" in catalog.frame.columns else np.zeros(0)
        known = years[~np.isnan(years)] if len(years) else years
        self.has_years = bool(len(known))
        self.max_year = int(known.max()) if len(known) else 2020
        self.finder = MentionFinder(catalog, popularity)
        self._vocab_re = re.compile(
            r"^(?:"
            + "|".join([p for p, _, _ in GENRE_TERMS] + [p for p, _, _ in MOOD_TERMS])
            + r"|movies?|films?|classics?)$"
        )
        self.tag_names, self.tag_matrix = self._tag_table(catalog, max_tags)
        self._tag_re = (
            re.compile(
                r"\b(?:" + "|".join(re.escape(t) for t in sorted(self.tag_names, key=len, reverse=True)) + r")\b"
            )
            if self.tag_names
            else None
        )
        self._cache = _LRU(cache_size)

    def _tag_table(self, catalog: Catalog, max_tags: int) -> tuple[list[str], sp.csr_matrix]:
        """Catalog tags worth matching in text (on two or more items, not a genre or stop
        tag, at least 4 characters), most used first, and the item x tag matrix."""
        rows, tags = [], []
        for i, item_tags in enumerate(catalog.frame["tags"].to_list()):
            for t in dict.fromkeys(str(x).lower().strip() for x in item_tags or []):
                rows.append(i)
                tags.append(t)
        if not tags:
            return [], sp.csr_matrix((len(catalog), 0), dtype=np.float32)
        counts: dict[str, int] = {}
        for t in tags:
            counts[t] = counts.get(t, 0) + 1
        keep = [
            t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if n >= 2 and len(t) >= 4 and t not in _STOP_TAGS and not self._vocab_re.match(t) and re.search(r"[a-z]", t)
        ][:max_tags]  # fmt: skip
        col = {t: j for j, t in enumerate(keep)}
        pairs = [(r, col[t]) for r, t in zip(rows, tags, strict=True) if t in col]
        m = sp.csr_matrix(
            (np.ones(len(pairs), dtype=np.float32), ([r for r, _ in pairs], [c for _, c in pairs])),
            shape=(len(catalog), len(keep)),
        )
        m.data[:] = 1.0
        return keep, m

    # -- one utterance ---------------------------------------------------------------------

    def utterance(self, text: str, seeker: bool, turn: int = 0) -> _Utterance:
        """The findings of one utterance (turn index 0; `parse` re-indexes them)."""
        key = (seeker, text)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._utterance(text, seeker)
            self._cache.put(key, cached)
        if turn == 0:
            return cached
        return _Utterance([_with_turn(e, turn) for e in cached.evidence], cached.mentions, cached.query)

    def _utterance(self, text: str, seeker: bool) -> _Utterance:
        low = _lower(text)
        evidence: list[Evidence] = []
        mentions: list[tuple[int, str]] = []
        masked = list(low)
        for found in self.finder.find(text, self.min_mention_confidence):
            surface = low[found.start : found.end].strip()
            if found.year is None and self._vocab_re.match(re.sub(r"^(?:the|a|an)\s+", "", surface)):
                continue  # "a romance" is a genre, not the film "Romance"
            if found.year is None and not _plausible_title(text, low, found.start, found.end):
                continue
            sentiment = self._sentiment(low, found.start, found.end) if seeker else "neutral"
            mentions.append((found.item, sentiment))
            pol = -1 if sentiment == "dislike" else 1
            raw = str(self.catalog.items.ids[found.item])
            words = text[found.start : found.end]
            hard = sentiment == "dislike"
            evidence.append(
                Evidence("mention", raw, pol, hard, found.confidence, 0, found.start, found.end, words, sentiment)
            )
            masked[found.start : found.end] = " " * (found.end - found.start)
        if not seeker:
            return _Utterance(evidence, mentions, "")
        plain = "".join(masked)
        scopes = self._negation_scopes(plain)
        only = [(m.end(), self._scope_end(plain, m.end())) for m in _RE_ONLY.finditer(plain)]
        negated: list[tuple[int, int]] = []

        def polarity(start: int) -> tuple[int, bool]:
            for lo, hi, hard in scopes:
                if lo <= start < hi:
                    return -1, hard
            return 1, False

        for m in self._genre_re.finditer(plain):
            j = int(m.lastgroup[1:]) if m.lastgroup else 0
            genres, conf = self._genre_terms[j]
            pol, hard = polarity(m.start())
            required = pol > 0 and any(lo <= m.start() < hi for lo, hi in only)
            for g in genres:
                evidence.append(Evidence("genre", g, pol, hard or required, conf if not required else max(conf, 0.9),
                                         0, m.start(), m.end(), text[m.start() : m.end()]))  # fmt: skip
            if pol < 0:
                negated.append((m.start(), m.end()))
        for m in self._mood_re.finditer(plain):
            j = int(m.lastgroup[1:]) if m.lastgroup else 0
            name, _ = self._mood_terms[j]
            pol, _hard = polarity(m.start())
            evidence.append(Evidence("mood", name, pol, False, 0.6, 0, m.start(), m.end(), text[m.start() : m.end()]))
            if pol < 0:
                negated.append((m.start(), m.end()))
        if self.has_years:
            evidence += self._years(plain, text, polarity)
        if self._tag_re is not None:
            for m in self._tag_re.finditer(plain):
                pol, _hard = polarity(m.start())
                evidence.append(
                    Evidence("tag", m.group(), pol, False, 0.6, 0, m.start(), m.end(), text[m.start() : m.end()])
                )
                if pol < 0:
                    negated.append((m.start(), m.end()))
        query = list(text)
        for lo, hi, _hard in scopes:  # "no horror please": the embedding should not read "horror"
            if any(lo <= s < hi for s, _ in negated):
                query[max(lo - 12, 0) : hi] = " " * (hi - max(lo - 12, 0))
        return _Utterance(evidence, mentions, re.sub(r"\s+", " ", "".join(query)).strip())

    def _scope_end(self, text: str, start: int) -> int:
        b = _RE_BOUNDARY.search(text, start)
        end = b.start() if b else len(text)
        words = list(_RE_WORD.finditer(text, start, end))
        if len(words) > _SCOPE_WORDS:
            end = words[_SCOPE_WORDS - 1].end()
        return end

    def _negation_scopes(self, text: str) -> list[tuple[int, int, bool]]:
        """(start, end, hard) of each negated stretch: from a cue to the clause's end (at most
        a few words). A bare "not" is hard only right before the term ("not horror")."""
        out = []
        for m in _RE_NEG.finditer(text):
            end = self._scope_end(text, m.end())
            hard = m.group("hard") is not None
            if hard and m.group("hard") == "not":
                words = _RE_WORD.findall(text[m.end() : end])
                hard = len(words) <= 3 and not any(w in ("fan", "into", "big", "really", "much") for w in words)
            if end > m.end():
                out.append((m.end(), end, hard))
        return out

    def _sentiment(self, low: str, start: int, end: int) -> str:
        clause_start = max(low.rfind(c, 0, start) for c in ".!?;") + 1
        before = low[max(clause_start, start - 80) : start]
        after = low[end : end + 60]
        if _RE_UNSEEN_BEFORE.search(before):
            return "unseen"
        if _RE_DISLIKE_BEFORE.search(before) or _RE_DISLIKE_AFTER.search(after):
            return "dislike"
        if re.search(
            r"\b(?:like|love[ds]?|liked|enjoy(?:ed)?|favou?rites?|great|awesome|amazing)\b", before + " " + after[:30]
        ):
            return "like"
        return "neutral"

    def _years(self, plain: str, text: str, polarity: Any) -> list[Evidence]:
        out: list[Evidence] = []
        taken: list[tuple[int, int]] = []

        def free(a: int, b: int) -> bool:
            return not any(a < hi and lo < b for lo, hi in taken)

        def add(
            lo: int | None, hi: int | None, hard: bool, conf: float, m: re.Match[str], pol: int = 1, note: str = ""
        ) -> None:
            value = f"{'' if lo is None else lo}-{'' if hi is None else hi}"
            out.append(Evidence("year", value, pol, hard, conf, 0, m.start(), m.end(), text[m.start() : m.end()], note))
            taken.append((m.start(), m.end()))

        for m in _RE_BETWEEN.finditer(plain):
            a, b = [g for g in m.groups() if g is not None][:2]
            lo, hi = _when(a)[0], _when(b)[1]
            if lo <= hi:
                add(lo, hi, True, 0.95, m)
        for m in _RE_BEFORE.finditer(plain):
            if not free(m.start(), m.end()):
                continue
            first, last = _when(m.group(2))
            inclusive = m.group(1) in ("until", "up to", "up until", "no later than")
            bound = last if inclusive else first - 1
            pol, _ = polarity(m.start())
            if pol < 0:  # "nothing before 2000": from 2000 on
                add(bound + 1, None, True, 0.9, m, note="negated")
            else:
                add(None, bound, True, 0.95, m)
        for m in _RE_AFTER.finditer(plain):
            if not free(m.start(), m.end()):
                continue
            first, last = _when(m.group(2))
            bound = first if m.group(1) == "since" or m.group(1) == "no earlier than" else last + 1
            pol, _ = polarity(m.start())
            if pol < 0:
                add(None, bound - 1, True, 0.9, m, note="negated")
            else:
                add(bound, None, True, 0.95, m)
        for m in _RE_ONWARD.finditer(plain):
            if not free(m.start(), m.end()):
                continue
            first, last = _when(m.group(1))
            if m.group(2):
                add(first, None, True, 0.9, m)
            else:
                add(None, last, True, 0.9, m)
        for m in _RE_DECADE.finditer(plain):
            if not free(m.start(), m.end()):
                continue
            token = m.group(0).split()[-1].removeprefix("the").strip()
            first, last = _when(re.sub(r"^(?:early|mid|late)[\s-]+", "", token))
            part = m.group(1)
            if part == "early":
                first, last = first, first + 3
            elif part == "mid":
                first, last = first + 3, first + 6
            elif part == "late":
                first, last = first + 6, last
            pol, _ = polarity(m.start())
            add(first, last, False, 0.8, m, pol)
        for m in _RE_SINGLE_YEAR.finditer(plain):
            if free(m.start(), m.end()):
                y = int(m.group(1))
                add(y - 1, y + 1, False, 0.6, m, polarity(m.start())[0])
        for m in _RE_RECENT.finditer(plain):
            if free(m.start(), m.end()):
                add(self.max_year - 5, None, False, 0.7, m, polarity(m.start())[0], note="recent")
        for m in _RE_OLD.finditer(plain):
            if free(m.start(), m.end()):
                add(None, 1979, False, 0.6, m, polarity(m.start())[0], note="classic")
        return out

    # -- a whole request -------------------------------------------------------------------

    def parse(self, turns: Sequence[Turn]) -> RequestIntent:
        intent = RequestIntent(tuple(turns))
        seeker_rank = 0
        weights: dict[int, float] = {}
        for j in range(len(turns) - 1, -1, -1):
            if turns[j].speaker == "seeker":
                weights[j] = self.recency**seeker_rank
                seeker_rank += 1
        seen: set[int] = set()
        genre_w = _Signed()
        tag_w = _Signed()
        hard_ex: dict[str, None] = {}
        hard_req: dict[str, None] = {}
        ymin: int | None = None
        ymax: int | None = None
        for j, t in enumerate(turns):
            if not t.text.strip():
                continue
            u = self.utterance(t.text, t.speaker == "seeker", j)
            w = weights.get(j, 0.0)
            intent.evidence += u.evidence
            for item, sentiment in u.mentions:
                if sentiment == "dislike":
                    if item not in intent.disliked:
                        intent.disliked.append(item)
                    if item in seen:
                        intent.liked.remove(item)
                        seen.discard(item)
                elif sentiment == "unseen":
                    if item not in intent.unseen and item not in seen:
                        intent.unseen.append(item)
                elif item not in seen and item not in intent.disliked:
                    intent.liked.append(item)
                    seen.add(item)
            if t.speaker == "seeker" and u.query:
                intent.query.append((u.query, w))
            for e in u.evidence:
                if e.kind == "genre":
                    genre_w.add(e.value, e.polarity * e.confidence * w)
                    if e.hard and e.polarity < 0:
                        hard_ex[e.value] = None
                    elif e.hard:
                        hard_req[e.value] = None
                elif e.kind == "mood":
                    for g, gw in self._mood_terms[[n for n, _ in self._mood_terms].index(e.value)][1].items():
                        genre_w.add(g, e.polarity * gw * e.confidence * w)
                elif e.kind == "tag":
                    tag_w.add(e.value, e.polarity * e.confidence * w)
                elif e.kind == "year":
                    lo_s, hi_s = e.value.split("-")
                    lo, hi = (int(lo_s) if lo_s else None), (int(hi_s) if hi_s else None)
                    if e.hard:
                        ymin = lo if ymin is None or (lo is not None and lo > ymin) else ymin
                        ymax = hi if ymax is None or (hi is not None and hi < ymax) else ymax
                    if w > 0:
                        intent.years.append(YearPreference(lo, hi, e.polarity * e.confidence * w))
        intent.genres = genre_w.result()
        intent.tags = tag_w.result()
        intent.exclude_genres = tuple(g for g in hard_ex if g not in hard_req)
        intent.require_genres = tuple(g for g in hard_req if g not in hard_ex)
        if ymin is not None and ymax is not None and ymin > ymax:
            intent.dropped.append(f"year range {ymin}-{ymax} is empty: not applied")
            ymin = ymax = None
        intent.year_min, intent.year_max = ymin, ymax
        last = [t.text for t in turns if t.speaker == "seeker" and t.text.strip()]
        intent.request_text = " ".join(last[-3:])[-300:]
        return intent


class _Signed:
    """Signed evidence per key: the strongest wish plus the strongest objection (repeating
    "funny" does not make a request twice as funny)."""

    def __init__(self) -> None:
        self.pos: dict[str, float] = {}
        self.neg: dict[str, float] = {}

    def add(self, key: str, value: float) -> None:
        if value > 0:
            self.pos[key] = max(self.pos.get(key, 0.0), value)
        elif value < 0:
            self.neg[key] = min(self.neg.get(key, 0.0), value)

    def result(self) -> dict[str, float]:
        keys = dict.fromkeys([*self.pos, *self.neg])
        out = {k: self.pos.get(k, 0.0) + self.neg.get(k, 0.0) for k in keys}
        return {k: v for k, v in out.items() if abs(v) > 1e-9}


def _with_turn(e: Evidence, turn: int) -> Evidence:
    return Evidence(e.kind, e.value, e.polarity, e.hard, e.confidence, turn, e.start, e.end, e.text, e.note)


# ---------------------------------------------------------------------- constraints
def merge_constraints(explicit: Constraints, intent: RequestIntent, catalog: ServingCatalog) -> Constraints:
    """The request's constraints tightened by the text's hard ones, never loosened.

    Excluded genres and items are added. Required genres are added only when the request
    requires none (adding to an any-of list would widen it) and never when the request
    requires a genre the text excludes. A text year bound applies only where it narrows the
    request's own range without emptying it. What is not applied goes to `intent.dropped`."""
    index = catalog.index
    names = {g.lower() for g in index.genre_names}
    required = {g.lower() for g in explicit.require_genres}
    exclude = list(explicit.exclude_genres)
    for g in intent.exclude_genres:
        if g.lower() not in names:
            continue
        if g.lower() in required:
            intent.dropped.append(f"exclude {g}: the request's constraints require it")
        elif g.lower() not in {x.lower() for x in exclude}:
            exclude.append(g)
    require = list(explicit.require_genres)
    if intent.require_genres:
        if require:
            intent.dropped.append(f"require {list(intent.require_genres)}: the request already requires {require}")
        else:
            require = [
                g for g in intent.require_genres if g.lower() in names and g.lower() not in {x.lower() for x in exclude}
            ]
    ranges = dict(explicit.ranges)
    if (intent.year_min is not None or intent.year_max is not None) and "year" in index.attributes:
        own = ranges.get("year", Range())
        lo = (
            max(x for x in (own.min, intent.year_min) if x is not None)
            if own.min is not None or intent.year_min is not None
            else None
        )
        hi = (
            min(x for x in (own.max, intent.year_max) if x is not None)
            if own.max is not None or intent.year_max is not None
            else None
        )
        if lo is not None and hi is not None and lo > hi:
            intent.dropped.append(f"year {intent.year_min}-{intent.year_max}: outside the request's year range")
        else:
            ranges["year"] = Range(lo, hi)
    elif intent.year_min is not None or intent.year_max is not None:
        intent.dropped.append("year: the catalog has no numeric year attribute")
    exclude_items = list(explicit.exclude_items)
    have = set(exclude_items)
    for raw in catalog.decode(np.asarray(intent.disliked, dtype=np.int64)):
        if raw not in have:
            exclude_items.append(raw)
            have.add(raw)
    return Constraints(
        require_genres=tuple(require),
        exclude_genres=tuple(exclude),
        require_all_genres=explicit.require_all_genres,
        ranges=ranges,
        exclude_seen=explicit.exclude_seen,
        exclude_items=tuple(exclude_items),
    )


# ---------------------------------------------------------------------- the stage
class Understand:
    """Reads the request's text (before `retrieve`): sets `ctx.intent`, appends the liked and
    talked-about titles to `ctx.history`, merges the hard constraints into `ctx.constraints`
    and recompiles `ctx.allowed`. A request without text passes through untouched."""

    kind = SpanKind.TOOL
    own_output = True
    """The stage records its own span output (the intent), not a candidate list."""

    def __init__(self, parser: IntentParser, name: str = "understand") -> None:
        self.parser = parser
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        if not ctx.turns:
            span.set_attribute("text", False)
            return candidates
        intent = self.parser.parse(ctx.turns)
        known = set(ctx.history.tolist())
        added = [i for i in intent.liked if i not in known]
        if added:
            ctx.history = np.concatenate([ctx.history, np.asarray(added, dtype=np.int64)])
        if intent.disliked:
            bad = np.asarray(intent.disliked, dtype=np.int64)
            ctx.history = ctx.history[~np.isin(ctx.history, bad)]
        merged = merge_constraints(ctx.constraints, intent, ctx.catalog)
        if merged != ctx.constraints or added or intent.disliked:
            ctx.constraints = merged
            ctx.allowed = ctx.catalog.index.mask(merged, ctx.history)
        ctx.intent = intent
        mentions = len(intent.liked) + len(intent.disliked) + len(intent.unseen)
        span.set_attributes({
            "text": True, "turns": len(ctx.turns), "mentions": mentions, "history_added": len(added),
            "confidence": round(intent.confidence, 3),
        })  # fmt: skip
        if span.recording:
            span.set_input(
                {"turns": [{"speaker": t.speaker, "text": t.text[-2000:]} for t in ctx.turns[-TRACE_LIMIT:]]}
            )
            span.set_output(
                intent.to_trace(ctx.catalog)
                | {"constraints": merged.to_dict(), "allowed_in_catalog": int(ctx.allowed.sum())}
            )
        return candidates


# ---------------------------------------------------------------------- the intent retriever
class IntentRetriever:
    """Items scored by how well they match the soft preferences, times popularity.

    match = genre weights . item genres + era preferences (full weight inside a range, decaying
    over `decay` years outside) + tag weights . item tags; score = match x popularity^`alpha`
    (popularity: log counts scaled to [0, 1]) for items with a positive match. A request with
    only objections ("not too violent") retrieves nothing, but still scores candidates other
    retrievers found (`score_items`), so the blend can push those items down."""

    name = "intent"

    def __init__(
        self, parser: IntentParser, catalog: ServingCatalog, popularity: np.ndarray, n: int = 200, alpha: float = 1.0
    ) -> None:
        if n < 1:
            raise ValueError(f"a retriever needs n >= 1 candidates, got {n}")
        self.parser = parser
        self.n = n
        self.names = {g: j for j, g in enumerate(catalog.index.genre_names)}
        self.genres = catalog.index.genres.astype(np.float32)
        self._genre_norm = np.sqrt(np.maximum(self.genres.sum(axis=1), 1.0))
        self.year = catalog.index.attributes.get("year")
        pop = np.log1p(np.maximum(np.asarray(popularity, dtype=np.float64), 0.0))
        self.popularity = (pop / max(pop.max(), 1e-12)) ** alpha
        self.tags = {t: j for j, t in enumerate(parser.tag_names)}
        self.tag_matrix = parser.tag_matrix.tocsc()

    def match(self, intent: RequestIntent) -> np.ndarray:
        """The match score of every item (0 where nothing in the intent applies)."""
        out = np.zeros(len(self.genres), dtype=np.float64)
        if intent.genres:
            w = np.zeros(self.genres.shape[1], dtype=np.float32)
            for g, v in intent.genres.items():
                if g in self.names:
                    w[self.names[g]] = v
            out += (self.genres @ w) / self._genre_norm  # a pure romance matches "romance" better than a 6-genre film
        if intent.years and self.year is not None:
            y = self.year
            for pref in intent.years:
                lo = -np.inf if pref.lo is None else pref.lo
                hi = np.inf if pref.hi is None else pref.hi
                dist = np.where(y < lo, lo - y, np.where(y > hi, y - hi, 0.0))
                out += pref.weight * np.nan_to_num(np.clip(1.0 - dist / pref.decay, 0.0, 1.0))
        for t, v in intent.tags.items():
            j = self.tags.get(t)
            if j is not None:
                col = self.tag_matrix[:, j]
                out[col.indices] += v
        return out

    def _scores(self, ctx: RequestContext) -> np.ndarray | None:
        cached = ctx.attributes.get("intent.scores")
        if cached is not None:
            return np.asarray(cached)
        intent = ctx.intent
        if intent is None or not intent.has_preferences:
            return None
        m = self.match(intent)
        scores = np.where(m > 0, m * self.popularity, m)
        ctx.attributes["intent.scores"] = scores
        return scores

    def retrieve(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        scores = self._scores(ctx)
        if scores is None:
            return np.zeros(0, np.int64), np.zeros(0)
        return top_allowed(scores, ctx.allowed & (scores > 0), self.n)

    def score_items(self, ctx: RequestContext, idx: np.ndarray) -> np.ndarray | None:
        scores = self._scores(ctx)
        return None if scores is None else scores[np.asarray(idx, dtype=np.int64)]

    def reasons(self, ctx: RequestContext, idx: np.ndarray) -> list[str]:
        intent = ctx.intent
        if intent is None:
            return ["matches your request"] * len(idx)
        # catalog genre and tag names are quoted only in the allowlisted form (coachrec.llm.quotable)
        wanted = [
            g
            for g, v in sorted(intent.genres.items(), key=lambda kv: -kv[1])
            if v > 0 and g in self.names and quotable_genre(g)
        ]
        tags = [
            t
            for t, v in sorted(intent.tags.items(), key=lambda kv: -kv[1])
            if v > 0 and t in self.tags and quotable_tag(t)
        ]
        out = []
        for item in np.asarray(idx, dtype=np.int64).tolist():
            parts = []
            have = [g for g in wanted if self.genres[item, self.names[g]]]
            if have:
                parts.append(" and ".join(have[:2]))
            year = self.year[item] if self.year is not None else np.nan
            if not np.isnan(year) and any(
                p.weight > 0 and (p.lo is None or year >= p.lo) and (p.hi is None or year <= p.hi) for p in intent.years
            ):
                parts.append(f"from {int(year)}")
            hit = [t for t in tags if self.tag_matrix[item, self.tags[t]]]
            if hit:
                parts.append(f'tagged "{hit[0]}"')
            out.append(", ".join(parts) + ", as you asked" if parts else "matches what you asked for")
        return out


# ---------------------------------------------------------------------- text keys
KEY_KINDS: tuple[Kind, ...] = ("genre", "mood", "tag", "year")
"""What the words ask for that can key a conversation model beside titles (all but mentions)."""


def text_keys(parser: IntentParser, turns: Sequence[Turn]) -> list[str]:
    """What a conversation's words ask for, as keys a model learned from conversations reads
    beside the titles (`CoMentionRecommender` with `key_weight`): the wanted (positive)
    genres, moods, catalog tags (people, topics) and eras every utterance names, seeker's and
    recommender's alike (both steer a conversation: "Oh, you like scary movies?"), oldest first,
    as `kind:value` ("genre:horror", "tag:tom hanks", "year:1980-1989"). Read from the text by
    the intent parser only: the same keys when a model is fitted on records
    (`record_keys`) and when a request is served."""
    out: list[str] = []
    for t in turns:
        if not t.text.strip():
            continue
        found = parser.utterance(t.text, True).evidence
        for e in sorted(found, key=lambda e: e.start):
            if e.kind in KEY_KINDS and e.polarity > 0:
                out.append(f"{e.kind}:{e.value.lower()}")
    return out


def record_keys(parser: IntentParser, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Request records (the bundled `redial-ml` layout) with `keys`: `text_keys` of each
    record's `context` (the conversation so far); a record without context gets none."""
    from coachrec.serve.candidates import as_turns

    return [dict(r) | {"keys": text_keys(parser, as_turns(r.get("context") or None))} for r in records]


class KeyedRetriever(RecommenderRetriever):
    """A conversation model that reads the request's words too: its history plus the request's
    `text_keys` (`model.score_keyed(histories, keys)`). A request without text scores as
    through `RecommenderRetriever`."""

    def __init__(
        self, model: Any, parser: IntentParser, n: int = 200, name: str | None = None, *, fill: bool = False
    ) -> None:
        super().__init__(model, n, name, fill=fill)
        self.parser = parser
        self.keyed: Any = model

    def keys(self, ctx: RequestContext) -> list[str]:
        cached = ctx.attributes.get("text.keys")
        if cached is None:
            cached = text_keys(self.parser, ctx.turns) if ctx.turns else []
            ctx.attributes["text.keys"] = cached
        return list(cached)

    def score_contexts(self, ctxs: list[RequestContext]) -> np.ndarray:
        keys = [self.keys(ctx) for ctx in ctxs]
        return np.asarray(self.keyed.score_keyed([ctx.history for ctx in ctxs], keys), dtype=np.float64)


def model_retriever(model: Any, n: int, parser: IntentParser | None, *, fill: bool = False) -> RecommenderRetriever:
    """The retriever serving a fitted model: `KeyedRetriever` for one that learned text keys
    (and a pipeline that reads text), else `RecommenderRetriever`; `fill`: it scores every
    merged candidate (`PipelineConfig.fill`)."""
    if parser is not None and getattr(model, "n_keys", 0) > 0 and hasattr(model, "score_keyed"):
        return KeyedRetriever(model, parser, n, fill=fill)
    return RecommenderRetriever(model, n, fill=fill)


def popularity_of(models: Sequence[Any], n_items: int) -> np.ndarray:
    """Item popularity for ordering same-titled mentions and the intent prior: a popularity
    model's counts when the stack has one, else how often each item occurs in the first
    model's training histories."""
    for m in models:
        counts = getattr(m, "counts", None)
        if counts is not None and len(counts) == n_items:
            return np.asarray(counts, dtype=np.float64)
    hist = getattr(models[0], "_hist_items", None) if models else None
    if hist is not None and len(hist):
        return np.bincount(np.asarray(hist, dtype=np.int64), minlength=n_items).astype(np.float64)[:n_items]
    return np.zeros(n_items)


def as_mapping(turns: Sequence[Turn]) -> list[Mapping[str, str]]:
    return [{"speaker": t.speaker, "text": t.text} for t in turns]


# ---------------------------------------------------------------------- simulated requests
GENRE_PHRASES: dict[str, tuple[str, ...]] = {
    "Action": ("an action movie", "something with lots of action"), "Adventure": ("an adventure", "an adventure movie"),
    "Animation": ("an animated movie", "a cartoon"), "Children": ("something for my kids", "a family movie"),
    "Comedy": ("something funny", "a comedy", "a good comedy"), "Crime": ("a crime movie", "a heist or gangster film"),
    "Documentary": ("a documentary",), "Drama": ("a drama", "a good drama"), "Fantasy": ("a fantasy movie",),
    "Film-Noir": ("a film noir",), "Horror": ("a horror movie", "something scary"), "Musical": ("a musical",),
    "Mystery": ("a mystery", "a whodunit"), "Romance": ("a romance", "a romantic movie"),
    "Sci-Fi": ("a sci fi movie", "science fiction"), "Thriller": ("a thriller", "something suspenseful"),
    "War": ("a war movie",), "Western": ("a western",),
}  # fmt: skip
_TEMPLATES = (
    "I liked {titles}. Can you recommend {wish}?",
    "Looking for {wish}, something like {titles}.",
    "Hi! I really enjoyed {titles}. Any suggestions for {wish}?",
    "I want {wish}. I loved {titles}.",
)
_TITLE_ONLY = ("I liked {titles}. What should I watch next?", "Something like {titles} please.", "I loved {titles}.")
_WISH_ONLY = ("I'm in the mood for {wish}.", "Can you recommend {wish}?", "{wish} please")


def _display_title(title: str) -> str:
    """`Matrix, The (1999)` -> `The Matrix (1999)` (how people write it)."""
    m = re.match(r"^(?P<body>.+?), (?P<art>The|A|An) \((?P<year>\d{4})\)$", title)
    return f"{m.group('art')} {m.group('body')} ({m.group('year')})" if m else title


def simulated_requests(
    histories: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    catalog: Catalog,
    *,
    seed: int = 0,
    anonymous: float = 0.5,
) -> tuple[list[np.ndarray], list[str]]:
    """Requests written from interaction data, for learning the text blend where no real
    requests exist: for each (history, target), a message naming one to three recent history
    titles and/or asking for one of the target's genres (and, sometimes, its era), from a few
    templates. Half the requests (`anonymous`) keep no history (the titles in the text are all
    there is, as in a conversation), the rest keep it. Returns (histories, texts).

    What the target's genre says is what a person asking for it would write; the titles are
    the history's own. A simulation: it teaches the blend how much the text stages add over
    the collaborative ones, not how people phrase things."""
    rng = np.random.default_rng(seed)
    titles = catalog.titles()
    genres = catalog.frame["genres"].to_list()
    years = catalog.frame["year"].to_list() if "year" in catalog.frame.columns else [None] * len(catalog)
    out_h: list[np.ndarray] = []
    out_t: list[str] = []
    for h, tg in zip(histories, targets, strict=True):
        h = np.asarray(h, dtype=np.int64)
        t = int(np.asarray(tg)[0])
        recent = h[-20:]
        named: np.ndarray = (
            rng.choice(recent, min(len(recent), int(rng.integers(1, 4))), replace=False) if len(recent) else recent
        )
        names = [_display_title(titles[int(i)]) for i in named]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1] if names else ""
        g = [x for x in genres[t] if x in GENRE_PHRASES]
        wish = str(rng.choice(GENRE_PHRASES[str(rng.choice(g))])) if g and rng.random() < 0.8 else ""
        y = years[t]
        if wish and y is not None and rng.random() < 0.3:
            wish += f" from the {int(y) // 10 * 10 % 100:02d}s" if int(y) < 2000 else f" from the {int(y) // 10 * 10}s"
        if wish and joined:
            text = str(rng.choice(_TEMPLATES)).format(titles=joined, wish=wish)
        elif joined:
            text = str(rng.choice(_TITLE_ONLY)).format(titles=joined)
        elif wish:
            text = str(rng.choice(_WISH_ONLY)).format(wish=wish)
        else:
            text = "Any recommendations?"
        out_t.append(text[0].upper() + text[1:])
        out_h.append(np.zeros(0, np.int64) if rng.random() < anonymous else h)
    return out_h, out_t
