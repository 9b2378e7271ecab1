"""The dashboard in real Chromium (Debian's `chromium`, driven by Playwright) against the app
`coachrec serve` runs (`create_app`), on loopback through uvicorn, over a store of real traces:
sign in, filter by failure mode, open a trace and its span tree, compare two traces, annotate
three queued cases with the keyboard only, publish golden set versions and read their diff, and
find that a key without the admin scope cannot roll the registry back while an admin key can.

`COACHREC_DASHBOARD_SCREENSHOTS=DIR` also saves screenshots of the main pages into DIR.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from coachrec.app import create_app
from coachrec.coach.gate import GateReport, GateRow
from coachrec.coach.registry import Registry
from coachrec.serve import Service, Stack
from coachrec.serve.auth import Authenticator
from test_dashboard import KEYS, Filled, fill

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"needs Debian's chromium at {CHROMIUM} (bash run.sh setup installs it)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gate(champion: str, candidate: str) -> dict[str, Any]:
    rows = [
        GateRow(
            "held-out traffic", "short_slate", "target", 0.30, 0.10, -0.20, -0.28, -0.12, 0.001, 40, "lower", True, 9
        ),
        GateRow("ground truth", "ndcg@10", "guard", 0.060, 0.058, -0.002, -0.006, 0.002, 0.4, 40, "higher", True),
    ]
    report = GateReport(champion, candidate, "short_slate", "slate_complete", "judge@v1", True, ["target improved"],
                        rows, [], {"target": "paired by user"})  # fmt: skip
    return {**asdict(report), "rows": [asdict(r) for r in rows]}


@pytest.fixture(scope="module")
def server(tmp_path_factory, ml_small) -> Iterator[tuple[str, Filled, Registry]]:
    import uvicorn

    folder = tmp_path_factory.mktemp("browser")
    filled = fill(folder, ml_small)
    registry = Registry(folder / "registry")
    stack = Stack(filled.pipeline.models, ml_small.catalog, dataset="ml-latest-small")
    for name in ("first champion", "second champion"):
        v = registry.register(stack, description=name, dataset="ml-latest-small", data={"name": "ml-latest-small"})
        if v.id == "v0002":
            registry.attach_gate(v.id, _gate("v0001", v.id))
        registry.promote(v.id, note=name)
    service = Service(filled.pipeline, filled.store, filled.feedback)
    old = os.environ.get("COACHREC_REGISTRY")
    os.environ["COACHREC_REGISTRY"] = str(registry.root)
    try:
        app = create_app(service, review=filled.review, auth=Authenticator.of(KEYS))
    finally:
        if old is None:
            os.environ.pop("COACHREC_REGISTRY")
        else:
            os.environ["COACHREC_REGISTRY"] = old
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", filled, registry
    uv.should_exit = True
    thread.join(timeout=10)
    filled.review.close()
    filled.feedback.close()
    filled.store.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(10_000)
        yield context
        context.close()


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("COACHREC_DASHBOARD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=False)


def _sign_in(page: Any, base: str, who: str, path: str = "/ui/traces") -> None:
    page.context.clear_cookies()
    page.goto(base + path)
    assert "/ui/login" in page.url  # no cookie yet: the sign-in page, remembering where to go
    page.fill("input[name=key]", KEYS[who][1])
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def test_filter_open_and_compare_traces(server, browser) -> None:
    base, filled, _ = server
    page = browser.new_page()
    _sign_in(page, base, "alice")
    rows = page.locator("#traces tbody tr")
    assert rows.count() == len(filled.trace_ids) + 1  # and one request that failed
    _shot(page, "traces")
    page.select_option("#failure_mode", "short_slate")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**failure_mode=short_slate**")
    failing = {
        e["trace_id"] for e in filled.store.evaluations(name="slate_complete").to_pylist() if e["label"] == "fail"
    }
    assert 0 < rows.count() == len(failing)
    assert all("short_slate" in t for t in rows.locator("td:last-child").all_inner_texts())

    rows.first.locator("a.mono").click()
    page.wait_for_selector("#spans")
    trace_id = page.url.rsplit("/", 1)[1]
    assert trace_id in failing
    spans = page.locator("#spans details")
    assert spans.count() == len(filled.store.trace(trace_id))
    _shot(page, "trace")
    retrieve = page.locator("#spans details", has_text="retrieve.itemknn")
    retrieve.locator("summary").click()
    assert "history" in retrieve.locator("pre").first.inner_text()  # its input, opened in place
    assert page.locator("#verdicts tr.fail", has_text="slate_complete").count() == 1
    assert page.locator("table.slate tbody tr").count() < 10  # the short slate as shown

    page.goto(f"{base}/ui/traces")
    page.locator("input.pick").nth(0).check()
    assert page.locator("#compare").is_disabled()
    page.locator("input.pick").nth(1).check()
    page.click("#compare")
    page.wait_for_url("**/ui/compare?a=*")
    assert page.locator("section.side").count() == 2
    assert page.locator("#side-A table.slate tbody tr").count() >= 1
    _shot(page, "compare")
    page.goto(f"{base}/ui/cost")
    assert page.locator("#latency-plot canvas").count() == 1  # uPlot drew latency per tier
    _shot(page, "cost")
    page.close()


def test_keyboard_review_then_publish_and_diff(server, browser) -> None:
    base, filled, _ = server
    pending = filled.review.items()
    assert len(pending) >= 4
    page = browser.new_page()
    _sign_in(page, base, "alice", "/ui/review")
    assert page.locator("#queue li.item.current").count() == 1
    _shot(page, "review")
    first, second, third = pending[:3]
    page.keyboard.press("p")  # 1: pass
    page.wait_for_selector(f"li[data-id='{first.item_id}'].done")
    page.keyboard.press("n")  # 2: a note, then fail
    page.keyboard.type("the slate holds fewer than k items")
    page.keyboard.press("Escape")
    page.keyboard.press("f")
    page.wait_for_selector(f"li[data-id='{second.item_id}'].done")
    page.keyboard.press("e")  # 3: a correction of the slate, then pass
    page.keyboard.type("drop the last item")
    page.keyboard.press("Escape")
    page.keyboard.press("p")
    page.wait_for_selector(f"li[data-id='{third.item_id}'].done")
    got = [filled.review.get(i.item_id) for i in (first, second, third)]
    assert all(g.reviewer == "alice" for g in got)
    assert [g.human_label for g in got] == ["pass", "fail", "pass"]
    assert [g.status for g in got] == [
        "accepted" if i.judge_label == want else "corrected"
        for i, want in zip((first, second, third), ("pass", "fail", "pass"), strict=True)
    ]
    assert got[1].note == "the slate holds fewer than k items"
    assert got[2].note == "correction: drop the last item"
    page.reload()
    assert "alice" in page.locator("#progress").inner_text()

    page.goto(f"{base}/ui/golden")
    page.fill("#publish input[name=name]", "browser")
    page.fill("#publish input[name=description]", "three keyboard reviews")
    page.click("#publish button[type=submit]")
    page.wait_for_url("**/ui/golden/browser?version=1")
    assert "3 added" in page.locator("#diff-summary").inner_text()
    page.goto(f"{base}/ui/golden")
    assert page.locator("#sets tr", has_text="browser").count() == 1

    page.goto(f"{base}/ui/review")
    page.keyboard.press("f")  # one more review, then version 2
    page.wait_for_selector("#queue li.item.done")
    page.goto(f"{base}/ui/golden")
    page.fill("#publish input[name=name]", "browser")
    page.click("#publish button[type=submit]")
    page.wait_for_url("**/ui/golden/browser?version=2")
    summary = page.locator("#diff-summary").inner_text()
    assert "1 added" in summary and "3 unchanged" in summary
    assert page.locator("#diff tr.added").count() == 1
    _shot(page, "golden-diff")
    page.goto(f"{base}/ui/failures")
    assert page.locator("#modes", has_text="short_slate").count() == 1
    assert page.locator(".plot canvas").count() >= 1  # uPlot drew the rate chart
    assert "golden browser v2" in page.locator("#trust").inner_text()
    _shot(page, "failures")
    page.close()


def test_rollback_needs_the_admin_scope(server, browser) -> None:
    base, _, registry = server
    page = browser.new_page()
    _sign_in(page, base, "viewer", "/ui/versions")
    assert page.locator("#champion").inner_text() == "v0002"
    assert page.locator("section.version table.gate tbody tr").count() == 2
    page.fill("#rollback input[name=note]", "live metrics dropped")
    page.click("#rollback button[type=submit]")
    page.wait_for_selector("#toast.bad")
    assert "403" in page.locator("#toast").inner_text()
    assert registry.champion == "v0002"
    _sign_in(page, base, "ops", "/ui/versions")
    _shot(page, "versions")
    page.fill("#rollback input[name=note]", "live metrics dropped")
    page.click("#rollback button[type=submit]")
    page.wait_for_function("document.getElementById('champion').textContent === 'v0001'")
    assert registry.champion == "v0001"
    assert registry.events()[-1]["note"] == "live metrics dropped"
    page.close()
