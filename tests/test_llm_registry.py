"""Model registry, multi-part assembly, hash checks, local add, hub failure, backend factory errors."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coachrec.llm import LLMError, ModelRegistry, load_backend, pull
from coachrec.llm.pull import add_local, assemble_parts, download_from_hub, find_parts
from coachrec.llm.registry import HashMismatchError, ModelRegistryError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("COACHREC_HOME", str(tmp_path / "home"))
    return ModelRegistry()


def test_add_local_registers_and_resolves_by_name_and_role(tmp_path: Path, registry: ModelRegistry) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    entry = add_local(model, "tiny", "small", sha256=_sha(model.read_bytes()), registry=registry)
    assert (entry.kind, entry.size, entry.sha256) == ("gguf", 64, _sha(model.read_bytes()))
    assert registry.resolve("tiny") == entry
    assert registry.resolve("small") == entry
    on_disk = json.loads(registry.path.read_text())
    assert on_disk["models"]["tiny"]["path"] == str(model.resolve())


def test_add_local_with_wrong_hash_is_refused_with_clear_error(tmp_path: Path, registry: ModelRegistry) -> None:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF not really a model")
    with pytest.raises(HashMismatchError, match="SHA-256 mismatch for fake.*expected 0{64}"):
        add_local(model, "fake", sha256="0" * 64, registry=registry)
    assert registry.entries() == []


def test_cli_add_with_wrong_hash_exits_nonzero(tmp_path: Path, registry: ModelRegistry) -> None:
    from coachrec.cli.llm_models import app

    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    result = CliRunner().invoke(app, ["add", str(model), "--name", "fake", "--sha256", "1" * 64])
    assert result.exit_code == 1
    assert "mismatch" in result.output
    listed = CliRunner().invoke(app, ["list"])
    assert listed.exit_code == 0 and "not pulled" in listed.output


def test_assemble_parts_concatenates_in_order_and_checks_hash(tmp_path: Path) -> None:
    site = tmp_path / "site"
    chunks = [bytes([i]) * (1000 + i) for i in range(1, 12)]
    for i, chunk in enumerate(chunks, start=1):
        data = site / f"pkg_part{i}" / "data"
        data.mkdir(parents=True)
        (data / f"part{i:02d}.bin").write_bytes(chunk)
    parts = find_parts(site, len(chunks))
    assert [p.name for p in parts][:3] == ["part01.bin", "part02.bin", "part03.bin"]
    whole = b"".join(chunks)
    dest = tmp_path / "model.gguf"
    assert assemble_parts(parts, dest, _sha(whole), "fake") == _sha(whole)
    assert dest.read_bytes() == whole

    bad = tmp_path / "bad.gguf"
    with pytest.raises(HashMismatchError, match="SHA-256 mismatch for fake"):
        assemble_parts(parts, bad, "f" * 64, "fake")
    assert not bad.exists() and not bad.with_name("bad.gguf.partial").exists()


def test_find_parts_reports_missing_part(tmp_path: Path) -> None:
    for i in (1, 3):
        data = tmp_path / f"p{i}" / "data"
        data.mkdir(parents=True)
        (data / f"part{i:02d}.bin").write_bytes(b"x")
    with pytest.raises(ModelRegistryError, match=r"missing \[2\]"):
        find_parts(tmp_path, 3)


def test_pull_unknown_model_lists_known_ones(registry: ModelRegistry) -> None:
    with pytest.raises(ModelRegistryError, match="unknown model 'huge'.*small"):
        pull("huge", registry=registry)


def test_unreadable_registry_names_the_file(registry: ModelRegistry) -> None:
    registry.home.mkdir(parents=True)
    registry.path.write_text("{not json")
    with pytest.raises(ModelRegistryError, match="llm_models.json is unreadable"):
        registry.entries()


def test_hub_download_fails_fast_when_unreachable(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(ModelRegistryError, match="unreachable.*coachrec models pull"):
        download_from_hub("org/repo", "model.gguf", "m", registry=registry, timeout=2)
    assert time.perf_counter() - start < 5


def test_load_backend_unknown_spec_says_what_to_do(registry: ModelRegistry) -> None:
    with pytest.raises(LLMError, match="coachrec models pull teacher"):
        load_backend("teacher", registry=registry)
    with pytest.raises(LLMError, match="not in the model registry"):
        load_backend("no-such-model", registry=registry)


def test_load_backend_refuses_non_gguf_entry(tmp_path: Path, registry: ModelRegistry) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"not gguf")
    add_local(weights, "w", "custom", registry=registry)
    with pytest.raises(LLMError, match="not a GGUF"):
        load_backend("w", registry=registry)
