"""Conversational recommendation data in the CRS layout (ReDial as processed by CRSLab and
published with He et al., CIKM 2023): recommender turns, their context, mentioned entities,
targets, dialog ids, and the entity table.

A folder holds `test.jsonl` (one recommender turn a line: `context`, `resp`, `rec`,
`prev_entity`, `entity`, `dialog_id`, `turn_id`, ...), `entity2id.json` (DBpedia URI -> id) and
`item_ids.json` (the entity ids that are movies: the candidate set).

"Mentioned before" follows the published evaluation (He et al.'s `extract_movie_name`, then
`gt in prev`): a target counts as mentioned before when an earlier entity has the same *name*
(the DBpedia title with every parenthetical removed), not only the same id; "It (1990)" after
"It (2017)" was mentioned before. By id alone 28 ReDial targets (in 28 turns) would count as new;
with the name rule every one of the 4,778 reference rows agrees, in order
(`Conversations.condition_mismatches` lists the difference).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import polars as pl

from coachrec.data.errors import DataError

__all__ = [
    "SPEAKERS", "Conversations", "Speaker", "display_name", "load_conversations", "match_name", "speaker_of",
]  # fmt: skip

Speaker = Literal["seeker", "recommender"]
SPEAKERS: tuple[Speaker, Speaker] = ("seeker", "recommender")
DBPEDIA = "http://dbpedia.org/resource/"

_PARENS = re.compile(r"\([^()]*\)")
_SPACES = re.compile(r"\s+")


def _strip_uri(uri: str) -> str:
    s = uri.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1]
    return s.removeprefix(DBPEDIA)


def display_name(uri: str) -> str:
    """`<http://dbpedia.org/resource/Water_(1985_film)>` -> `Water (1985 film)`."""
    return _strip_uri(uri).replace("_", " ")


def match_name(uri: str) -> str:
    """The name two entities are "the same movie" by in the published evaluation: the last path
    segment, `_`, `-` and `>` as spaces, every parenthetical removed, spaces collapsed
    (`Water_(1985_film)` -> `Water`). Case-sensitive, as there."""
    text = uri.split("/")[-1].replace("_", " ").replace("-", " ").replace(">", " ")
    return _SPACES.sub(" ", _PARENS.sub("", text)).strip()


def speaker_of(position: int) -> Speaker:
    """Speaker of context utterance `position`: the first element is an empty recommender slot,
    then seeker and recommender alternate (odd positions are the seeker's)."""
    return SPEAKERS[0] if position % 2 == 1 else SPEAKERS[1]


_REQUIRED = ("context", "resp", "rec", "prev_entity", "dialog_id", "turn_id")


@dataclass
class Conversations:
    """Recommender turns of conversations, columnar.

    - `turns`: one row per turn (`turn` = 0-based line number, the reference files' `idx`):
      `dialog_id`, `turn_id`, `context` (utterances so far; `speaker_of(position)` says whose),
      `response`, `response_entities`, `response_names` (the dataset's names of the entities
      in the response as written there, "Click (2006)"; not aligned with `response_entities`),
      `prev_entity` (entity ids mentioned before, oldest
      first), `prev_age` (utterances since each was last mentioned, 0 = the last utterance of
      the context; estimated from where its name occurs in the text, else the end of the window
      where it first appears), `targets` (entity ids recommended in the response, `rec` order).
    - `targets`: one row per (turn, target): `turn`, `dialog_id`, `position` (in `rec`),
      `target`, `condition` ("rec": new; "dis": mentioned before, by name), `mentioned_by_id`,
      `in_candidates`.
    - `entities`: `id`, `uri`, `name` (display), `match_name`, `is_movie`.
    - `candidates`: the candidate entity ids (the movies), in file order; a score matrix over
      the candidate set has one column per entry.
    """

    turns: pl.DataFrame
    targets: pl.DataFrame
    entities: pl.DataFrame
    candidates: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        self._column = {int(e): j for j, e in enumerate(self.candidates.tolist())}

    # ------------------------------------------------------------------ sizes
    @property
    def n_turns(self) -> int:
        return self.turns.height

    @property
    def n_targets(self) -> int:
        return self.targets.height

    @property
    def n_dialogs(self) -> int:
        return self.turns["dialog_id"].n_unique()

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

    def __repr__(self) -> str:
        return (
            f"Conversations({self.source!r}: {self.n_turns} turns, {self.n_targets} targets, "
            f"{self.n_dialogs} dialogs, {self.n_candidates} candidates)"
        )

    # ------------------------------------------------------------------ lookups
    def column(self, entity_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Candidate column of each entity id, -1 for entities outside the candidate set."""
        return np.fromiter((self._column.get(int(e), -1) for e in entity_ids), dtype=np.int64, count=len(entity_ids))

    def row(self, turn: int) -> int:
        """Row of `turns` holding turn index `turn` (equal unless this is a `subset`)."""
        if not hasattr(self, "_row_of"):
            self._row_of = {int(t): i for i, t in enumerate(self.turns["turn"].to_list())}
        try:
            return self._row_of[int(turn)]
        except KeyError:
            raise KeyError(f"turn {turn} is not in {self!r}") from None

    def mentions(self, turns: Sequence[int] | np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
        """Earlier-mentioned entity ids (oldest first) and their ages, for each turn index."""
        if not hasattr(self, "_prev_lists"):
            self._prev_lists = (self.turns["prev_entity"].to_list(), self.turns["prev_age"].to_list())
        prev, age = self._prev_lists
        rows = [self.row(t) for t in turns]
        return [prev[r] for r in rows], [age[r] for r in rows]

    def context(self, turn: int) -> list[tuple[Speaker, str]]:
        """The turn's context as (speaker, utterance), the empty first slot left out."""
        utts = self.turns["context"][self.row(turn)].to_list()
        return [(speaker_of(i), u) for i, u in enumerate(utts) if i > 0 or u.strip()]

    def entity_names(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        return [self._names()[int(i)] for i in ids]

    def _names(self) -> dict[int, str]:
        if not hasattr(self, "_name_of"):
            self._name_of = dict(zip(self.entities["id"].to_list(), self.entities["name"].to_list(), strict=True))
        return self._name_of

    def dialog_codes(self) -> np.ndarray:
        """A dense integer per turn for its dialog (dialogs numbered in first-seen order)."""
        return self.turns["dialog_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)

    def folds(self, n_folds: int = 2, seed: int = 0) -> np.ndarray:
        """Fold of each turn, by dialog: the sorted dialog ids are shuffled with `seed` and dealt
        round-robin, so every fold holds whole dialogs and the assignment does not depend on
        the order of the file."""
        if n_folds < 2:
            raise ValueError(f"n_folds must be at least 2, got {n_folds}")
        dialogs = sorted(set(self.turns["dialog_id"].to_list()))
        order = np.random.default_rng(seed).permutation(len(dialogs))
        fold_of = {dialogs[i]: k % n_folds for k, i in enumerate(order)}
        return np.array([fold_of[d] for d in self.turns["dialog_id"].to_list()], dtype=np.int64)

    def subset(self, turns: np.ndarray | Sequence[int]) -> Conversations:
        """Only the given turns (by `turn` index); turn indices are kept, not renumbered."""
        keep = np.asarray(turns, dtype=np.int64)
        return Conversations(
            self.turns.filter(pl.Series(np.isin(self.turns["turn"].to_numpy(), keep))),
            self.targets.filter(pl.Series(np.isin(self.targets["turn"].to_numpy(), keep))),
            self.entities,
            self.candidates,
            self.source,
        )

    def condition_mismatches(self) -> pl.DataFrame:
        """Targets whose condition differs between the name rule (used) and the id rule: a
        same-named, different entity was mentioned before (e.g. the 1990 "It" after the 2017
        one). Columns as `targets`, plus the target's name."""
        diff = self.targets.filter((pl.col("condition") == "dis") != pl.col("mentioned_by_id"))
        return diff.with_columns(pl.Series("name", self.entity_names(diff["target"].to_list()), dtype=pl.Utf8))


# ---------------------------------------------------------------------- loading
def _existing(path: Path) -> Path:
    """`path`, or `path.gz` when only the compressed file is there."""
    gz = path.with_name(path.name + ".gz")
    if path.exists() or not gz.exists():
        return path
    return gz


def _open_text(path: Path) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _read_json(path: Path) -> Any:
    path = _existing(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with _open_text(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _entity_table(path: Path) -> dict[int, str]:
    raw = _read_json(path)
    path = _existing(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object of URI -> entity id, got {type(raw).__name__}")
    uri_of: dict[int, str] = {}
    for uri, eid in raw.items():
        if not isinstance(eid, int) or isinstance(eid, bool):
            raise DataError(f"{path}: entity {uri!r} has id {eid!r}; ids must be integers")
        if eid in uri_of:
            raise DataError(f"{path}: entity id {eid} is used twice ({uri_of[eid]!r} and {uri!r})")
        uri_of[eid] = uri
    return uri_of


def _int_list(value: Any, key: str, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise DataError(f"{where}: {key!r} must be a list of integer entity ids, got {value!r:.80}")
    return value


def _parse_turn(line: str, where: str, uri_of: dict[int, str]) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")
    context = obj["context"]
    if not isinstance(context, list) or not all(isinstance(u, str) for u in context):
        raise DataError(f"{where}: 'context' must be a list of utterance strings")
    if not isinstance(obj["resp"], str):
        raise DataError(f"{where}: 'resp' must be a string")
    rec = _int_list(obj["rec"], "rec", where)
    prev = _int_list(obj["prev_entity"], "prev_entity", where)
    resp_entities = _int_list(obj.get("entity", []), "entity", where)
    written = obj.get("entity_name", [])
    if not isinstance(written, list) or not all(isinstance(n, str) for n in written):
        raise DataError(f"{where}: 'entity_name' must be a list of strings")
    for key, ids in (("rec", rec), ("prev_entity", prev), ("entity", resp_entities)):
        unknown = [e for e in ids if e not in uri_of]
        if unknown:
            raise DataError(f"{where}: {key!r} has entity id(s) {unknown[:5]} not in entity2id.json")
    if len(set(rec)) != len(rec):
        raise DataError(f"{where}: 'rec' repeats an entity id: {rec}")
    if (
        not isinstance(obj["dialog_id"], str | int)
        or isinstance(obj["turn_id"], bool)
        or not isinstance(obj["turn_id"], int)
    ):
        raise DataError(f"{where}: 'dialog_id' must be a string and 'turn_id' an integer")
    return {
        "dialog_id": str(obj["dialog_id"]),
        "turn_id": int(obj["turn_id"]),
        "context": context,
        "response": obj["resp"],
        "response_entities": resp_entities,
        "response_names": written,
        "prev_entity": list(dict.fromkeys(prev)),
        "targets": rec,
    }


@functools.lru_cache(maxsize=65536)
def _name_pattern(name: str) -> re.Pattern[str] | None:
    """A whole-word search for an entity name; names shorter than 4 characters ("It", "Up")
    must match case too, or every "it" would be a mention."""
    if not name.strip():
        return None
    flags = re.IGNORECASE if len(name) >= 4 else 0
    return re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)", flags)


def _ages(rows: list[dict[str, Any]], name_of: dict[int, str]) -> None:
    """Order each turn's `prev_entity` oldest first and give each its age in utterances.

    Turns of a dialog are walked in `turn_id` order. An entity's last mention is the last
    utterance that holds its match name as whole words (searched in the utterances added
    since the previous turn); otherwise, for an entity of the previous turn's response, that
    response; otherwise the end of the window where it first appears."""
    by_dialog: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_dialog.setdefault(r["dialog_id"], []).append(i)
    for idx in by_dialog.values():
        idx.sort(key=lambda i: rows[i]["turn_id"])
        last: dict[int, int] = {}
        seen_until = 0
        for i in idx:
            r = rows[i]
            ctx = r["context"]
            for e in r["prev_entity"]:
                pattern = _name_pattern(name_of[e])
                hit = next(
                    (p for p in range(len(ctx) - 1, seen_until - 1, -1) if pattern and pattern.search(ctx[p])), None
                )
                if hit is not None:
                    last[e] = hit
                elif e not in last:
                    last[e] = len(ctx) - 1
            end = len(ctx) - 1
            order = sorted(r["prev_entity"], key=lambda e: (last[e], r["prev_entity"].index(e)))
            r["prev_entity"] = order
            r["prev_age"] = [max(end - last[e], 0) for e in order]
            for e in r["response_entities"]:
                last[e] = len(ctx)  # the response is the next utterance of later contexts
            seen_until = len(ctx) + 1


def load_conversations(
    folder: str | Path, split: str = "test", *, entities: str = "entity2id.json", items: str = "item_ids.json"
) -> Conversations:
    """Read a CRS-layout folder: `{split}.jsonl`, `entity2id.json`, `item_ids.json` (each may
    be gzip-compressed, `NAME.gz`). Bad input raises `DataError` naming the file and, for the
    turns, the line."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    uri_of = _entity_table(root / entities)
    cand = _read_json(root / items)
    items_path = _existing(root / items)
    if not isinstance(cand, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in cand):
        raise DataError(f"{items_path}: expected a JSON list of integer entity ids")
    unknown = [c for c in cand if c not in uri_of]
    if unknown:
        raise DataError(f"{items_path}: entity id(s) {unknown[:5]} not in {entities}")
    if len(set(cand)) != len(cand):
        raise DataError(f"{items_path}: the candidate list repeats an entity id")
    turns_path = _existing(root / f"{split}.jsonl")
    if not turns_path.exists():
        raise DataError(f"{turns_path}: file not found")
    rows: list[dict[str, Any]] = []
    with _open_text(turns_path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                rows.append(_parse_turn(line, f"{turns_path}:{lineno}", uri_of))
    if not rows:
        raise DataError(f"{turns_path}: no turns")
    match_of = {e: match_name(u) for e, u in uri_of.items()}
    _ages(rows, match_of)
    ids = np.array(sorted(uri_of), dtype=np.int64)
    movie = set(cand)
    entity_frame = pl.DataFrame(
        {
            "id": ids,
            "uri": [uri_of[int(e)] for e in ids],
            "name": [display_name(uri_of[int(e)]) for e in ids],
            "match_name": [match_of[int(e)] for e in ids],
            "is_movie": [int(e) in movie for e in ids],
        }
    )
    turn_frame = pl.DataFrame(
        {
            "turn": np.arange(len(rows), dtype=np.int64),
            "dialog_id": [r["dialog_id"] for r in rows],
            "turn_id": [r["turn_id"] for r in rows],
            "context": [r["context"] for r in rows],
            "response": [r["response"] for r in rows],
            "response_entities": [r["response_entities"] for r in rows],
            "response_names": [r["response_names"] for r in rows],
            "prev_entity": [r["prev_entity"] for r in rows],
            "prev_age": [r["prev_age"] for r in rows],
            "targets": [r["targets"] for r in rows],
        },
        schema_overrides={
            "context": pl.List(pl.Utf8),
            "response_entities": pl.List(pl.Int64),
            "response_names": pl.List(pl.Utf8),
            "prev_entity": pl.List(pl.Int64),
            "prev_age": pl.List(pl.Int64),
            "targets": pl.List(pl.Int64),
        },
    )
    t_turn, t_dialog, t_pos, t_target, t_cond, t_by_id, t_in = [], [], [], [], [], [], []
    for i, r in enumerate(rows):
        prev_names = {match_of[e] for e in r["prev_entity"]}
        prev_ids = set(r["prev_entity"])
        for p, t in enumerate(r["targets"]):
            t_turn.append(i)
            t_dialog.append(r["dialog_id"])
            t_pos.append(p)
            t_target.append(t)
            t_cond.append("dis" if t in prev_ids or match_of[t] in prev_names else "rec")
            t_by_id.append(t in prev_ids)
            t_in.append(t in movie)
    target_frame = pl.DataFrame(
        {
            "turn": pl.Series(t_turn, dtype=pl.Int64),
            "dialog_id": pl.Series(t_dialog, dtype=pl.Utf8),
            "position": pl.Series(t_pos, dtype=pl.Int64),
            "target": pl.Series(t_target, dtype=pl.Int64),
            "condition": pl.Series(t_cond, dtype=pl.Utf8),
            "mentioned_by_id": pl.Series(t_by_id, dtype=pl.Boolean),
            "in_candidates": pl.Series(t_in, dtype=pl.Boolean),
        }
    )
    return Conversations(turn_frame, target_frame, entity_frame, np.asarray(cand, dtype=np.int64), str(turns_path))
