"""JSON encoding of span inputs, outputs and attributes.

Spans record what recommender steps really pass around: numpy arrays of item ids and scores,
dataclasses, pydantic models. Those are converted rather than rejected, because a tracing call must
never break the request it observes; anything still unknown is recorded as its `repr` under a
`__repr__` key, so the loss is visible in the stored trace, not silent.

A payload recorded on two spans (a pipeline stage's output is the next stage's input) is
encoded once: `Encoded(value)` holds its JSON text, which `to_json` passes through.
"""

from __future__ import annotations

import dataclasses
import json
from json.encoder import encode_basestring  # the C string encoder behind ensure_ascii=False
from typing import Any

import numpy as _np
import orjson


def _default(obj: Any) -> Any:
    if isinstance(obj, _np.ndarray):
        rows = obj.tolist()
        if obj.dtype.kind == "f" and _np.isnan(obj).any():  # null, as orjson writes NaN
            return _null_nan(rows)
        return rows
    if isinstance(obj, _np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    dump = getattr(obj, "model_dump", None)  # pydantic v2
    if callable(dump):
        return dump(mode="json")
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return {"__repr__": repr(obj)}


def _null_nan(rows: Any) -> Any:
    if isinstance(rows, list):
        return [_null_nan(v) for v in rows]
    return None if rows != rows else rows  # rows != rows: NaN


_encoder = json.JSONEncoder(ensure_ascii=False, default=_default, separators=(",", ":"))
_encode = _encoder.encode
_fast = orjson.dumps
_FAST_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
"""orjson (numpy arrays without `tolist`, several times faster than `json`); what it refuses
(lone surrogates, integers past 64 bits, circular references) goes through `json` as before."""


class Encoded:
    """A value encoded now, once, for several spans: `span.set_output(e)`, `next.set_input(e)`."""

    __slots__ = ("text",)

    def __init__(self, value: Any) -> None:
        self.text = to_json(value)

    @classmethod
    def join(cls, fields: dict[str, Any | Encoded]) -> Encoded:
        """A JSON object of `fields`, whose `Encoded` values are spliced in as they are (a large
        value shared by several spans' payloads is encoded once)."""
        out = cls(None)
        parts = (f"{encode_basestring(k)}:{to_json(v) if v is not None else 'null'}" for k, v in fields.items())
        out.text = "{" + ",".join(parts) + "}"
        return out


def to_json(value: Any) -> str | None:
    """Encode `value` as compact JSON text; None stays None (no value recorded)."""
    if value is None:
        return None
    if value.__class__ is Encoded:
        text: str | None = value.text
        return text
    if value.__class__ is str:
        # The common case (prompts, queries) goes straight to the C string encoder.
        return encode_basestring(value)
    try:
        return _fast(value, default=_default, option=_FAST_OPTIONS).decode()
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        pass
    try:
        return _encode(value)
    except ValueError as exc:  # circular reference, NaN handling is allowed by default
        return _encode({"__repr__": repr(value), "__error__": str(exc)})
