"""Scoped API keys that fail closed: parsing, 401/403 per scope, reviewer identity, start-up policy, Host check."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from coachrec.serve.auth import (
    GENERATED_KEY_NAME,
    SCOPES,
    AuthConfigError,
    Authenticator,
    Principal,
    allowed_hosts_for,
    for_server,
    is_loopback,
    load_key_file,
    parse_keys,
    require,
)

ALICE = "alice-key-0123456789abcdef"
BOB = "bob:key:with:colons-0123456789"


def test_env_entries_parse_names_scopes_and_keys_with_colons() -> None:
    keys = parse_keys(f"alice:read,review:{ALICE};\n bob : ingest : {BOB}")
    assert [k.principal for k in keys] == [
        Principal("alice", frozenset({"read", "review"})),
        Principal("bob", frozenset({"ingest"})),
    ]
    assert keys[1].digest == hashlib.sha256(BOB.encode()).digest()  # stored hashed, key after the 2nd colon
    assert parse_keys(f"ops:*:{ALICE}")[0].principal.scopes == SCOPES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"alice:read:{ALICE[:8]}", "at least 16"),
        (f"alice:reed:{ALICE}", "unknown scope"),
        ("alice:read", "expected name:scope1,scope2:key"),
        (f"alice::{ALICE}", "at least one scope"),
        (f"a:read:{ALICE};a:ingest:{BOB}", "unique"),
        (f"a:read:{ALICE};b:ingest:{ALICE}", "share one key"),
    ],
)
def test_malformed_key_configuration_is_refused(text: str, message: str) -> None:
    with pytest.raises(AuthConfigError, match=message):
        parse_keys(text)


def test_key_files_in_json_and_toml_hold_keys_or_digests(tmp_path: Path) -> None:
    digest = hashlib.sha256(BOB.encode()).hexdigest()
    (tmp_path / "k.json").write_text(
        json.dumps(
            {
                "keys": [
                    {"name": "a", "scopes": ["read"], "key": ALICE},
                    {"name": "b", "scopes": ["*"], "sha256": digest},
                ]
            }
        )
    )
    (tmp_path / "k.toml").write_text(f'[[keys]]\nname = "b"\nscopes = ["ingest"]\nsha256 = "{digest}"\n')
    auth = Authenticator(load_key_file(tmp_path / "k.json"))
    assert auth.authenticate(BOB) == Principal("b", SCOPES)
    assert Authenticator(load_key_file(tmp_path / "k.toml")).authenticate(BOB).scopes == {"ingest"}
    (tmp_path / "bad.json").write_text('{"keys": [{"name": "a", "scopes": ["read"], "sha256": "abc"}]}')
    with pytest.raises(AuthConfigError, match="64 hex digits"):
        load_key_file(tmp_path / "bad.json")


def test_from_env_reads_every_source_and_the_legacy_single_key(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text(json.dumps({"keys": [{"name": "file", "scopes": ["read"], "key": BOB}]}))
    env = {
        "COACHREC_API_KEYS": f"alice:review:{ALICE}",
        "COACHREC_API_KEYS_FILE": str(tmp_path / "k.json"),
        "COACHREC_API_KEY": "legacy-single-key-0123",
    }
    auth = Authenticator.from_env(env)
    assert {k.principal.name for k in auth.keys} == {"alice", "file", "default"}
    assert auth.authenticate("legacy-single-key-0123").scopes == SCOPES
    assert not Authenticator.from_env({}).configured


REVIEWER = require("review")


def app_with(auth: Authenticator | None) -> TestClient:
    app = FastAPI()
    if auth is not None:
        app.state.auth = auth

    @app.post("/annotate")
    def annotate(principal: Principal = Depends(REVIEWER)) -> dict[str, str]:
        return {"reviewer": principal.name}

    return TestClient(app)


def test_401_without_a_key_403_without_the_scope_and_the_principal_is_the_reviewer() -> None:
    client = app_with(Authenticator.of({"alice": (["review"], ALICE), "bob": (["read", "ingest"], BOB)}))
    r = client.post("/annotate")
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/annotate", headers={"X-API-Key": ALICE + "x"}).status_code == 401
    assert client.post("/annotate", headers={"X-API-Key": "k" * 10_000}).status_code == 401
    r = client.post("/annotate", headers={"X-API-Key": BOB})
    assert r.status_code == 403 and "'review' scope" in r.json()["detail"]
    assert client.post("/annotate", headers={"Authorization": f"Bearer {ALICE}"}).json() == {"reviewer": "alice"}


@pytest.mark.parametrize("auth", [None, Authenticator(())], ids=["no key set on the app", "empty key set"])
def test_no_keys_configured_means_closed(auth: Authenticator | None) -> None:
    r = app_with(auth).post("/annotate", headers={"X-API-Key": ALICE})
    assert r.status_code == 401 and "no API keys are configured" in r.json()["detail"]


def test_insecure_mode_is_explicit_and_excludes_keys() -> None:
    assert app_with(Authenticator.insecure()).post("/annotate").json() == {"reviewer": "anonymous"}
    with pytest.raises(AuthConfigError):
        Authenticator(parse_keys(f"a:read:{ALICE}"), insecure_no_auth=True)
    with pytest.raises(ValueError, match="unknown scope"):
        require("everything")


def test_start_up_without_keys_generates_one_and_no_auth_is_explicit() -> None:
    started = for_server("0.0.0.0", environ={})
    key = started.generated_key
    assert key and len(key) >= 40 and started.warning is None and not started.auth.insecure_no_auth
    assert started.auth.authenticate(key) == Principal(GENERATED_KEY_NAME, SCOPES)
    assert for_server("127.0.0.1", environ={}).generated_key != key  # fresh per run
    client = app_with(started.auth)
    assert client.post("/annotate").status_code == 401
    assert client.post("/annotate", headers={"X-API-Key": key}).json() == {"reviewer": GENERATED_KEY_NAME}
    opened = for_server("0.0.0.0", no_auth=True, environ={})
    assert opened.auth.insecure_no_auth and opened.generated_key is None
    assert opened.warning and "--no-auth" in opened.warning and "reachable from other machines" in opened.warning
    assert "this machine" in (for_server("127.0.0.1", no_auth=True, environ={}).warning or "")
    configured = for_server("0.0.0.0", environ={"COACHREC_API_KEYS": f"a:read:{ALICE}"})
    assert configured.auth.configured and configured.warning is None and configured.generated_key is None
    with pytest.raises(AuthConfigError, match="--no-auth given while API keys are configured"):
        for_server("::1", no_auth=True, environ={"COACHREC_API_KEYS": f"a:read:{ALICE}"})
    assert is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")
    assert allowed_hosts_for("127.0.0.1") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts_for("0.0.0.0") == ["*"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(args: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    cli = Path(sys.executable).with_name("coachrec")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COACHREC_API_KEY")}
    with stderr.open("wb") as err:
        return subprocess.Popen([str(cli), "serve", *args], env=env, stdout=subprocess.DEVNULL, stderr=err)


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"server not healthy in 120 s: {log.read_text()}")


@pytest.mark.slow
def test_coachrec_serve_without_keys_prints_a_generated_key_that_guards_every_route(ml_small, tmp_path) -> None:
    from coachrec.models import create

    model = create("pop").fit(ml_small).save(tmp_path / "pop")
    port, log = _free_port(), tmp_path / "serve.err"
    url = f"http://127.0.0.1:{port}"
    proc = _serve(["--port", str(port), "--model-path", str(model), "--db", str(tmp_path / "t.duckdb")], log)
    try:
        _healthy(url, proc, log)
        found = re.search(r"generated one with every scope:\n\s+(\S+)\n", log.read_text())
        assert found, log.read_text()
        key = found.group(1)
        body = {"user_id": "1", "k": 3}
        assert httpx.post(f"{url}/v1/recommend", json=body, timeout=10).status_code == 401
        assert httpx.get(f"{url}/v1/traces", timeout=10).status_code == 401
        assert httpx.post(f"{url}/v1/recommend", json=body, headers={"X-API-Key": "x" * 43}).status_code == 401
        r = httpx.post(f"{url}/v1/recommend", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        assert httpx.get(f"{url}/v1/traces", headers={"X-API-Key": key}, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_coachrec_serve_no_auth_warns_before_loading_anything(tmp_path) -> None:
    log = tmp_path / "serve.err"
    proc = _serve(["--no-auth", "--host", "0.0.0.0", "--port", str(_free_port()), "--db", str(tmp_path / "t.db")], log)
    try:
        deadline = time.monotonic() + 60
        while "loading models" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        text = log.read_text()
        assert "WARNING: --no-auth" in text and "reachable from other machines" in text, text
        assert "generated one" not in text
    finally:
        proc.kill()
        proc.wait(30)
