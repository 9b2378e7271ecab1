"""Request limits: a body size cap (413), one value per query parameter (422) and a token-bucket
rate limit per API key (429).

`BodyLimit` is plain ASGI middleware: it refuses a declared `Content-Length` over the cap before
reading anything and stops reading a streamed body as soon as it passes the cap, so a large body
costs the server at most the cap. `RateLimiter` keeps one bucket per principal name, in this
process (with several workers each has its own buckets: the limit per key is then up to
`workers` times the rate).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 2 * 1024 * 1024
"""Bytes: a 10,000-id history or 1,000 feedback events fit with room to spare."""


class BodyLimit:
    """413 for a request body over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, "Content-Length is not a number", status=400)
                    return
                if declared > self.max_bytes:
                    await _refuse(send, f"request body of {declared:,} bytes; at most {self.max_bytes:,}")
                    return
        # Read the body here, up to the cap, then hand it on: the app never sees an over-long one.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await _refuse(send, f"request body over {self.max_bytes:,} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SingleQueryValues:
    """422 for a query parameter given twice (`?criterion=a&criterion=b`). No route takes a list in
    its query, so a repeat is malformed input; without this the framework would keep the last value
    and silently drop the others."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if b"&" in query:
            names = [name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                detail = f"query parameter {', '.join(repeated)} given more than once; give one value"
                await _refuse(send, detail, status=422)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, detail: str, *, status: int = 413) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class RateLimit:
    """`per_second` sustained requests per key, bursts of up to `burst`."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)) or self.burst < 1:
            raise ValueError(f"a rate limit needs per_second > 0 and burst >= 1, got {self.per_second}, {self.burst}")


class RateLimiter:
    """Token buckets by principal name; `take(name)` is the seconds to wait (0: allowed)."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, name: str) -> float:
        now = time.monotonic()
        rate, burst = self.limit.per_second, float(self.limit.burst)
        with self._lock:
            tokens, at = self._buckets.get(name, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / rate
