"""The trace and span model: kinds, statuses, ids and the finished-span record.

A finished span is a `SpanRecord`: a flat tuple whose field order is the column order of the
`spans` table, so the writer can turn a batch into columns with one `zip(*batch)` and the store
can hand rows straight back as records. Input, output and attributes are held as JSON text,
serialized when the span ends, so a record is a snapshot that later mutation cannot change.
"""

from __future__ import annotations

import json
import random
from enum import Enum
from typing import Any, NamedTuple


class SpanKind(str, Enum):
    """What kind of step a span is. The names follow OpenInference where one exists."""

    RETRIEVER = "RETRIEVER"
    RERANKER = "RERANKER"
    RANKER = "RANKER"
    POLICY = "POLICY"
    LLM = "LLM"
    GUARDRAIL = "GUARDRAIL"
    TOOL = "TOOL"
    CHAIN = "CHAIN"
    EVALUATOR = "EVALUATOR"


class SpanStatus(str, Enum):
    """OpenTelemetry status codes: UNSET until the span ends, then OK or ERROR."""

    UNSET = "UNSET"
    OK = "OK"
    ERROR = "ERROR"


_rand = random.Random()  # os-seeded; `random` reseeds it in a forked child


def new_trace_id() -> str:
    """A W3C trace id: 128 random bits, never all zero, as 32 lowercase hex digits."""
    return f"{_rand.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A W3C span id (parent-id): 64 random bits, never all zero, as 16 lowercase hex digits."""
    return f"{_rand.getrandbits(64) or 1:016x}"


class SpanRecord(NamedTuple):
    """One finished span, in the column order of the `spans` table."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    error: str | None
    input: str | None  # JSON text
    output: str | None  # JSON text
    attributes: str | None  # JSON object text
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    user_id: str | None
    request_id: str | None

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def input_value(self) -> Any:
        """The decoded input (None when the span had none)."""
        return None if self.input is None else json.loads(self.input)

    def output_value(self) -> Any:
        """The decoded output (None when the span had none)."""
        return None if self.output is None else json.loads(self.output)

    def attribute_dict(self) -> dict[str, Any]:
        """The decoded attributes."""
        return {} if self.attributes is None else json.loads(self.attributes)


SPAN_COLUMNS: tuple[str, ...] = SpanRecord._fields
