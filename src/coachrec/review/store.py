"""The review queue and versioned golden sets, in a DuckDB file of their own.

`review.duckdb` sits beside the trace store by default (`$COACHREC_REVIEW_DB` overrides), so
a reviewer can annotate while the server holds the trace file. Schema changes go through this
module's own migration list.

Golden sets are immutable per version: `publish(name)` writes version n+1 as version n plus
every case reviewed since (a case reviewed again replaces its older label in the new version);
no method changes or deletes the cases of an existing version.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from coachrec.teacher.cases import JudgeCase
from coachrec.teacher.judgment import FAIL, PASS, Judgment
from coachrec.teacher.quality import JudgeQuality, measure
from coachrec.teacher.rubric import RubricSpec
from coachrec.tracing import default_db_path

Action = Literal["accept", "correct", "skip", "note"]
LABELS = (PASS, FAIL)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE review_queue (
        item_id VARCHAR PRIMARY KEY,
        trace_id VARCHAR NOT NULL,
        span_id VARCHAR NOT NULL,
        criterion VARCHAR NOT NULL,
        judge_label VARCHAR NOT NULL,
        judge_score DOUBLE NOT NULL,
        order_scores VARCHAR,
        queued_because VARCHAR NOT NULL,
        judge_version VARCHAR NOT NULL,
        evaluator VARCHAR,
        rationale VARCHAR,
        failure_modes VARCHAR,
        case_json VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        human_label VARCHAR,
        note VARCHAR,
        reviewer VARCHAR,
        created_ns BIGINT NOT NULL,
        reviewed_ns BIGINT
    );
    CREATE TABLE golden_sets (
        set_name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        description VARCHAR,
        n_cases INTEGER NOT NULL,
        created_ns BIGINT NOT NULL,
        PRIMARY KEY (set_name, version)
    );
    CREATE TABLE golden_cases (
        set_name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        item_id VARCHAR NOT NULL,
        trace_id VARCHAR NOT NULL,
        span_id VARCHAR NOT NULL,
        criterion VARCHAR NOT NULL,
        label VARCHAR NOT NULL,
        judge_label VARCHAR NOT NULL,
        judge_score DOUBLE NOT NULL,
        order_scores VARCHAR,
        provenance VARCHAR NOT NULL,
        PRIMARY KEY (set_name, version, trace_id, criterion)
    );
    """,
)


class ReviewError(ValueError):
    """A review action or golden-set request that cannot be carried out (the message says why)."""


def review_path_for(db: str | os.PathLike[str]) -> Path:
    """The review store that belongs to a trace store: `x.duckdb` -> `x.review.duckdb` beside
    it, so two servers on two stores in one folder keep separate review queues."""
    path = Path(db)
    return path.with_name(f"{path.stem}.review.duckdb")


def default_review_path() -> Path:
    """`$COACHREC_REVIEW_DB`, else the review store of the default trace store."""
    env = os.environ.get("COACHREC_REVIEW_DB")
    return Path(env) if env else review_path_for(default_db_path())


@dataclass(frozen=True)
class ReviewItem:
    item_id: str
    trace_id: str
    span_id: str
    criterion: str
    judge_label: str
    judge_score: float
    order_scores: tuple[float, float] | None
    queued_because: tuple[str, ...]
    judge_version: str
    evaluator: str | None
    rationale: str | None
    failure_modes: tuple[str, ...]
    case: dict[str, Any]
    status: str
    human_label: str | None
    note: str | None
    reviewer: str | None
    created_ns: int
    reviewed_ns: int | None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class GoldenCase:
    set_name: str
    version: int
    item_id: str
    trace_id: str
    span_id: str
    criterion: str
    label: str
    judge_label: str
    judge_score: float
    order_scores: tuple[float, float] | None
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class GoldenSetInfo:
    set_name: str
    version: int
    description: str | None
    n_cases: int
    created_ns: int


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _pair(raw: str | None) -> tuple[float, float] | None:
    if not raw:
        return None
    a, b = json.loads(raw)
    return float(a), float(b)


