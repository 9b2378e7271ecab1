"""The LLM layer: model files, backends (local llama.cpp and OpenAI-compatible HTTP), caching.

from coachrec.llm import load_backend, ResponseCache
llm = load_backend("small", cache=ResponseCache())       # after `coachrec models pull small`
scores = llm.next_token_logprobs(prompt, ["A", "B", "C"])  # one forward pass
llm.last_usage                                            # tokens and latency for the span

LLMReranker(llm).rerank(history_titles, candidate_texts)  # one-pass letter reranker
GroundedExplainer(catalog).explain(items, history)         # fact-checked reasons
Router().route(signals(scores, len(history), request))     # none / small / escalate
"""

from coachrec.llm.backend import ChatMessage, LLMBackend, LLMError, LLMUnsupportedError, Usage
from coachrec.llm.cache import ResponseCache
from coachrec.llm.cost import TierPrice, cost_report
from coachrec.llm.explain import ExplainConfig, GroundedExplainer
from coachrec.llm.factory import load_backend
from coachrec.llm.fake import FakeBackend
from coachrec.llm.http_backend import HTTPConfig, OpenAICompatBackend
from coachrec.llm.llama_cpp_backend import LlamaCppBackend, LlamaCppConfig
from coachrec.llm.pull import pull
from coachrec.llm.registry import ModelRegistry, coachrec_home
from coachrec.llm.rerank import LLMReranker, RerankConfig
from coachrec.llm.router import Router, RouterConfig

__all__ = [
    "ChatMessage",
    "ExplainConfig",
    "FakeBackend",
    "GroundedExplainer",
    "HTTPConfig",
    "LLMBackend",
    "LLMError",
    "LLMReranker",
    "LLMUnsupportedError",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "ModelRegistry",
    "OpenAICompatBackend",
    "RerankConfig",
    "ResponseCache",
    "Router",
    "RouterConfig",
    "TierPrice",
    "Usage",
    "coachrec_home",
    "cost_report",
    "load_backend",
    "pull",
]
