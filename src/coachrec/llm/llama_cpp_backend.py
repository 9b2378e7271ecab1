"""Local GGUF models through llama-cpp-python (built by scripts/install_llama_cpp.py).

Next-token scoring evaluates the prompt once with `logits_all` off and reads the logits of the
last position only. The KV cache is kept between calls: each call re-evaluates only the tokens
after the longest common prefix with the previous prompt (the same reuse llama-cpp-python does
inside generation), so reranking prompts that share a system prompt and history pay for that
prefix once. A backend instance is not re-entrant; calls are serialised by a lock.

Prompts built by `coachrec.llm.prompts` (`Prompt`) are tokenised segment by segment: special
tokens are parsed in the template's own markers only, never in catalog or user text.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coachrec.llm.backend import ChatMessage, Completion, LLMBackend, LLMError, Timer
from coachrec.llm.prompts import Prompt

_INSTALL_HINT = "build it with `.venv/bin/python scripts/install_llama_cpp.py`"


@dataclass(frozen=True)
class LlamaCppConfig:
    """Settings for one loaded GGUF model."""

    n_ctx: int = 4096
    n_threads: int | None = None
    """CPU threads for generation and prompt processing (default: all cores)."""
    n_batch: int = 512
    seed: int = 0
    """Default sampling seed; a call's own `seed` overrides it."""
    verbose: bool = False


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LLMError(f"llama-cpp-python is not installed; {_INSTALL_HINT}") from exc
    return llama_cpp


