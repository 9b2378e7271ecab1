"""The LLM layer: model files, backends (local llama.cpp and OpenAI-compatible HTTP), caching.

    from coachrec.llm import load_backend, ResponseCache
    llm = load_backend("small", cache=ResponseCache())       # after `coachrec models pull small`
    scores = llm.next_token_logprobs(prompt, ["A", "B", "C"])  # one forward pass
    llm.last_usage                                            # tokens and latency for the span
"""

from coachrec.llm.backend import ChatMessage, Completion, LLMBackend, LLMError, LLMUnsupportedError, Usage
from coachrec.llm.cache import CachedBackend, ResponseCache
from coachrec.llm.catalog import CATALOG, ModelSpec, find_spec
from coachrec.llm.factory import load_backend
from coachrec.llm.http_backend import HTTPConfig, OpenAICompatBackend
from coachrec.llm.llama_cpp_backend import LlamaCppBackend, LlamaCppConfig
from coachrec.llm.pull import add_local, download_from_hub, pull
from coachrec.llm.registry import (
    HashMismatchError,
    ModelEntry,
    ModelRegistry,
    ModelRegistryError,
    coachrec_home,
)

__all__ = [
    "CATALOG",
    "CachedBackend",
    "ChatMessage",
    "Completion",
    "HTTPConfig",
    "HashMismatchError",
    "LLMBackend",
    "LLMError",
    "LLMUnsupportedError",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "ModelEntry",
    "ModelRegistry",
    "ModelRegistryError",
    "ModelSpec",
    "OpenAICompatBackend",
    "ResponseCache",
    "Usage",
    "add_local",
    "coachrec_home",
    "download_from_hub",
    "find_spec",
    "load_backend",
    "pull",
]
