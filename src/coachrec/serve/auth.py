"""Scoped API keys that fail closed.

Interface (what routers build on):

    SCOPES                      recommend, ingest, read, review, publish, admin
    Principal(name, scopes)     who is calling (frozen); `principal.name` is the reviewer identity
    require(scope)              FastAPI dependency factory returning the Principal:
                                    reviewer = require("review")   # once, at module level
                                    def annotate(..., principal: Principal = Depends(reviewer))
                                401 without a (valid) key, 403 when the key lacks the scope, 429
                                over the key's rate limit (`Authenticator(..., rate_limit=)`)
    Authenticator(keys)         the app's key set, put on `app.state.auth` by `coachrec.app.create_app`;
                                `Authenticator.from_env()`, `Authenticator.insecure()` (every caller
                                is `anonymous` with every scope: only with an explicit opt-in)
    for_server(host, no_auth=...) -> ServerAuth(auth, warning, generated_key)
                                the start-up policy: keys from the environment; with none, a random
                                key with every scope generated for the run (printed, as Jupyter prints
                                its token), or open with a warning on an explicit `--no-auth`
    allowed_hosts_for(host)     the Host-header allowlist (DNS rebinding): loopback names for a
                                loopback server

Scopes: `recommend` (POST /v1/recommend), `ingest` (feedback and events), `read` (traces,
reports, reasons quoting a user's history), `review` (annotate; the reviewer is the principal's
name, never a field the caller sends), `publish` (golden sets), `admin` (registry, rollback).
`*` in a key's scopes grants every scope.

Keys are configured, in this order, from:

- `COACHREC_API_KEYS`: entries `name:scope1,scope2:key` separated by `;` or newlines
  (`ci:recommend,ingest:9f2c...;alice:read,review:77aa...`); the key is everything after the
  second colon;
- `COACHREC_API_KEYS_FILE`: a JSON or TOML file `{"keys": [{"name": ..., "scopes": [...],
  "key": "..."} | {"name": ..., "scopes": [...], "sha256": "hex digest of the key"}]}`
  (store digests, not keys, in files);
- `COACHREC_API_KEY` (one key, the older setting): a principal named `default` with every scope.

A caller sends its key as `X-API-Key: KEY` or `Authorization: Bearer KEY`. Keys are held as
SHA-256 digests and compared with `hmac.compare_digest` against every configured digest (no
early exit), so the comparison time does not depend on which key, or how much of one, matched.
An app with no key configured and no explicit opt-in answers 401 on every guarded route; a server
started without keys generates one: nothing is open by accident.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import os
import secrets
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from coachrec.serve.limits import RateLimit, RateLimiter

SCOPES: frozenset[str] = frozenset({"recommend", "ingest", "read", "review", "publish", "admin"})
ALL_SCOPES = "*"
MAX_KEY_CHARS = 512
"""A longer header value is refused before hashing (no key is that long)."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""Host headers of a loopback server (as Starlette parses them: IPv6 in brackets)."""


