"""What catalog text a reason may quote: an allowlist of forms, not a list of known attacks.

A reason shown to a caller ("Because you watched Toy Story (1995)", "tagged “great cast”")
is assembled from facts; the only catalog text in it is a title, a genre or a tag, and each is
quoted only if it has the plain form such a fact has in a real catalog. Anything else - a title
with a zero-width or bidi character, a word mixing Latin and Cyrillic letters (a homoglyph
spoof), full-width or mathematical letters, markup or chat-marker characters, a URL or e-mail
address, a sentence that reads as an instruction (also after folding homoglyphs), a title whose
year is not the item's, or no year where the catalog's titles carry one - is never quoted: the
reason names the genre instead, or is generic. The rules reject some unusual real titles; a
reason then says less, it never says something a catalog author smuggled in.

`reads_as_instruction` runs on a *skeleton* of the text (NFKC, invisible characters removed,
common Cyrillic/Greek look-alikes folded to Latin), so "іgnore previous instructions" with a
Cyrillic і, or "ig\u200bnore", reads as what it is.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

_CONFUSABLES = str.maketrans(
    {
        # Cyrillic look-alikes of Latin letters
        "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
        "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x",
        "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ı": "i",
        "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
        "Т": "T", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "Ү": "Y",
        # Greek look-alikes
        "α": "a", "ο": "o", "ν": "v", "ρ": "p", "τ": "t", "υ": "u", "ι": "i", "κ": "k",
        "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
        "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    }
)  # fmt: skip
"""Letters that render like Latin ones, folded to them for instruction detection only."""

DATA_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass|skip|discard|drop)\b.{0,40}"
    r"\b(instruction|prompt|above|previous|prior|earlier|rules?|guidance|directions?|guidelines?|context)"
    r"|\bpay\s+no\s+attention\b|\bdo\s+not\s+(follow|obey|listen)\b|\b(never\s+mind|nevermind)\b"
    r"|\b(recommend|suggest|rank|promote|put|list|show|pick|choose)\s+(item|movie|film|title|number|this)\b"
    r"|\b(rank|list)\b.{0,30}\b(first|highest|above\s+all)\b"
    r"|\b(you\s+must|you\s+are\s+now|you\s+will\s+now|from\s+now\s+on|act\s+as|pretend\s+to\s+be)\b"
    r"|\b(new|updated|real|actual|secret|hidden)\s+(instructions?|orders?|task|rules?)\b"
    r"|\b(system|developer)\s+(prompt|message|override|note)\b"
    r"|\b(answer|output|respond|reply|print|say|write)\s+(with|only|exactly|the\s+letter)\b"
    r"|\b(as\s+an?\s+(ai|assistant|language\s+model))\b"
    r"|\b(system|assistant|developer)\s*:",
    re.IGNORECASE,
)
"""Text that reads as an instruction to a model, matched on `skeleton(text)`. It is one rule of
the allowlist, not the defence: a paraphrase it misses still has to pass every other rule, and
the prompt and output constraints do not depend on it."""

LINK_PATTERN = re.compile(
    r"[a-z][a-z0-9+.-]*://[^\s\"'<>]*|\bwww\.[^\s\"'<>]*|[\w.+-]*\w@\w[\w-]*(?:\.[\w-]+)*"
    r"|\b[\w-]+\.(?:com|net|org|io|ai|app|dev|xyz|info|biz|ru|cn|co|me|ly|gg|site|online|top|link|click|shop|tk|to|"
    r"sh|tv)\b[^\s\"'<>]*",
    re.IGNORECASE,
)
"""A URL, a bare domain or an e-mail address: never quoted from the catalog, never supported in a reason."""
_YEAR_SUFFIX = re.compile(r"\((\d{4})\)\s*$")
_TITLE_PUNCTUATION = frozenset(" '’‘\".,:;!?¡¿&()-–—/·…+*#$%½⅓¼¾°²³")
_TAG_PUNCTUATION = frozenset(" '’-&.()!")
_GENRE_PUNCTUATION = frozenset(" '-&/")
_JOINED_SCRIPTS = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK"}


def skeleton(text: str) -> str:
    """`text` as it reads: NFKC, invisible and control characters removed, look-alikes folded."""
    if text.isascii() and text.isprintable():
        return text
    out = unicodedata.normalize("NFKC", str(text))
    out = "".join(ch for ch in out if unicodedata.category(ch)[0] != "C" or ch in "\t\n ")
    return out.translate(_CONFUSABLES)


_TRIGGERS = frozenset((
    "ignore", "disregard", "forget", "override", "bypass", "skip", "discard", "drop", "pay", "do", "never",
    "nevermind", "recommend", "suggest", "rank", "promote", "put", "list", "show", "pick", "choose", "you",
    "from", "act", "pretend", "new", "updated", "real", "actual", "secret", "hidden", "system", "developer",
    "answer", "output", "respond", "reply", "print", "say", "write", "as", "assistant",
))  # fmt: skip
"""The first word of every alternative of `DATA_INSTRUCTION`: a text holding none cannot match."""
_WORDS = re.compile(r"[a-z]+")


def reads_as_instruction(text: str) -> bool:
    """Whether `text` reads as an instruction to a model (an injection attempt in data)."""
    skel = skeleton(text)
    if _TRIGGERS.isdisjoint(_WORDS.findall(skel.lower())):
        return False
    return bool(DATA_INSTRUCTION.search(skel))


def _links(text: str) -> bool:
    if "://" not in text and "@" not in text and "." not in text:
        return False
    return bool(LINK_PATTERN.search(text))


@lru_cache(maxsize=8192)
def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    first = name.split(" ", 1)[0] if name else "UNKNOWN"
    return _JOINED_SCRIPTS.get(first, first)


def plain_text(text: str, punctuation: frozenset[str], max_chars: int, max_words: int) -> bool:
    """Letters (with their accents), digits and the given punctuation only: no control,
    format (zero-width, bidi), private-use or unassigned character, no compatibility letter
    (full-width, mathematical), one script per word, no URL or e-mail address, not an
    instruction, within the length limits."""
    text = re.sub(" +", " ", text).strip(" ")  # stray spaces are harmless; other whitespace is not
    if not text or len(text) > max_chars or text.count(" ") >= max_words:
        return False
    if text.isascii():  # the common case: one script, no compatibility letters
        if not all(ch.isalnum() or ch in punctuation for ch in text):
            return False
        return not (_links(text) or reads_as_instruction(text))
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] == "L":
            if unicodedata.decomposition(ch).startswith("<"):  # <wide>, <font>, <circle>, ...
                return False
        elif cat[0] == "M":
            continue
        elif cat == "Nd":
            if not ch.isascii():
                return False
        elif ch not in punctuation:
            return False
    for word in re.findall(r"[^\W\d_]+", text):
        if len({_script(ch) for ch in word if unicodedata.category(ch)[0] == "L"}) > 1:
            return False
    return not (_links(text) or reads_as_instruction(text))


def quotable_title(title: str, year: int | None = None, *, years_in_titles: bool = False) -> bool:
    """Whether a reason may name this title. `year`: the item's year in the catalog, which a
    trailing `(YYYY)` must equal; `years_in_titles`: the catalog's titles end with their year,
    so a title without one is off-form (a fake, or a broken row) and is not quoted."""
    if not plain_text(title, _TITLE_PUNCTUATION, 150, 24):
        return False
    match = _YEAR_SUFFIX.search(title.rstrip(" "))
    if match is None:
        return not years_in_titles
    return year is None or int(match.group(1)) == int(year)


def quotable_tag(tag: str) -> bool:
    """Whether a reason may quote this tag: at most five plain words."""
    return plain_text(tag, _TAG_PUNCTUATION, 40, 5)


def quotable_genre(genre: str) -> bool:
    """Whether a reason may name this genre: at most three plain words (`(no genres listed)` is not one)."""
    return plain_text(genre, _GENRE_PUNCTUATION, 30, 3)


def years_in_titles(titles: Sequence[str], share: float = 0.9) -> bool:
    """Whether at least `share` of the catalog's titles end with a `(YYYY)` year."""
    titles = [t for t in titles if t]
    if not titles:
        return False
    return sum(bool(_YEAR_SUFFIX.search(t.rstrip(" "))) for t in titles) >= share * len(titles)


def quotable_titles(titles: Sequence[str], years: Sequence[int | None] | None = None) -> list[bool]:
    """`quotable_title` for every title of a catalog (rows aligned with `years`)."""
    require = years_in_titles([str(t or "") for t in titles])
    ys = list(years) if years is not None else [None] * len(titles)
    return [
        bool(t) and quotable_title(str(t), _year(y), years_in_titles=require) for t, y in zip(titles, ys, strict=True)
    ]


def _year(value: object) -> int | None:
    try:
        year = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(year) if math.isfinite(year) else None
