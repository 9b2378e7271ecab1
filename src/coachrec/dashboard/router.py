"""The dashboard's routes: server-rendered pages (Jinja2) and the JSON API their scripts call.

    app.include_router(dashboard_router(store, feedback=..., review=..., registry=..., prefix="/ui"))

Pages: `/traces` (filters, keyset paging), `/traces/{id}` (span tree, slate, feedback,
verdicts), `/compare?a=&b=`, `/failures`, `/review`, `/golden`, `/golden/{name}`, `/versions`,
`/cost`. JSON under `/api/...` takes the same keys as `/v1`; assets under `/static/` ship in
the wheel (nothing loads from a CDN).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from coachrec.coach.registry import Registry, RegistryError
from coachrec.dashboard.auth import COOKIE, Principal, authenticate, ui_require
from coachrec.dashboard.loop_views import failure_trends, golden_sets, judge_trust, registry_view, tier_trends
from coachrec.dashboard.review_views import conflicts, golden_diff, reviewer_progress
from coachrec.dashboard.traces import (
    PAGE_SIZE,
    QueryError,
    TraceFilter,
    known_values,
    same_request,
    time_bound,
    trace_page,
    trace_view,
)
from coachrec.review import ReviewError, ReviewStore
from coachrec.serve.feedback import FeedbackLog
from coachrec.tracing import TraceStore

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
MAX_ID = 200
CHOICES_TTL_S = 30.0


class AnnotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["accept", "correct", "note", "skip"]
    label: Literal["pass", "fail"] | None = None
    note: str | None = Field(default=None, max_length=4000)


class PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=2000)


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(default=None, pattern=r"^v\d{4,}$")
    note: str = Field(default="", max_length=2000)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("coachrec.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = lambda ns: (
        "" if ns is None else dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    )
    env.filters["num"] = lambda v, d=3: "" if v is None else f"{v:.{d}f}"
    env.filters["pretty"] = _pretty
    return env


def _static(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        raise HTTPException(404, f"no static file {name!r}")
    path = resources.files("coachrec.dashboard") / "static" / name
    if not path.is_file():
        raise HTTPException(404, f"no static file {name!r}")
    return Response(path.read_bytes(), media_type=STATIC_TYPES[suffix], headers={"Cache-Control": "max-age=3600"})


def titles_of(ids: list[str], titles: list[str]) -> dict[str, str]:
    return dict(zip((str(i) for i in ids), titles, strict=True))


def dashboard_router(
    store: TraceStore,
    *,
    feedback: FeedbackLog | None = None,
    review: ReviewStore | None = None,
    registry: Registry | None = None,
    titles: Mapping[str, str] | None = None,
    prefix: str = "/ui",
) -> APIRouter:
    """The dashboard over a trace store and, when given, the feedback log, the review store and
    the registry (their pages say so when one is missing); `titles` maps item ids to titles."""
    env = _environment()
    router = APIRouter(prefix=prefix, tags=["dashboard"])
    names = dict(titles or {})
    read, do_review = ui_require("read"), ui_require("review")
    publish, admin = ui_require("publish"), ui_require("admin")

    def render(request: Request, template: str, who: Principal, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(
            base=prefix, page_name=template, who=who, title_of=lambda i: names.get(str(i), ""), **context
        )
        return HTMLResponse(html)

    def signed_in(request: Request, scope: str = "read") -> Principal | RedirectResponse:
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[7:]
        try:
            return authenticate(request, key, scope)
        except HTTPException as exc:
            if exc.status_code == 401:
                back = urlencode({"next": str(request.url.path)})
                return RedirectResponse(f"{prefix}/login?{back}", status_code=303)
            raise

    cached: dict[str, Any] = {}

    def choices() -> dict[str, list[str]]:
        """The filter form's choices, recomputed at most every CHOICES_TTL_S (each is a scan)."""
        if time.monotonic() - cached.get("at", -CHOICES_TTL_S) >= CHOICES_TTL_S:
            cached.update(at=time.monotonic(), values=known_values(store))
        values: dict[str, list[str]] = cached["values"]
        return values

    def need(thing: Any, what: str) -> Any:
        if thing is None:
            raise HTTPException(404, f"this dashboard was started without a {what}")
        return thing

    def filters_from(params: Mapping[str, str]) -> TraceFilter:
        def number(name: str) -> float | None:
            raw = params.get(name)
            if not raw:
                return None
            try:
                return float(raw)
            except ValueError:
                raise QueryError(f"{name}: a number of milliseconds, got {raw!r}") from None

        return TraceFilter(
            user_id=params.get("user_id") or None,
            since_ns=time_bound(params.get("since"), "since"),
            until_ns=time_bound(params.get("until"), "until"),
            kind=params.get("kind") or None,
            status=params.get("status") or None,
            error=params.get("error") or None,
            min_ms=number("min_ms"),
            max_ms=number("max_ms"),
            failure_mode=params.get("failure_mode") or None,
            model=params.get("model") or None,
        )

    def page_of(request: Request) -> tuple[dict[str, Any], TraceFilter]:
        params = dict(request.query_params)
        try:
            filters = filters_from(params)
            limit = int(params.get("limit") or PAGE_SIZE)
            store.flush(timeout=5.0)
            page = trace_page(store, filters, cursor=params.get("cursor") or None, limit=limit)
        except (QueryError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from exc
        form = {k: v for k, v in params.items() if k not in ("cursor",)}
        next_url = None
        if page.next_cursor:
            next_url = "?" + urlencode({**form, "cursor": page.next_cursor})
        return {"rows": page.rows, "next_cursor": page.next_cursor, "next_url": next_url, "form": form}, filters

    # -- sign-in and assets --------------------------------------------------------------

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        return _static(name)

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "") -> HTMLResponse:
        html = env.get_template("login.html").render(base=prefix, next=next if next.startswith("/") else "", error=None)
        return HTMLResponse(html)

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        key, next = (form.get("key") or [""])[0], (form.get("next") or [""])[0]
        try:
            authenticate(request, key, "read")
        except HTTPException as exc:
            html = env.get_template("login.html").render(base=prefix, next=next, error=exc.detail)
            return HTMLResponse(html, status_code=exc.status_code)
        target = next if _local_path(next) else f"{prefix}/traces"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, key, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
        )
        return response

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        response = RedirectResponse(f"{prefix}/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- traces --------------------------------------------------------------------------

    @router.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return RedirectResponse(f"{prefix}/traces", status_code=303)

    @router.get("/traces", response_class=HTMLResponse, include_in_schema=False)
    def traces_page(request: Request) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        page, _ = page_of(request)
        return render(request, "traces.html", who, page=page, choices=choices())

    @router.get("/api/traces")
    def traces_json(request: Request, _: Principal = Depends(read)) -> dict[str, Any]:
        """Traces matching the filters (query parameters as on the page), newest first; pass
        `next_cursor` back as `cursor` for the next page."""
        page, _filters = page_of(request)
        return {"traces": page["rows"], "next_cursor": page["next_cursor"]}

    def view_or_404(trace_id: str) -> Any:
        store.flush(timeout=5.0)
        view = trace_view(store, feedback, trace_id)
        if view is None:
            raise HTTPException(404, f"trace_id: no trace or request {trace_id!r} in {store.path}")
        return view

    @router.get("/traces/{trace_id}", response_class=HTMLResponse, include_in_schema=False)
    def trace_page_html(request: Request, trace_id: str = Path(max_length=MAX_ID)) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        return render(request, "trace.html", who, t=view_or_404(trace_id))

    @router.get("/api/traces/{trace_id}")
    def trace_json(trace_id: str = Path(max_length=MAX_ID), _: Principal = Depends(read)) -> Response:
        """One request: span tree (inputs, outputs, attributes), slate, feedback, verdicts."""
        # encoded directly: FastAPI's generic encoder walks the large span payloads slowly
        return Response(json.dumps(view_or_404(trace_id).to_dict()), media_type="application/json")

    @router.get("/api/traces/{trace_id}/same-request")
    def same_request_json(trace_id: str = Path(max_length=MAX_ID), _: Principal = Depends(read)) -> dict[str, Any]:
        """Other traces of the same request (same user, history, k, constraints and text)."""
        view = view_or_404(trace_id)
        return {"trace_id": view.trace_id, "traces": same_request(store, view.trace_id)}

    @router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare(
        request: Request, a: str = Query(..., max_length=MAX_ID), b: str = Query(..., max_length=MAX_ID)
    ) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        left, right = view_or_404(a), view_or_404(b)
        return render(request, "compare.html", who, a=left, b=right, diff=_slate_diff(left.slate, right.slate))

    # -- failure modes, cost -------------------------------------------------------------

    @router.get("/failures", response_class=HTMLResponse, include_in_schema=False)
    def failures(request: Request) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        store.flush(timeout=5.0)
        return render(request, "failures.html", who, data=failure_trends(store), trust=judge_trust(review, registry))

    @router.get("/api/failures")
    def failures_json(_: Principal = Depends(read)) -> dict[str, Any]:
        store.flush(timeout=5.0)
        return {**failure_trends(store), "trust": judge_trust(review, registry)}

    @router.get("/cost", response_class=HTMLResponse, include_in_schema=False)
    def cost(request: Request) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        store.flush(timeout=5.0)
        return render(request, "cost.html", who, data=tier_trends(store))

    @router.get("/api/cost")
    def cost_json(_: Principal = Depends(read)) -> dict[str, Any]:
        store.flush(timeout=5.0)
        return tier_trends(store)

    # -- review and golden sets ----------------------------------------------------------

    @router.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def review_page(request: Request, criterion: str | None = Query(None, max_length=MAX_ID)) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        rs: ReviewStore = need(review, "review store")
        return render(
            request,
            "review.html",
            who,
            items=rs.items(criterion=criterion, limit=100),
            counts=rs.counts(),
            progress=reviewer_progress(rs),
            conflicts=conflicts(rs),
            sets=golden_sets(rs),
            criterion=criterion,
        )

    @router.post("/api/review/{item_id}")
    def annotate(
        body: AnnotationIn, item_id: str = Path(max_length=MAX_ID), who: Principal = Depends(do_review)
    ) -> dict[str, Any]:
        """Annotate a queued case; the reviewer recorded is the key's name."""
        rs: ReviewStore = need(review, "review store")
        try:
            rs.get(item_id)
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc
        try:
            item = rs.annotate(item_id, body.action, label=body.label, note=body.note, reviewer=who.name)
        except ReviewError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {**item.to_dict(), "counts": rs.counts()}

    @router.get("/golden", response_class=HTMLResponse, include_in_schema=False)
    def golden_list(request: Request) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        rs: ReviewStore = need(review, "review store")
        return render(request, "golden.html", who, sets=golden_sets(rs), counts=rs.counts())

    @router.get("/golden/{name}", response_class=HTMLResponse, include_in_schema=False)
    def golden_version(
        request: Request,
        name: str = Path(max_length=MAX_ID, pattern=r"^[A-Za-z0-9._-]+$"),
        version: int | None = Query(None, ge=1, le=2**31 - 1),
    ) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        rs: ReviewStore = need(review, "review store")
        try:
            diff = golden_diff(rs, name, version)
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc
        versions = [s for s in golden_sets(rs) if s["set_name"] == name]
        cases = rs.golden_cases(name, diff.version)
        return render(request, "golden_set.html", who, diff=diff, versions=versions, cases=cases)

    @router.get("/api/golden/{name}/diff")
    def golden_diff_json(
        name: str = Path(max_length=MAX_ID, pattern=r"^[A-Za-z0-9._-]+$"),
        version: int | None = Query(None, ge=1, le=2**31 - 1),
        _: Principal = Depends(read),
    ) -> dict[str, Any]:
        try:
            return golden_diff(need(review, "review store"), name, version).to_dict()
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post("/api/golden/{name}", dependencies=[Depends(publish)])
    def publish_golden(
        body: PublishIn, name: str = Path(max_length=MAX_ID, pattern=r"^[A-Za-z0-9._-]+$")
    ) -> dict[str, Any]:
        """Publish the next version of a golden set from the cases reviewed since the last one."""
        try:
            return dict(need(review, "review store").publish(name, description=body.description).__dict__)
        except ReviewError as exc:
            raise HTTPException(409, str(exc)) from exc

    # -- registry ------------------------------------------------------------------------

    @router.get("/versions", response_class=HTMLResponse, include_in_schema=False)
    def versions(request: Request) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        reg: Registry = need(registry, "registry")
        try:
            view = registry_view(reg)
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from exc
        return render(request, "versions.html", who, reg=view)

    @router.post("/api/registry/rollback")
    def rollback(body: RollbackIn, who: Principal = Depends(admin)) -> dict[str, Any]:
        """Point the champion back at `to` (default: the champion before the current one)."""
        reg: Registry = need(registry, "registry")
        try:
            to = reg.rollback(body.to, note=body.note or f"rolled back from the dashboard by {who.name}")
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"champion": to}

    return router


def _pretty(value: Any, limit: int = 20_000) -> str:
    """Indented JSON with arrays of scalars kept on one line (item lists stay readable)."""
    text = json.dumps(value, indent=1, ensure_ascii=False)
    text = re.sub(r"\[([^\[\]{}]*)\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)).strip() + "]", text)
    return text if len(text) <= limit else text[:limit] + " ..."


def _local_path(url: str) -> bool:
    """A path on this server (so a sign-in link cannot redirect to another site)."""
    return url.startswith("/") and not url.startswith(("//", "/\\")) and "\n" not in url and "\r" not in url


def _slate_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Which items the two slates share (and how their positions moved) and which only one has."""
    pos_a = {r["item"]: r["position"] for r in a}
    pos_b = {r["item"]: r["position"] for r in b}
    shared = sorted(pos_a.keys() & pos_b.keys(), key=lambda i: pos_a[i])
    return {
        "shared": [{"item": i, "a": pos_a[i], "b": pos_b[i]} for i in shared],
        "only_a": [i for i in pos_a if i not in pos_b],
        "only_b": [i for i in pos_b if i not in pos_a],
        "overlap": len(shared) / max(1, min(len(a), len(b))) if a and b else 0.0,
    }
