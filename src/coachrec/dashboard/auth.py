"""Who is calling the dashboard: the API's scoped keys (`coachrec.serve.auth`).

A client sends its key as `X-API-Key` or `Authorization: Bearer` exactly as for `/v1`; a browser,
which cannot add a header to a page load, signs in once on `/ui/login` and sends the key back as
the `coachrec_key` cookie (HttpOnly, SameSite=Strict, so another site's page cannot send it).
Pages need `read`; annotating `review` (the reviewer recorded is the key's name), publishing a
golden set `publish`, rolling the registry back `admin`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from coachrec.serve.auth import SCOPES, Authenticator, Principal

__all__ = ["COOKIE", "SCOPES", "Principal", "authenticate", "ui_require"]

COOKIE = "coachrec_key"
_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def authenticate(request: Request, key: str | None, scope: str) -> Principal:
    """The principal of `key` (or of the sign-in cookie) holding `scope`; 401/403 otherwise."""
    auth = getattr(request.app.state, "auth", None)
    if not isinstance(auth, Authenticator):
        auth = Authenticator(())  # no key set configured: closed
    found = auth.authenticate(key or request.cookies.get(COOKIE))
    if not found.can(scope):
        raise HTTPException(403, f"the key {found.name!r} lacks the {scope!r} scope (it has {sorted(found.scopes)})")
    return found


def ui_require(scope: str) -> Callable[..., Principal]:
    """A FastAPI dependency like `coachrec.serve.auth.require`, also reading the sign-in cookie."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {sorted(SCOPES)}")

    def principal(
        request: Request,
        x_api_key: str | None = Depends(_header),
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        return authenticate(request, x_api_key or (bearer.credentials if bearer else None), scope)

    principal.__name__ = f"ui_require_{scope}"
    return principal