class ReviewStore:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = str(default_review_path() if path is None else path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.IOException as exc:
            raise ReviewError(f"cannot open review store {self.path}: {exc}; another process holds it") from exc
        self._local = threading.local()
        self._migrate()

    def _migrate(self) -> None:
        con = self._con
        con.execute("CREATE TABLE IF NOT EXISTS review_schema_version (version INTEGER NOT NULL)")
        row = con.execute("SELECT max(version) FROM review_schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > len(MIGRATIONS):
            raise ReviewError(
                f"review store {self.path} has schema version {current}, newer than this coachrec ({len(MIGRATIONS)})"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            con.execute("BEGIN TRANSACTION")
            con.execute(MIGRATIONS[version - 1])
            con.execute("INSERT INTO review_schema_version VALUES (?)", [version])
            con.execute("COMMIT")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
        return cur

    def close(self) -> None:
        self._con.close()

    # -- the queue ---------------------------------------------------------------------------

    def enqueue(
        self,
        judgments: Iterable[Judgment],
        cases: Sequence[JudgeCase],
        *,
        review_below: float,
        audit_rate: float = 0.0,
        seed: int = 0,
    ) -> int:
        """Queue judgments that need a human: failed, or scoring below `review_below`,
        disagreeing with themselves under order swap, or drawn for audit (`audit_rate` of all,
        so golden sets also hold cases the judge passed). Returns how many were queued; a
        (trace, criterion, judge version) already queued is not queued again."""
        by_trace = {c.trace_id: c for c in cases}
        rows = []
        for j in judgments:
            why = []
            if j.failed or j.score < review_below:
                why.append("low_score")
            if j.unknown:
                why.append("judge_unknown")
            if j.swap_consistent is False:
                why.append("swap_disagreement")
            if audit_rate > 0 and _unit_hash(f"{seed}:{j.trace_id}:{j.criterion}") < audit_rate:
                why.append("audit")
            if not why:
                continue
            case = by_trace.get(j.trace_id)
            if case is None:
                raise ReviewError(f"judgment of trace {j.trace_id} has no case to show the reviewer")
            rows.append(
                [
                    uuid.uuid4().hex,
                    j.trace_id,
                    j.span_id,
                    j.criterion,
                    j.label,
                    j.score,
                    json.dumps(list(j.order_scores)) if j.order_scores else None,
                    json.dumps(why),
                    j.judge_version,
                    j.evaluator,
                    j.rationale,
                    json.dumps(list(j.failure_modes)),
                    json.dumps(case.summary()),
                    "pending",
                    None,
                    None,
                    None,
                    time.time_ns(),
                    None,
                ]
            )
        cur = self._cursor()
        queued = 0
        for row in rows:
            exists = cur.execute(
                "SELECT 1 FROM review_queue WHERE trace_id = ? AND criterion = ? AND judge_version = ?",
                [row[1], row[3], row[8]],
            ).fetchone()
            if exists is None:
                cur.execute(f"INSERT INTO review_queue VALUES ({', '.join('?' * len(row))})", row)
                queued += 1
        return queued

    def items(
        self, *, status: str | None = "pending", criterion: str | None = None, limit: int | None = None
    ) -> list[ReviewItem]:
        """Queue items, oldest first (lowest score first within a batch)."""
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if criterion is not None:
            where.append("criterion = ?")
            params.append(criterion)
        sql = "SELECT * FROM review_queue" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_ns, judge_score, item_id" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return [self._item(r) for r in self._cursor().execute(sql, params).fetchall()]

    def get(self, item_id: str) -> ReviewItem:
        row = self._cursor().execute("SELECT * FROM review_queue WHERE item_id = ?", [item_id]).fetchone()
        if row is None:
            raise ReviewError(f"no review item {item_id!r}")
        return self._item(row)

    def counts(self) -> dict[str, int]:
        rows = self._cursor().execute("SELECT status, count(*) FROM review_queue GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}

    def annotate(
        self,
        item_id: str,
        action: Action,
        *,
        label: str | None = None,
        note: str | None = None,
        reviewer: str = "anonymous",
    ) -> ReviewItem:
        """`accept` the judge's label, `correct` it to `label`, add a `note`, or `skip` the item."""
        item = self.get(item_id)
        now = time.time_ns()
        cur = self._cursor()
        note = item.note if not note else note if not item.note else f"{item.note}\n{note}"  # notes accumulate
        if action == "accept":
            cur.execute(
                "UPDATE review_queue SET status='accepted', human_label=judge_label, note=?, "
                "reviewer=?, reviewed_ns=? WHERE item_id=?",
                [note, reviewer, now, item_id],
            )
        elif action == "correct":
            if label not in LABELS:
                raise ReviewError(f"a correction needs a label, one of {LABELS}; got {label!r}")
            cur.execute(
                "UPDATE review_queue SET status='corrected', human_label=?, note=?, "
                "reviewer=?, reviewed_ns=? WHERE item_id=?",
                [label, note, reviewer, now, item_id],
            )
        elif action == "skip":
            cur.execute(
                "UPDATE review_queue SET status='skipped', note=?, reviewer=?, reviewed_ns=? WHERE item_id=?",
                [note, reviewer, now, item_id],
            )
        elif action == "note":
            if note == item.note:
                raise ReviewError("a note action needs the note text")
            cur.execute("UPDATE review_queue SET note=? WHERE item_id=?", [note, item_id])
        else:
            raise ReviewError(f"unknown review action {action!r}; use accept, correct, note or skip")
        return self.get(item_id)

    # -- golden sets -------------------------------------------------------------------------

    def publish(self, set_name: str, *, description: str | None = None) -> GoldenSetInfo:
        """Freeze a new version of `set_name`: the previous version's cases plus every case
        reviewed (accepted or corrected) since, the newest review of a (trace, criterion) winning."""
        if not set_name.strip():
            raise ReviewError("a golden set needs a name")
        cur = self._cursor()
        row = cur.execute("SELECT max(version) FROM golden_sets WHERE set_name = ?", [set_name]).fetchone()
        previous = int(row[0]) if row and row[0] is not None else 0
        cases: dict[tuple[str, str], list[Any]] = {}
        since = 0
        if previous:
            created = cur.execute(
                "SELECT created_ns FROM golden_sets WHERE set_name = ? AND version = ?", [set_name, previous]
            ).fetchone()
            since = int(created[0]) if created else 0
            for r in cur.execute(
                "SELECT * FROM golden_cases WHERE set_name = ? AND version = ?", [set_name, previous]
            ).fetchall():
                cases[(r[3], r[5])] = list(r)
        reviewed = cur.execute(
            "SELECT * FROM review_queue WHERE status IN ('accepted', 'corrected') AND reviewed_ns > ? ORDER BY "
            "reviewed_ns, item_id",
            [since],
        ).fetchall()
        version = previous + 1
        for r in reviewed:
            item = self._item(r)
            provenance = {
                "trace_id": item.trace_id,
                "request_id": item.case.get("request_id"),
                "model_versions": item.case.get("retrievers"),
                "judge_version": item.judge_version,
                "evaluator": item.evaluator,
                "reviewer": item.reviewer,
                "reviewed_ns": item.reviewed_ns,
                "review": item.status,
                "note": item.note,
                "queued_because": list(item.queued_because),
                "case": item.case,
            }
            cases[(item.trace_id, item.criterion)] = [
                set_name,
                version,
                item.item_id,
                item.trace_id,
                item.span_id,
                item.criterion,
                item.human_label,
                item.judge_label,
                item.judge_score,
                json.dumps(list(item.order_scores)) if item.order_scores else None,
                json.dumps(provenance),
            ]
        if not cases:
            raise ReviewError(f"nothing to publish in {set_name!r}: no reviewed (accepted or corrected) cases")
        if previous and not reviewed:
            raise ReviewError(f"nothing new to publish in {set_name!r}: no case was reviewed since v{previous}")
        now = time.time_ns()
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute(
                "INSERT INTO golden_sets VALUES (?, ?, ?, ?, ?)", [set_name, version, description, len(cases), now]
            )
            for values in cases.values():
                values[1] = version
                cur.execute("INSERT INTO golden_cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        return GoldenSetInfo(set_name, version, description, len(cases), now)

    def golden_sets(self) -> list[GoldenSetInfo]:
        rows = self._cursor().execute("SELECT * FROM golden_sets ORDER BY set_name, version").fetchall()
        return [GoldenSetInfo(str(r[0]), int(r[1]), r[2], int(r[3]), int(r[4])) for r in rows]

    def golden_cases(self, set_name: str, version: int | None = None) -> list[GoldenCase]:
        """The cases of one version (the latest if None)."""
        cur = self._cursor()
        if version is None:
            row = cur.execute("SELECT max(version) FROM golden_sets WHERE set_name = ?", [set_name]).fetchone()
            if not row or row[0] is None:
                raise ReviewError(f"no golden set {set_name!r}")
            version = int(row[0])
        rows = cur.execute(
            "SELECT * FROM golden_cases WHERE set_name = ? AND version = ? ORDER BY criterion, trace_id",
            [set_name, version],
        ).fetchall()
        if not rows:
            raise ReviewError(f"golden set {set_name!r} has no version {version}")
        return [
            GoldenCase(
                str(r[0]),
                int(r[1]),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                str(r[5]),
                str(r[6]),
                str(r[7]),
                float(r[8]),
                _pair(r[9]),
                json.loads(r[10]),
            )
            for r in rows
        ]

    def _item(self, r: Sequence[Any]) -> ReviewItem:
        return ReviewItem(
            item_id=r[0],
            trace_id=r[1],
            span_id=r[2],
            criterion=r[3],
            judge_label=r[4],
            judge_score=float(r[5]),
            order_scores=_pair(r[6]),
            queued_because=tuple(json.loads(r[7])),
            judge_version=r[8],
            evaluator=r[9],
            rationale=r[10],
            failure_modes=tuple(json.loads(r[11] or "[]")),
            case=json.loads(r[12]),
            status=r[13],
            human_label=r[14],
            note=r[15],
            reviewer=r[16],
            created_ns=int(r[17]),
            reviewed_ns=None if r[18] is None else int(r[18]),
        )


def golden_quality(
    cases: Sequence[GoldenCase], rubric: RubricSpec, *, judgments: Sequence[Judgment] | None = None
) -> dict[str, JudgeQuality]:
    """Judge quality per criterion on a golden set: of the judge labels recorded with the cases,
    or of `judgments` from another judge over the same traces (matched by trace and criterion)."""
    fresh = {(j.trace_id, j.criterion): j for j in judgments} if judgments is not None else None
    by_criterion: dict[str, list[GoldenCase]] = {}
    for c in cases:
        by_criterion.setdefault(c.criterion, []).append(c)
    out = {}
    for criterion, group in sorted(by_criterion.items()):
        threshold = rubric.criterion(criterion).pass_threshold
        judge_pass, human_pass, swap, scores, judge_name = [], [], [], [], ""
        for c in group:
            if fresh is not None:
                j = fresh.get((c.trace_id, c.criterion))
                if j is None:
                    continue
                label, score, orders, judge_name = j.label, j.score, j.order_scores, j.judge_version
            else:
                label, score, orders = c.judge_label, c.judge_score, c.order_scores
                judge_name = str(c.provenance.get("judge_version"))
            judge_pass.append(label == PASS)
            human_pass.append(c.label == PASS)
            scores.append(score)
            swap.append(None if orders is None else (orders[0] >= threshold) == (orders[1] >= threshold))
        if not judge_pass:
            continue
        consistent = None if any(s is None for s in swap) else [bool(s) for s in swap]
        out[criterion] = measure(
            criterion,
            judge_name,
            judge_pass,
            human_pass,
            kappa_floor=rubric.kappa_floor,
            swap_consistent=consistent,
            scores=scores,
            protocol=f"golden set {group[0].set_name} v{group[0].version}",
        )
    return out
