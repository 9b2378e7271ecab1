"""`load_backend(spec)`: one entry point from a role, registry name, file path or URL to a backend."""

from __future__ import annotations

from pathlib import Path

from coachrec.llm.backend import LLMBackend, LLMError
from coachrec.llm.cache import CachedBackend, ResponseCache
from coachrec.llm.catalog import find_spec
from coachrec.llm.http_backend import HTTPConfig, OpenAICompatBackend
from coachrec.llm.llama_cpp_backend import LlamaCppBackend, LlamaCppConfig
from coachrec.llm.registry import HashMismatchError, ModelEntry, ModelRegistry, ModelRegistryError, verify_on_load


class ModelFileChangedError(LLMError):
    """A registered model file no longer hashes to the SHA-256 the registry recorded for it."""

    def __init__(self, mismatch: HashMismatchError) -> None:
        super().__init__(str(mismatch))
        self.path, self.expected, self.actual = mismatch.path, mismatch.expected, mismatch.actual


def load_backend(
    spec: str | Path,
    *,
    llama: LlamaCppConfig | None = None,
    http: HTTPConfig | None = None,
    model: str | None = None,
    cache: ResponseCache | None = None,
    registry: ModelRegistry | None = None,
) -> LLMBackend:
    """Open a backend.

    `spec` is one of: a URL (`http://host:port` or `.../v1`) of an OpenAI-compatible server,
    where `model` picks the served model (default: the first listed); a path to a GGUF file;
    or a registry name or role (`small`, `medium`, `teacher`) of a pulled model. With `cache`,
    the backend is wrapped in a `CachedBackend`.

    A registered model file (named, or given by a path the registry knows) is hashed again
    before it is loaded and refused (`ModelFileChangedError`) if its SHA-256 is no longer the
    one recorded when it was pulled or added; see `registry.verify_on_load` for the cache that
    keeps a re-load of an unchanged file from hashing it twice.
    """
    text = str(spec)
    backend: LLMBackend
    registry = registry or ModelRegistry()
    if text.startswith(("http://", "https://")):
        backend = OpenAICompatBackend(text, model=model, config=http)
    elif Path(text).expanduser().is_file():
        path = Path(text).expanduser()
        known = _entry_for_path(registry, path)
        if known is not None:
            _verify(known)
        backend = LlamaCppBackend(path, llama)
    else:
        entry = registry.resolve(text)
        if entry is None:
            hint = f"run `coachrec models pull {text}`" if find_spec(text) else "see `coachrec models list`"
            raise LLMError(f"no model {text!r}: not a URL, not a file, not in the model registry; {hint}")
        if entry.kind != "gguf":
            raise LLMError(f"model {entry.name!r} is a {entry.kind} model, not a GGUF an LLM backend can run")
        if not entry.exists:
            raise LLMError(f"model {entry.name!r} is registered at {entry.path}, but the file is gone; pull it again")
        _verify(entry)
        backend = LlamaCppBackend(entry.path, llama, model_id=entry.name)
    return CachedBackend(backend, cache) if cache is not None else backend


def _entry_for_path(registry: ModelRegistry, path: Path) -> ModelEntry | None:
    """The registry entry recorded for this file, if any (a path given instead of a name)."""
    try:
        entries = registry.entries()
    except ModelRegistryError as exc:  # fail closed: an unreadable registry cannot vouch for the file
        raise LLMError(f"cannot check {path} against the model registry: {exc}") from exc
    resolved = str(path.resolve())
    return next((e for e in entries if e.path == resolved), None)


def _verify(entry: ModelEntry) -> None:
    try:
        verify_on_load(Path(entry.path), entry.sha256, f"model {entry.name!r}")
    except HashMismatchError as exc:
        raise ModelFileChangedError(exc) from exc
