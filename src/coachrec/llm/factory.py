"""`load_backend(spec)`: one entry point from a role, registry name, file path or URL to a backend."""

from __future__ import annotations

from pathlib import Path

from coachrec.llm.backend import LLMBackend, LLMError
from coachrec.llm.cache import CachedBackend, ResponseCache
from coachrec.llm.catalog import find_spec
from coachrec.llm.http_backend import HTTPConfig, OpenAICompatBackend
from coachrec.llm.llama_cpp_backend import LlamaCppBackend, LlamaCppConfig
from coachrec.llm.registry import ModelRegistry


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
    """
    text = str(spec)
    backend: LLMBackend
    if text.startswith(("http://", "https://")):
        backend = OpenAICompatBackend(text, model=model, config=http)
    elif Path(text).expanduser().is_file():
        backend = LlamaCppBackend(Path(text).expanduser(), llama)
    else:
        entry = (registry or ModelRegistry()).resolve(text)
        if entry is None:
            hint = f"run `coachrec models pull {text}`" if find_spec(text) else "see `coachrec models list`"
            raise LLMError(f"no model {text!r}: not a URL, not a file, not in the model registry; {hint}")
        if entry.kind != "gguf":
            raise LLMError(f"model {entry.name!r} is a {entry.kind} model, not a GGUF an LLM backend can run")
        if not entry.exists:
            raise LLMError(f"model {entry.name!r} is registered at {entry.path}, but the file is gone; pull it again")
        backend = LlamaCppBackend(entry.path, llama, model_id=entry.name)
    return CachedBackend(backend, cache) if cache is not None else backend
