"""A small JSON registry of the LLM and embedding model files on this machine.

The registry lives at `$COACHREC_HOME/llm_models.json` (default `~/.cache/coachrec`). Each entry
records where a model file is, its size and SHA-256, and its role (small, medium, teacher,
embed, or any label for user-added models). Writes are atomic and serialised by a lock file, so
concurrent `coachrec models pull` runs do not lose each other's entries.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from coachrec.data.integrity import file_sha256

REGISTRY_FILE = "llm_models.json"
_CHUNK = 1 << 20


class ModelRegistryError(RuntimeError):
    """A model is missing, unknown, or its registry entry is unusable."""


class HashMismatchError(ModelRegistryError):
    """A model file's SHA-256 differs from the pinned or expected one."""

    def __init__(
        self,
        what: str,
        path: Path,
        expected: str,
        actual: str,
        consequence: str = "The file is corrupt or not the pinned model; it was not registered.",
    ) -> None:
        super().__init__(f"SHA-256 mismatch for {what}: {path} hashes to {actual}, expected {expected}. {consequence}")
        self.path, self.expected, self.actual = path, expected, actual


def coachrec_home() -> Path:
    """The directory for coachrec's caches and models (`COACHREC_HOME`, default ~/.cache/coachrec)."""
    return Path(os.environ.get("COACHREC_HOME") or Path.home() / ".cache" / "coachrec").expanduser()


def models_dir(home: Path | None = None) -> Path:
    return (home or coachrec_home()) / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> str:
    """Hash `path` and raise HashMismatchError unless it equals `expected`; returns the hash."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise HashMismatchError(what, path, expected.lower(), actual)
    return actual


def verify_on_load(path: Path, expected: str, what: str) -> str:
    """Check, before a model file is loaded, that its bytes still hash to the recorded digest.

    The digest found is cached per process by (path, device, inode, size, mtime) (see
    `coachrec.data.integrity`), so loading the same unchanged file again does not hash it
    again; a file rewritten in place (a new mtime or size) or replaced (a new inode) is hashed
    afresh. Raises HashMismatchError naming the file and both digests.
    """
    actual = file_sha256(path)
    if actual != expected.lower():
        raise HashMismatchError(
            what,
            path,
            expected.lower(),
            actual,
            "The file changed after it was registered (corrupt, truncated or replaced); it was not loaded. "
            "Pull it again (`coachrec models pull --force`) or re-add it (`coachrec models add`).",
        )
    return actual


@dataclass(frozen=True)
class ModelEntry:
    """One registered model."""

    name: str
    role: str
    kind: str
    path: str
    size: int
    sha256: str
    source: str
    added: str

    @property
    def exists(self) -> bool:
        return Path(self.path).exists()


class ModelRegistry:
    """Read and update the JSON registry of model files."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or coachrec_home()
        self.path = self.home / REGISTRY_FILE

    def entries(self) -> list[ModelEntry]:
        return sorted(self._load().values(), key=lambda e: (e.role, e.name))

    def get(self, name: str) -> ModelEntry | None:
        return self._load().get(name)

    def resolve(self, name_or_role: str) -> ModelEntry | None:
        """The entry with this name, else the most recently added entry with this role."""
        models = self._load()
        if name_or_role in models:
            return models[name_or_role]
        by_role = [e for e in models.values() if e.role == name_or_role]
        return max(by_role, key=lambda e: e.added) if by_role else None

    def register(self, name: str, role: str, kind: str, path: Path, sha256: str, source: str) -> ModelEntry:
        path = path.resolve()
        if not path.exists():
            raise ModelRegistryError(f"cannot register {name!r}: {path} does not exist")
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        entry = ModelEntry(
            name=name,
            role=role,
            kind=kind,
            path=str(path),
            size=size,
            sha256=sha256,
            source=source,
            added=_dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds"),
        )
        with self._locked():
            models = self._load()
            models[name] = entry
            self._save(models)
        return entry

    def remove(self, name: str) -> ModelEntry:
        with self._locked():
            models = self._load()
            if name not in models:
                raise ModelRegistryError(f"no model named {name!r} in {self.path}")
            entry = models.pop(name)
            self._save(models)
        return entry

    def _load(self) -> dict[str, ModelEntry]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {name: ModelEntry(**fields) for name, fields in raw["models"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelRegistryError(f"model registry {self.path} is unreadable: {exc}") from exc

    def _save(self, models: dict[str, ModelEntry]) -> None:
        payload = {"version": 1, "models": {n: asdict(e) for n, e in sorted(models.items())}}
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / f"{REGISTRY_FILE}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
