"""schemathesis hooks for tests/test_serve_schemathesis.py (loaded with SCHEMATHESIS_HOOKS).

`negative_data_rejection` trusts the "negative" label a case got when it was generated; Hypothesis
may then shrink the case until the invalid part is gone (schemathesis#4332 is one such case, a
oneOf body whose mutated `kind` is shrunk back to a valid one is another) and the check still
reports a valid request as "schema-violating request accepted". This check is the upstream one,
except that a negative body accepted with 2xx is first validated again, as sent, against the
OpenAPI document: if the body is valid the server was right to accept it. Every other negative
case (query, path, header, or an invalid body) goes to the upstream check unchanged.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import jsonschema
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection


@cache
def _document() -> dict[str, Any]:
    with open(os.environ["COACHREC_ST_SPEC"], encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def _body_is_valid(method: str, path: str, body: Any) -> bool:
    doc = _document()
    operation = doc["paths"].get(path, {}).get(method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return False
    # the document's components sit beside the body schema, so its "#/components/..." refs resolve
    root = {**schema, "components": doc.get("components", {})}
    return jsonschema.Draft202012Validator(root).is_valid(body)


def _only_the_body_is_negative(case: Any) -> bool:
    components = case.meta.components
    body = components.get(ParameterLocation.BODY)
    if body is None or not body.mode.is_negative:
        return False
    return not any(c.mode.is_negative for location, c in components.items() if location != ParameterLocation.BODY)


def _log(verdict: str, case: Any) -> None:
    """One line per call in COACHREC_ST_LOG, so the test can see that this check ran and what it overrode."""
    if log := os.environ.get("COACHREC_ST_LOG"):
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{verdict} {case.method} {case.path}\n")


@schemathesis.check
def negative_data_rejection_as_sent(ctx: Any, response: Any, case: Any) -> bool | None:
    if (
        case.meta is not None
        and 200 <= response.status_code < 300
        and _only_the_body_is_negative(case)
        and _body_is_valid(case.method, case.path, case.body)
    ):
        _log("valid-as-sent", case)
        return None
    _log("upstream", case)
    return negative_data_rejection(ctx, response, case)  # type: ignore[no-any-return]
