"""The OpenAI-compatible HTTP backend against a real llama-cpp-python server on loopback."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coachrec.llm import (
    HTTPConfig,
    LlamaCppBackend,
    LlamaCppConfig,
    LLMError,
    ModelRegistry,
    OpenAICompatBackend,
    load_backend,
)

pytestmark = pytest.mark.slow

LETTERS = [chr(ord("A") + i) for i in range(20)]
PROMPT = (
    "Which movie suits a fan of heist thrillers?\n"
    + "\n".join(f"{letter}. Film {i}" for i, letter in enumerate(LETTERS))
    + "\nAnswer: "
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _small_model() -> Path:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not built: run scripts/install_llama_cpp.py")
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] extra not installed")
    entry = ModelRegistry().resolve("small")
    if entry is None or not entry.exists:
        pytest.skip("SmolLM2-135M is not pulled: run `coachrec models pull small`")
    return Path(entry.path)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return _small_model()


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free loopback port; yields its base URL."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "1",
        "--seed",
        "0",
    ]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in 90 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def remote(server: str) -> Iterator[OpenAICompatBackend]:
    backend = OpenAICompatBackend(server)
    yield backend
    backend.close()


def test_discovers_model_and_completes(remote: OpenAICompatBackend) -> None:
    assert remote.model_id == "smollm2"
    out = remote.complete("The capital of France is", max_tokens=8)
    assert out.text and out.usage.input_tokens > 0 and out.usage.output_tokens > 0
    assert remote.complete("The capital of France is", max_tokens=8).text == out.text  # greedy
    reply = remote.chat([{"role": "user", "content": "Say hello."}], max_tokens=12)
    assert reply.text.strip() and reply.usage.latency_s > 0


def test_next_token_logprobs_match_the_local_backend(remote: OpenAICompatBackend, model_path: Path) -> None:
    """In the server's top k the values equal llama.cpp's own; outside it they are upper bounds."""
    scores = remote.next_token_logprobs(PROMPT, LETTERS)
    assert list(scores) == LETTERS and all(math.isfinite(v) and v <= 0 for v in scores.values())
    assert remote.next_token_logprobs(PROMPT, LETTERS) == scores
    digits = ["1", "2", "3"]  # this small model's likeliest continuations of PROMPT
    top = remote.next_token_logprobs(PROMPT, digits)
    assert remote.last_outside_top_k == frozenset()
    local = LlamaCppBackend(model_path, LlamaCppConfig(n_ctx=2048, n_threads=1))
    try:
        exact = local.next_token_logprobs(PROMPT, LETTERS + digits)
        assert abs(remote.count_tokens(PROMPT) - local.count_tokens(PROMPT)) <= 1
    finally:
        local.close()
    for d in digits:
        assert top[d] == pytest.approx(exact[d], abs=0.05)
    for letter in LETTERS:
        assert scores[letter] >= exact[letter] - 0.05


def test_factory_opens_urls(server: str) -> None:
    llm = load_backend(server + "/v1", http=HTTPConfig(timeout_s=30))
    try:
        assert llm.model_id == "smollm2"
    finally:
        llm.close()


def test_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    with pytest.raises(LLMError, match=f"cannot reach {url}/v1/models"):
        OpenAICompatBackend(url, config=HTTPConfig(connect_timeout_s=1))
    assert time.perf_counter() - start < 5
