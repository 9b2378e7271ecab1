"""The two shapes of `logprobs` an OpenAI-compatible `/v1/completions` answers with."""

from coachrec.llm.http_backend import first_token_top_logprobs


def test_legacy_openai_shape():
    """vLLM, OpenAI and llama-cpp-python: one {token: logprob} dict per generated token."""
    shape = {"tokens": [" A"], "token_logprobs": [-0.1], "top_logprobs": [{" A": -0.1, " B": -2.5}]}
    assert first_token_top_logprobs(shape) == {" A": -0.1, " B": -2.5}


def test_llama_server_chat_shape():
    """llama.cpp's llama-server (as of the llama.cpp vendored by llama-cpp-python 0.3.36)."""
    shape = {
        "content": [
            {
                "id": 330,
                "token": " A",
                "logprob": -0.1,
                "top_logprobs": [
                    {"id": 330, "token": " A", "bytes": [32, 65], "logprob": -0.1},
                    {"id": 331, "token": " B", "bytes": [32, 66], "logprob": -2.5},
                ],
            }
        ]
    }
    assert first_token_top_logprobs(shape) == {" A": -0.1, " B": -2.5}


def test_missing_or_malformed_is_empty():
    for shape in (None, {}, {"top_logprobs": []}, {"content": []}, {"content": [{"token": " A"}]}, "text"):
        assert first_token_top_logprobs(shape) == {}