class AuthConfigError(ValueError):
    """The key configuration is malformed, or the server may not start without keys."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a key's name and the scopes it grants."""

    name: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class ApiKey:
    principal: Principal
    digest: bytes
    """SHA-256 of the key's UTF-8 bytes."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _scopes(raw: Iterable[str], where: str) -> frozenset[str]:
    scopes = {s.strip() for s in raw if s.strip()}
    if ALL_SCOPES in scopes:
        return SCOPES
    unknown = sorted(scopes - SCOPES)
    if unknown:
        raise AuthConfigError(f"{where}: unknown scope(s) {unknown}; known: {sorted(SCOPES)} or '*'")
    if not scopes:
        raise AuthConfigError(f"{where}: a key needs at least one scope")
    return frozenset(scopes)


def _name(raw: str, where: str) -> str:
    name = raw.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise AuthConfigError(f"{where}: a key needs a printable name of 1-200 characters, got {raw!r}")
    return name


def _check_key(key: str, where: str) -> str:
    if len(key) < 16:
        raise AuthConfigError(
            f"{where}: the key is {len(key)} characters; use at least 16 (e.g. `openssl rand -hex 32`)"
        )
    if len(key) > MAX_KEY_CHARS:
        raise AuthConfigError(f"{where}: the key is longer than {MAX_KEY_CHARS} characters")
    return key


def parse_keys(text: str, *, source: str = "COACHREC_API_KEYS") -> list[ApiKey]:
    """Keys from `name:scope1,scope2:key` entries separated by `;` or newlines."""
    keys = []
    entries = [e.strip() for line in text.splitlines() for e in line.split(";")]
    for n, entry in enumerate((e for e in entries if e), start=1):
        where = f"{source} entry {n}"
        parts = entry.split(":", 2)
        if len(parts) != 3:
            raise AuthConfigError(f"{where}: expected name:scope1,scope2:key, got {len(parts) - 1} colon(s)")
        name, scopes, key = parts
        keys.append(
            ApiKey(
                Principal(_name(name, where), _scopes(scopes.split(","), where)),
                _digest(_check_key(key.strip(), where)),
            )
        )
    return _unique(keys, source)


def load_key_file(path: str | os.PathLike[str]) -> list[ApiKey]:
    """Keys from a JSON or TOML file (`{"keys": [{"name", "scopes", "key" | "sha256"}]}`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthConfigError(f"cannot read API key file {p}: {exc}") from exc
    try:
        data: Any = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise AuthConfigError(
            f"API key file {p} is not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {exc}"
        ) from exc
    entries = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise AuthConfigError(f"API key file {p}: expected a top-level `keys` list")
    keys = []
    for n, entry in enumerate(entries, start=1):
        where = f"{p} key {n}"
        if not isinstance(entry, Mapping):
            raise AuthConfigError(f"{where}: expected a table/object with name, scopes and key or sha256")
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise AuthConfigError(f"{where}: scopes must be a list of strings")
        principal = Principal(_name(str(entry.get("name", "")), where), _scopes(scopes, where))
        if ("key" in entry) == ("sha256" in entry):
            raise AuthConfigError(f"{where}: give exactly one of key and sha256")
        if "key" in entry:
            digest = _digest(_check_key(str(entry["key"]), where))
        else:
            try:
                digest = bytes.fromhex(str(entry["sha256"]))
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise AuthConfigError(f"{where}: sha256 must be 64 hex digits")
        keys.append(ApiKey(principal, digest))
    return _unique(keys, str(p))


def _unique(keys: list[ApiKey], source: str) -> list[ApiKey]:
    names = [k.principal.name for k in keys]
    if len(set(names)) != len(names):
        raise AuthConfigError(f"{source}: key names must be unique (they name the reviewer), got {names}")
    if len({k.digest for k in keys}) != len(keys):
        raise AuthConfigError(f"{source}: two entries share one key; give each principal its own")
    return keys


class Authenticator:
    """The configured keys; `authenticate` maps a presented key to its Principal."""

    def __init__(
        self, keys: Sequence[ApiKey], *, insecure_no_auth: bool = False, rate_limit: RateLimit | None = None
    ) -> None:
        if insecure_no_auth and keys:
            raise AuthConfigError("insecure_no_auth with keys configured: drop the flag or the keys")
        self.keys = tuple(keys)
        self.insecure_no_auth = insecure_no_auth
        self.limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        """Requests per key (429 past it); None: no limit."""

    @classmethod
    def insecure(cls) -> Authenticator:
        """Every caller is `anonymous` with every scope: local demos and tests only."""
        return cls((), insecure_no_auth=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Authenticator:
        """Keys from COACHREC_API_KEYS, COACHREC_API_KEYS_FILE and COACHREC_API_KEY (all that are set)."""
        env = os.environ if environ is None else environ
        keys: list[ApiKey] = []
        if env.get("COACHREC_API_KEYS", "").strip():
            keys += parse_keys(env["COACHREC_API_KEYS"])
        if env.get("COACHREC_API_KEYS_FILE", "").strip():
            keys += load_key_file(env["COACHREC_API_KEYS_FILE"])
        if env.get("COACHREC_API_KEY", "").strip():
            legacy = _check_key(env["COACHREC_API_KEY"].strip(), "COACHREC_API_KEY")
            keys.append(ApiKey(Principal("default", SCOPES), _digest(legacy)))
        return cls(_unique(keys, "the configured API keys"))

    @classmethod
    def of(cls, entries: Mapping[str, tuple[Iterable[str], str]]) -> Authenticator:
        """Keys given in code: `{name: (scopes, key)}`."""
        keys = [
            ApiKey(Principal(_name(n, n), _scopes(s, n)), _digest(_check_key(k, n))) for n, (s, k) in entries.items()
        ]
        return cls(_unique(keys, "Authenticator.of"))

    @property
    def configured(self) -> bool:
        return bool(self.keys)

    def authenticate(self, key: str | None) -> Principal:
        """The principal of `key`; HTTPException 401 when it is missing or matches no key."""
        if self.insecure_no_auth:
            return Principal("anonymous", SCOPES)
        if not self.keys:
            raise _unauthorized(
                "no API keys are configured on this server, so every guarded route is closed: "
                "set COACHREC_API_KEYS (name:scopes:key) or start with --no-auth"
            )
        if not key:
            raise _unauthorized("missing API key: send X-API-Key: KEY or Authorization: Bearer KEY")
        if len(key) > MAX_KEY_CHARS:
            raise _unauthorized("invalid API key")
        digest = _digest(key)
        found: Principal | None = None
        for candidate in self.keys:  # no early exit: the time does not tell which key matched
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate.principal
        if found is None:
            raise _unauthorized("invalid API key")
        return found


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="coachrec"'})


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (or send it as a Bearer)")
_bearer = HTTPBearer(auto_error=False, description="an API key as a bearer token")


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's Principal, which must hold `scope` (401/403 otherwise).

    The key set is the app's `app.state.auth`; an app without one refuses every caller.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {sorted(SCOPES)}")

    async def principal(  # async: a sync dependency would cost a thread-pool hop per request
        request: Request,
        x_api_key: str | None = Depends(_api_key_header),
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        auth = getattr(request.app.state, "auth", None)
        if not isinstance(auth, Authenticator):
            auth = Authenticator(())  # no key set: closed
        found = auth.authenticate(x_api_key or (bearer.credentials if bearer else None))
        if not found.can(scope):
            raise HTTPException(
                403, f"the key {found.name!r} lacks the {scope!r} scope (it has {sorted(found.scopes)})"
            )
        if auth.limiter is not None:
            wait = auth.limiter.take(found.name)
            if wait > 0:
                raise HTTPException(
                    429,
                    f"the key {found.name!r} is over its rate limit ({auth.limiter.limit.per_second:g} requests/s)",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        request.state.principal = found
        return found

    principal.__name__ = f"require_{scope}"
    return principal


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid API key"},
    403: {"description": "the key lacks the route's scope"},
}
"""The documented responses of a guarded route (`responses=AUTH_RESPONSES` on its router)."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an interface to listen on) is reachable only from this machine."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


GENERATED_KEY_NAME = "generated"
"""The principal of the key `coachrec serve` generates when none is configured (every scope)."""


@dataclass(frozen=True)
class ServerAuth:
    """What a server starts with: its authenticator, a warning to print, and the key it generated."""

    auth: Authenticator
    warning: str | None = None
    generated_key: str | None = None
    """Set when no key was configured: print it (as Jupyter prints its token); it is held only as a digest."""


def for_server(
    host: str,
    *,
    no_auth: bool = False,
    environ: Mapping[str, str] | None = None,
    rate_limit: RateLimit | None = None,
) -> ServerAuth:
    """The authentication `coachrec serve` and `coachrec dashboard` start with.

    With keys configured: those keys. Without: a fresh random key with every scope, generated for
    this run (the caller prints it), so the server is never open by accident. `no_auth` (the
    explicit `--no-auth` of a local demo) opens every route, with a warning.
    """
    keys = Authenticator.from_env(environ).keys
    if keys:
        if no_auth:
            raise AuthConfigError("--no-auth given while API keys are configured; drop one of them")
        return ServerAuth(Authenticator(keys, rate_limit=rate_limit))
    if no_auth:
        where = "this machine" if is_loopback(host) else f"{host}, reachable from other machines"
        return ServerAuth(
            Authenticator((), insecure_no_auth=True, rate_limit=rate_limit),
            f"WARNING: --no-auth: every route, traces and review included, is open to every caller on {where}. "
            "For local demos only.",
        )
    key = secrets.token_urlsafe(32)
    principal = Principal(GENERATED_KEY_NAME, SCOPES)
    return ServerAuth(Authenticator([ApiKey(principal, _digest(key))], rate_limit=rate_limit), generated_key=key)


def generated_key_notice(key: str, url: str) -> str:
    """The lines that show a generated key, and how to use or replace it."""
    return (
        "coachrec: no API keys configured, so this run generated one with every scope:\n"
        f"    {key}\n"
        f"  send it as `X-API-Key: {key}` (or `Authorization: Bearer ...`); sign in to {url}/ui/login with it.\n"
        '  Set your own scoped keys with COACHREC_API_KEYS="name:scope1,scope2:key;..." (or COACHREC_API_KEYS_FILE);\n'
        "  --no-auth serves without keys (local demos only)."
    )


def allowed_hosts_for(host: str, extra: Sequence[str] = ()) -> list[str]:
    """Host headers to accept: loopback names for a loopback server (a DNS-rebinding page's
    requests carry its own host name and are refused), anything for a public one unless `extra`."""
    if is_loopback(host):
        return [*LOOPBACK_NAMES, *extra]
    return list(extra) or ["*"]
