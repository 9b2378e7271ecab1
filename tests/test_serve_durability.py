"""A real `coachrec serve` process: acknowledged feedback survives SIGKILL and a restart, with one
process and with several workers over one store process (the whole process group killed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from coachrec.models import create

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


KEY = "durability-key-0123456789"
HEADERS = {"X-API-Key": KEY}


def start(model: Path, db: Path, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    cli = Path(sys.executable).with_name("coachrec")
    proc = subprocess.Popen(
        [
            str(cli),
            "serve",
            "--port",
            str(port),
            "--model-path",
            str(model),
            "--db",
            str(db),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ | {"COACHREC_API_KEYS": f"test:*:{KEY}"},
        start_new_session=True,  # its own process group: the store process and workers die with it
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy within 120 s")


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_loses_no_acknowledged_feedback(ml_small, tmp_path, workers) -> None:
    model = create("pop").fit(ml_small).save(tmp_path / "pop")
    db, port = tmp_path / "serve.duckdb", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(model, db, port, workers)
    try:
        rec = httpx.post(f"{url}/v1/recommend", json={"user_id": "1", "k": 5}, headers=HEADERS, timeout=10).json()
        rid, items = rec["request_id"], [i["item"] for i in rec["items"]]
        acked: list[str] = []
        lock = threading.Lock()

        def writer(w: int) -> None:  # 4 concurrent clients, spread over the workers
            with httpx.Client(timeout=10, headers=HEADERS) as client:
                for n in range(8):
                    events = [
                        {"request_id": rid, "item": items[n % 5], "kind": "click", "position": n % 5},
                        {"request_id": rid, "item": items[(n + w) % 5], "kind": "rating", "value": 4.5},
                    ]
                    r = client.post(f"{url}/v1/feedback", json={"events": events})
                    assert r.status_code == 200, r.text
                    with lock:
                        acked.extend(r.json()["event_ids"])

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.killpg(proc.pid, signal.SIGKILL)  # every process, store included, right after the last ack
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(acked) == 4 * 8 * 2

    proc = start(model, db, port, workers)
    try:
        trace = httpx.get(f"{url}/v1/traces/{rid}", headers=HEADERS, timeout=10)
        assert trace.status_code == 200, trace.text  # the trace survived too
        stored = {e["event_id"] for e in trace.json()["feedback"]}
        assert set(acked) <= stored, f"lost {len(set(acked) - stored)} acknowledged events"
        assert httpx.get(f"{url}/health", timeout=10).json()["feedback_events"] == len(acked)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_review_routes_are_served_by_several_workers_through_the_store_process(ml_small, tmp_path) -> None:
    from coachrec.review import ReviewStore, review_path_for
    from test_review_golden import case, judgment

    model = create("pop").fit(ml_small).save(tmp_path / "pop")
    db, port = tmp_path / "serve.duckdb", free_port()
    queued = ReviewStore(review_path_for(db))
    assert queued.enqueue([judgment("t1", "relevance", 0.2)], [case("t1")], review_below=0.5) == 1
    queued.close()
    url = f"http://127.0.0.1:{port}"
    proc = start(model, db, port, workers=2)
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
            queue = client.get("/v1/review/queue").json()
            assert queue["counts"] == {"pending": 1} and queue["items"][0]["trace_id"] == "t1"
            item_id = queue["items"][0]["item_id"]
            done = client.post(f"/v1/review/queue/{item_id}", json={"action": "accept"})
            assert done.status_code == 200 and done.json()["reviewer"] == "test"  # the key's name
            assert client.post("/v1/review/queue/nope", json={"action": "accept"}).status_code == 404
            assert client.get("/v1/review/queue").json()["counts"].get("pending", 0) == 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    after = ReviewStore(review_path_for(db))  # the store process wrote it and let it go
    assert after.get(item_id).reviewer == "test"
    after.close()
