"""The `openai` backend against a real OpenAI-compatible HTTP server on loopback.

The server (`tests/openai_server.py`) is a small server of our own, a `ThreadingHTTPServer` on
127.0.0.1, that answers with the real `transformers` model: the tiny random Llama of
`tests/tiny_model.py` loaded by `HfBackend`. Since the server samples with the request's seed,
the tests recompute the expected completions with `HfBackend` directly and check that every one
came back to its own prompt. Knobs on the server give a 429 burst, a server that dies mid-run, a
malformed body and a server that ignores `n`. Timeouts and back-off are short, so a failure is a
quick error, never a hang.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch  # the test extra installs it: a broken install must fail, not skip
from openai_server import OpenAIServer
from tiny_model import save_tiny_model

from codedpo.components.llm.base import BackendError, SamplingParams, derive_seed
from codedpo.components.llm.hf import HfBackend
from codedpo.components.llm.openai import (
    EndpointUnreachableError,
    MalformedResponseError,
    ModelNotFoundError,
    OpenAIBackend,
    RequestRejectedError,
    split_tokens,
)

TEXTS = [
    'def add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n',
    "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n",
    "def is_even(n: int) -> bool:\n    return n % 2 == 0\n",
] * 4

TEXT_PROMPTS = ["def add(a, b):\n", "Write", "assert add(1, 2) == 3\nassert", "def is_even(n: int) -> bool:\n    return"]
CHAT_PROMPTS = [[{"role": "user", "content": text}] for text in TEXT_PROMPTS]
FAST = {"backoff_base": 0.02, "backoff_max": 2.0, "timeout": 10.0}


@pytest.fixture(scope="module")
def hf() -> HfBackend:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        save_tiny_model(Path(folder), TEXTS, chat_template=True)
        yield HfBackend(folder, batch_size=1, device="cpu")


@pytest.fixture
def server(hf: HfBackend) -> Iterator[OpenAIServer]:
    running = OpenAIServer(hf).start()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith("openai backend: ")
    return message


@pytest.mark.parametrize("prompts", [TEXT_PROMPTS, CHAT_PROMPTS], ids=["text", "chat"])
def test_order_and_counts_survive_out_of_order_answers(server, hf, prompts):
    server.delay, server.jitter = 0.15, True  # answers arrive in a shuffled order
    backend = OpenAIBackend(server.url, "tiny-llama", max_concurrency=4, **FAST)
    params = SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=7)
    results = backend.generate(prompts, params)
    assert [len(r) for r in results] == [2, 2, 2, 2]
    assert len(server.requests) == 4  # n=2 in one request each
    path = "/v1/chat/completions" if prompts is CHAT_PROMPTS else "/v1/completions"
    assert {r["path"] for r in server.requests} == {path}
    for index, (prompt, completions) in enumerate(zip(prompts, results)):
        request_seed = derive_seed(7, index)
        expected = hf.generate([prompt], SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=request_seed))[0]
        assert [c.text for c in completions] == [c.text for c in expected]
        assert [c.prompt_tokens for c in completions] == [c.prompt_tokens for c in expected]
        assert [c.finish_reason for c in completions] == [c.finish_reason for c in expected]
        assert sum(c.num_tokens for c in completions) == sum(c.num_tokens for c in expected)
        assert {c.seed for c in completions} == {request_seed}
    assert backend.stats.completions == 8 and backend.stats.generated_tokens > 0


def test_concurrency_is_used_and_bounded(server):
    server.delay = 0.2
    backend = OpenAIBackend(server.url, "tiny-llama", max_concurrency=3, **FAST)
    results = backend.generate(TEXT_PROMPTS * 3, SamplingParams(max_tokens=2, seed=1))
    assert len(results) == 12 and len(server.requests) == 12
    assert 1 < server.max_in_flight <= 3


def test_429_burst_is_retried_honouring_retry_after(server):
    server.fail_next(2, status=429, retry_after="1")
    backend = OpenAIBackend(server.url, "tiny-llama", max_concurrency=1, **FAST)
    start = time.monotonic()
    results = backend.generate(TEXT_PROMPTS[:1], SamplingParams(max_tokens=2, seed=1))
    elapsed = time.monotonic() - start
    assert len(results[0]) == 1
    assert len(server.requests) == 3 and backend.requests_sent == 3 and backend.retries == 2
    assert elapsed >= 1.9  # waited the server's Retry-After twice, not the 0.02 s back-off


def test_a_429_burst_longer_than_the_retries_is_a_clear_error(server):
    server.fail_next(5, status=429, retry_after="0")
    backend = OpenAIBackend(server.url, "tiny-llama", max_retries=2, **FAST)
    with pytest.raises(EndpointUnreachableError) as error:
        backend.generate(TEXT_PROMPTS[:1], SamplingParams(max_tokens=2, seed=1))
    assert f"{server.url}/completions still failing after 3 attempts: HTTP 429" in one_line(error)
    assert len(server.requests) == 3


def test_5xx_without_retry_after_backs_off_and_succeeds(server):
    server.fail_next(3, status=503, retry_after=None)
    backend = OpenAIBackend(server.url, "tiny-llama", max_concurrency=2, **FAST)
    results = backend.generate(TEXT_PROMPTS, SamplingParams(max_tokens=2, seed=1))
    assert [len(r) for r in results] == [1, 1, 1, 1]
    assert len(server.requests) == 7 and backend.retries == 3


def test_backoff_is_exponential_with_jitter_and_capped():
    backend = OpenAIBackend("http://127.0.0.1:1/v1", "m", backoff_base=0.5, backoff_max=3.0)
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 3.0)]:
        waits = {backend._backoff(attempt, None) for _ in range(20)}
        assert all(cap / 2 <= w <= cap for w in waits) and len(waits) > 1
    assert backend._backoff(0, 2.5) == 2.5 and backend._backoff(0, 100.0) == 3.0


def test_server_dying_mid_run_is_a_clear_error_naming_the_endpoint(server):
    server.delay = 0.05
    server.die_after(3)
    backend = OpenAIBackend(server.url, "tiny-llama", max_concurrency=2, max_retries=2, **FAST)
    start = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as error:
        backend.generate(TEXT_PROMPTS * 3, SamplingParams(max_tokens=2, seed=1))
    assert time.monotonic() - start < 15
    message = one_line(error)
    assert f"{server.url}/completions unreachable after 3 attempts" in message


def test_a_server_that_never_answers_times_out_into_a_clear_error(server):
    server.delay = 3.0  # longer than the client's timeout
    backend = OpenAIBackend(server.url, "tiny-llama", max_retries=1, backoff_base=0.02, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as error:
        backend.generate(TEXT_PROMPTS[:1], SamplingParams(max_tokens=2, seed=1))
    assert time.monotonic() - start < 2.5
    message = one_line(error)
    assert "unreachable after 2 attempts" in message and "timed out" in message
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("bad_json", "not JSON"), ("no_choices", "without a 'choices' list"), ("no_text", "a choice without text")],
)
def test_malformed_response_is_a_clear_error(server, kind, expected):
    server.malformed_next(1, kind)
    backend = OpenAIBackend(server.url, "tiny-llama", max_concurrency=1, **FAST)
    with pytest.raises(MalformedResponseError) as error:
        backend.generate(TEXT_PROMPTS[:1], SamplingParams(max_tokens=2, seed=1))
    message = one_line(error)
    assert expected in message and server.url in message
    assert len(server.requests) == 1  # not retried


def test_wrong_model_name_is_a_clear_error_without_retries(server):
    backend = OpenAIBackend(server.url, "no-such-model", **FAST)
    with pytest.raises(ModelNotFoundError) as error:
        backend.generate(CHAT_PROMPTS[:2], SamplingParams(max_tokens=2, seed=1))
    message = one_line(error)
    assert "'no-such-model' is not served at " + server.url in message and "does not exist" in message
    assert len(server.requests) <= 2  # one request per prompt at most, none retried


def test_unreachable_endpoint_fails_after_a_bounded_number_of_attempts():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = OpenAIBackend(url, "tiny-llama", max_retries=3, **FAST)
    start = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as error:
        backend.generate(["x"], SamplingParams(max_tokens=2, seed=1))
    assert time.monotonic() - start < 5
    message = one_line(error)
    assert f"{url}/completions unreachable after 4 attempts" in message and "refused" in message.lower()
    assert backend.requests_sent == 4 and backend.retries == 3


def test_api_key_is_read_when_built_and_sent_as_bearer(server, monkeypatch):
    server.api_key = "sk-test-123"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    backend = OpenAIBackend(server.url, "tiny-llama", **FAST)
    monkeypatch.setenv("OPENAI_API_KEY", "changed-later")  # read once, when built
    backend.generate(TEXT_PROMPTS[:1], SamplingParams(max_tokens=2, seed=1))
    assert server.requests[-1]["authorization"] == "Bearer sk-test-123"
    assert "sk-test" not in str(backend.describe())


def test_missing_or_wrong_key_is_a_clear_error(server):
    server.api_key = "sk-right"
    backend = OpenAIBackend(server.url, "tiny-llama", **FAST)  # no OPENAI_API_KEY: no header
    with pytest.raises(RequestRejectedError) as error:
        backend.generate(TEXT_PROMPTS[:1], SamplingParams(max_tokens=2, seed=1))
    assert "HTTP 401" in one_line(error) and "OPENAI_API_KEY" in str(error.value)
    assert server.requests[0]["authorization"] is None


def test_server_ignoring_n_is_topped_up_with_distinct_seeds(server):
    server.max_n = 1
    backend = OpenAIBackend(server.url, "tiny-llama", max_concurrency=3, **FAST)
    results = backend.generate(CHAT_PROMPTS, SamplingParams(n=3, max_tokens=4, seed=3))
    assert [len(r) for r in results] == [3, 3, 3, 3]
    assert len(server.requests) == 4 + 4 * 2
    for index, completions in enumerate(results):
        assert len({c.seed for c in completions}) == 3
        assert completions[0].seed == derive_seed(3, index)
    # Later runs ask for one choice per request straight away.
    server.requests.clear()
    backend.generate(CHAT_PROMPTS[:1], SamplingParams(n=2, max_tokens=2, seed=3))
    assert len(server.requests) == 2


def test_base_url_and_settings_are_checked():
    assert OpenAIBackend("http://127.0.0.1:8000", "m").base_url == "http://127.0.0.1:8000/v1"
    assert OpenAIBackend("http://127.0.0.1:8000/v1/", "m").base_url == "http://127.0.0.1:8000/v1"
    with pytest.raises(BackendError, match="base_url must be an http"):
        OpenAIBackend("127.0.0.1:8000", "m")
    with pytest.raises(BackendError, match="max_concurrency out of range"):
        OpenAIBackend("http://127.0.0.1:8000", "m", max_concurrency=0)


def test_split_tokens_keeps_the_total():
    assert split_tokens(10, ["ab", "abcd"], ["stop", "stop"], 8) == [4, 6]
    assert split_tokens(13, ["", "abc"], ["length", "stop"], 8) == [8, 5]
    assert split_tokens(None, ["abcdefgh"], ["stop"], 8) == [2]