class LlamaCppBackend(LLMBackend):
    """A GGUF model run in-process by llama.cpp."""

    def __init__(
        self, model_path: str | Path, config: LlamaCppConfig | None = None, model_id: str | None = None
    ) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise LLMError(f"model file {self.path} does not exist")
        self.config = config or LlamaCppConfig()
        self.model_id = model_id or self.path.name
        self._lib = _import_llama()
        threads = self.config.n_threads or os.cpu_count() or 1
        try:
            self._llm = self._lib.Llama(
                model_path=str(self.path),
                n_ctx=self.config.n_ctx,
                n_batch=self.config.n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                seed=self.config.seed,
                logits_all=False,
                verbose=self.config.verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"llama.cpp could not load {self.path}: {exc}") from exc
        self._embedder: Any = None
        self._lock = threading.Lock()
        self._first_tokens: dict[str, int] = {}

    @property
    def context_length(self) -> int:
        return int(self._llm.n_ctx())

    def tokenize(self, text: str) -> list[int]:
        """Tokens of a prompt as the model sees it, BOS first if the model wants one.

        For a `Prompt` only its template markers are parsed as special tokens; every other
        segment (instructions, catalog and user text) is tokenised with special-token parsing
        off, so text that spells a control token stays plain text. A plain `str` is trusted
        whole: special tokens are parsed anywhere in it."""
        return self._tokens(text, add_bos=True)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` without BOS, tokenised as `tokenize` does (a chat marker counts as one)."""
        return len(self._tokens(text, add_bos=False))

    def _tokens(self, text: str, add_bos: bool) -> list[int]:
        llm = self._llm
        if not isinstance(text, Prompt):
            return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))
        # what llama.cpp's add_special adds around a whole string: BOS first, EOS last, if the vocabulary asks
        vocab = llm._model
        out: list[int] = [llm.token_bos()] if add_bos and vocab.add_bos_token() else []
        for piece, marker in text.segments:
            out += llm.tokenize(piece.encode("utf-8"), add_bos=False, special=marker)
        if add_bos and vocab.add_eos_token():
            out.append(llm.token_eos())
        return out

    def complete(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        timer = Timer()
        # a Prompt goes in as tokens, so that its data segments are never parsed for special tokens
        given: str | list[int] = self.tokenize(prompt) if isinstance(prompt, Prompt) else prompt
        with self._lock:
            out = self._call(
                self._llm.create_completion,
                prompt=given,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=list(stop) if stop else None,
                seed=self.config.seed if seed is None else seed,
            )
        return self._completion(out, "complete", out["choices"][0]["text"], timer)

    def chat(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        timer = Timer()
        rendered = self.chat_prompt(messages)
        if rendered is None:  # no chat template in the GGUF: llama-cpp-python's named format
            with self._lock:
                out = self._call(
                    self._llm.create_chat_completion,
                    messages=[dict(m) for m in messages],
                    max_tokens=max_tokens,
                    temperature=temperature,
                    stop=list(stop) if stop else None,
                    seed=self.config.seed if seed is None else seed,
                )
            return self._completion(out, "chat", out["choices"][0]["message"]["content"] or "", timer)
        prompt, template_stop = rendered
        with self._lock:
            out = self._call(
                self._llm.create_completion,
                prompt=self._tokens(prompt, add_bos=False),  # the template writes BOS itself, if any
                max_tokens=max_tokens,
                temperature=temperature,
                stop=[*(stop or ()), *template_stop] or None,
                seed=self.config.seed if seed is None else seed,
            )
        return self._completion(out, "chat", out["choices"][0]["text"], timer)

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> tuple[Prompt, list[str]] | None:
        """`messages` rendered by the model's own chat template as a `Prompt` whose message
        contents are data segments (tokenised with special-token parsing off) and whose template
        text is parsed for special tokens; plus the template's stop strings. None if the GGUF
        carries no chat template.

        The template is rendered once with a placeholder per message and the contents are put
        back in their places, so a message holding `<|im_end|>` cannot close its turn."""
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        import jinja2
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self._llm
        eos, bos = llm.token_eos(), llm.token_bos()
        formatter: Any = Jinja2ChatFormatter(
            template=template,
            eos_token=llm.detokenize([eos], special=True).decode("utf-8", "replace") if eos != -1 else "",
            bos_token=llm.detokenize([bos], special=True).decode("utf-8", "replace") if bos != -1 else "",
        )
        holders = [f"\ue000{i}\ue001" for i in range(len(messages))]
        try:
            result = formatter(
                messages=[{"role": m["role"], "content": h} for m, h in zip(messages, holders, strict=True)]
            )
        except (ValueError, TypeError, jinja2.TemplateError) as exc:  # the template refuses these messages
            raise LLMError(f"the chat template of {self.model_id} cannot render these messages: {exc}") from exc
        text, position = str(result.prompt), 0
        segments: list[tuple[str, bool]] = []
        for message, holder in zip(messages, holders, strict=True):
            at = text.find(holder, position)
            if at < 0 or text.count(holder) != 1:
                raise LLMError(f"the chat template of {self.model_id} does not place each message once, as given")
            content = message["content"].replace("\ue000", "").replace("\ue001", "")
            segments += [(text[position:at], True), (content, False)]
            position = at + len(holder)
        segments.append((text[position:], True))
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return Prompt(segments), [str(s) for s in stop]

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]:
        timer = Timer()
        ids = {c: self._first_token(c) for c in candidates}
        tokens = self.tokenize(prompt)
        if len(tokens) >= self.context_length:
            raise LLMError(f"prompt has {len(tokens)} tokens; the context holds {self.context_length}")
        with self._lock:
            reused = self._eval_with_prefix_reuse(tokens)
            pointer = self._lib.llama_get_logits_ith(self._llm.ctx, -1)
            logits = np.ctypeslib.as_array(pointer, shape=(self._llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        log_z = top + np.log(np.exp(logits - top).sum())
        self._record("next_token_logprobs", len(tokens), 0, timer, reused)
        return {c: float(logits[i] - log_z) for c, i in ids.items()}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled, L2-normalised embeddings from a second context in embedding mode."""
        timer = Timer()
        with self._lock:
            if self._embedder is None:
                threads = self.config.n_threads or os.cpu_count() or 1
                self._embedder = self._lib.Llama(
                    model_path=str(self.path),
                    n_ctx=self.config.n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    embedding=True,
                    pooling_type=self._lib.LLAMA_POOLING_TYPE_MEAN,
                    verbose=self.config.verbose,
                )
            vectors, n_tokens = self._call(self._embedder.embed, list(texts), normalize=True, return_count=True)
        self._record("embed", int(n_tokens), 0, timer)
        return [list(map(float, v)) for v in vectors]

    def close(self) -> None:
        with self._lock:
            self._llm.close()
            if self._embedder is not None:
                self._embedder.close()

    def _first_token(self, candidate: str) -> int:
        if candidate not in self._first_tokens:
            ids = self._llm.tokenize(candidate.encode("utf-8"), add_bos=False, special=False)
            if not ids:
                raise LLMError(f"candidate {candidate!r} has no tokens")
            self._first_tokens[candidate] = int(ids[0])
        return self._first_tokens[candidate]

    def _eval_with_prefix_reuse(self, tokens: list[int]) -> int:
        """Evaluate `tokens`, keeping the KV cache of the longest prefix shared with the last call.

        At least the final token is always evaluated so that its logits are fresh.
        """
        llm = self._llm
        previous = llm.input_ids[: llm.n_tokens]
        limit = min(len(previous), len(tokens) - 1)
        if limit > 0:
            mismatch = np.flatnonzero(previous[:limit] != np.asarray(tokens[:limit]))
            reused = int(mismatch[0]) if mismatch.size else limit
        else:
            reused = 0
        llm.n_tokens = reused  # eval() drops the KV cache from this position on
        self._call(llm.eval, tokens[reused:])
        return reused

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"llama.cpp call failed on {self.model_id}: {exc}") from exc

    def _completion(self, out: dict[str, Any], operation: str, text: str, timer: Timer) -> Completion:
        usage = out.get("usage") or {}
        recorded = self._record(
            operation, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), timer
        )
        return Completion(text=text, finish_reason=out["choices"][0].get("finish_reason"), usage=recorded)
