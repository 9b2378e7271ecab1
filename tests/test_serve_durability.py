"""A real `coachrec serve` process: acknowledged feedback survives SIGKILL and a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


def start(model: Path, db: Path, port: int) -> subprocess.Popen[bytes]:
    cli = Path(sys.executable).with_name("coachrec")
    proc = subprocess.Popen(
        [str(cli), "serve", "--port", str(port), "--model-path", str(model), "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy within 90 s")


def test_sigkill_loses_no_acknowledged_feedback(ml_small, tmp_path) -> None:
    model = create("pop").fit(ml_small).save(tmp_path / "pop")
    db, port = tmp_path / "serve.duckdb", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(model, db, port)
    try:
        rec = httpx.post(f"{url}/v1/recommend", json={"user_id": "1", "k": 5}, timeout=10).json()
        rid, items = rec["request_id"], [i["item"] for i in rec["items"]]
        acked: list[str] = []
        with httpx.Client(timeout=10) as client:
            for n in range(15):
                events = [
                    {"request_id": rid, "item": items[n % 5], "kind": "click", "position": n % 5},
                    {"request_id": rid, "item": items[(n + 1) % 5], "kind": "rating", "value": 4.5},
                ]
                r = client.post(f"{url}/v1/feedback", json={"events": events})
                assert r.status_code == 200, r.text
                acked += r.json()["event_ids"]
        os.kill(proc.pid, signal.SIGKILL)  # right after the last acknowledgement
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc = start(model, db, port)
    try:
        trace = httpx.get(f"{url}/v1/traces/{rid}", timeout=10)
        assert trace.status_code == 200, trace.text  # the trace survived too
        stored = {e["event_id"] for e in trace.json()["feedback"]}
        assert set(acked) <= stored, f"lost {len(set(acked) - stored)} acknowledged events"
        assert httpx.get(f"{url}/health", timeout=10).json()["feedback_events"] == len(acked)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
