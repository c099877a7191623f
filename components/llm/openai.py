"""The `openai` backend: sampling from any OpenAI-compatible HTTP endpoint.

    OpenAIBackend(base_url, model, *, api_key=None, api_key_env="OPENAI_API_KEY",
                  max_concurrency=8, max_retries=5, timeout=120.0,
                  backoff_base=0.5, backoff_max=60.0, n_per_request=True)

Works with a `vllm serve` deployment, `transformers serve`, or a hosted API. A text prompt goes
to `{base_url}/completions` (the model continues it), a chat prompt (a list of messages) to
`{base_url}/chat/completions`. `base_url` follows the OpenAI client's convention and includes the
version path (`http://host:8000/v1`); a bare `http://host:8000` gets `/v1` appended.

Only the standard library is used (urllib + a thread pool), so the CPU stages need nothing more.

- API key: `api_key`, else the environment variable `api_key_env` read when the backend is built
  (never at import); sent as `Authorization: Bearer ...`. No key: no header (a local vLLM).
- Concurrency: at most `max_concurrency` requests in flight (one thread per request slot).
  Results come back in input order whatever order the responses arrive in.
- Retries: 429, 5xx, timeouts and connection errors are retried up to `max_retries` times with
  exponential back-off and jitter (`backoff_base * 2**attempt`, capped at `backoff_max`, the
  wait drawn in [half, all] of that); a `Retry-After` header (seconds or an HTTP date) is
  honoured, capped at `backoff_max`.
- `n`: one request asks for `params.n` choices. A server that returns fewer (some hosted APIs
  ignore `n`) is topped up with single-choice requests, each with its own derived seed (the same
  seed would give identical samples), and later requests of the run ask for one choice each.
- Seeds: the request for prompt `i` carries `derive_seed(seed, i)`; a top-up request for its
  completion `k` carries `derive_seed(seed, i, "choice", k)`. `Completion.seed` is the seed of
  the request that produced it (None for greedy decoding).
- Token counts: servers report `usage.completion_tokens` per request, not per choice. A choice
  that ended on `length` has exactly `max_tokens`; the rest of the total is split over the other
  choices in proportion to their text length, so the sums (throughput) are exact.

Errors are one line and subclass `BackendError`: `EndpointUnreachableError` (connection refused,
timeouts, or 429/5xx after all retries; names the URL), `ModelNotFoundError` (the server does not
serve `model`), `MalformedResponseError` (not JSON, no `choices`, a choice without text),
`RequestRejectedError` (any other 4xx: bad key, bad parameter; with the server's message).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from codedpo.components.llm.base import (
    Backend,
    BackendError,
    Completion,
    FinishReason,
    SamplingParams,
    cut_at_stop,
    derive_seed,
)
from codedpo.components.llm.prompts import Prompt


class OpenAIBackendError(BackendError):
    """The OpenAI-compatible endpoint failed; one line naming the endpoint and why."""


class EndpointUnreachableError(OpenAIBackendError):
    """No usable answer after all retries: connection refused or reset, timeouts, 429 or 5xx."""


class ModelNotFoundError(OpenAIBackendError):
    """The server does not serve the model that was asked for."""


class MalformedResponseError(OpenAIBackendError):
    """The server answered 200 with a body that is not an OpenAI completion."""


class RequestRejectedError(OpenAIBackendError):
    """The server refused the request (4xx other than 404/429): bad key, bad parameter, ..."""


_RETRYABLE_TRANSPORT = (
    urllib.error.URLError,  # connection refused, DNS failure, a timeout wrapped by urllib
    http.client.HTTPException,  # RemoteDisconnected, IncompleteRead, BadStatusLine
    ConnectionError,
    TimeoutError,  # socket.timeout is TimeoutError since Python 3.10
    socket.timeout,
    OSError,
)


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _server_message(body: bytes) -> str:
    """The `error.message` of an OpenAI error body, else the body's text, on one line."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _one_line(text)
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _one_line(error["message"])
        if isinstance(error, str):
            return _one_line(error)
        if isinstance(data.get("detail"), str):
            return _one_line(data["detail"])
    return _one_line(text)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _normalise_base_url(base_url: str) -> str:
    parsed = urllib.parse.urlsplit(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BackendError(
            f"openai backend: base_url must be an http(s) URL like http://host:8000/v1, got {base_url!r}"
        )
    path = parsed.path.rstrip("/")
    if not path:
        path = "/v1"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def split_tokens(total: int | None, texts: list[str], reasons: list[FinishReason], max_tokens: int) -> list[int]:
    """Per-choice token counts from a request's total (see the module docstring)."""
    counts = [max_tokens if reason == "length" else 0 for reason in reasons]
    rest = [i for i, reason in enumerate(reasons) if reason != "length"]
    if not rest:
        return counts
    if total is None:  # no usage reported: about four characters a token
        for i in rest:
            counts[i] = max(1, len(texts[i]) // 4)
        return counts
    left = max(0, total - sum(counts))
    weights = [len(texts[i]) + 1 for i in rest]
    shares = [left * w // sum(weights) for w in weights]
    for j in range(left - sum(shares)):  # hand out the rounding remainder
        shares[j % len(shares)] += 1
    for i, share in zip(rest, shares):
        counts[i] = share
    return counts


class OpenAIBackend(Backend):
    """Sampling from an OpenAI-compatible endpoint (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 120.0,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        n_per_request: bool = True,
    ) -> None:
        super().__init__()
        self.base_url = _normalise_base_url(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self._api_key = api_key if api_key is not None else (os.environ.get(api_key_env) or None)
        checks = [
            ("max_concurrency", max_concurrency, max_concurrency >= 1),
            ("max_retries", max_retries, max_retries >= 0),
            ("timeout", timeout, timeout > 0),
            ("backoff_base", backoff_base, backoff_base >= 0),
            ("backoff_max", backoff_max, backoff_max >= 0),
        ]
        for field, value, ok in checks:
            if not ok:
                raise BackendError(f"openai backend: {field} out of range, got {value!r}")
        if not model:
            raise BackendError("openai backend: model must be named (the name the server serves)")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.n_per_request = n_per_request
        self._n_works = True  # False once the server returned fewer choices than asked
        self._random = random.Random()
        self._lock = threading.Lock()
        self.requests_sent = 0  # HTTP attempts, retries included
        self.retries = 0

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "max_concurrency": self.max_concurrency,
            "n_per_request": self.n_per_request,
        }

    # --- one HTTP request, with retries -------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        cap = min(self.backoff_max, self.backoff_base * 2**attempt)
        return cap / 2 + self._random.uniform(0, cap / 2)

    def _post(self, path: str, body: dict[str, Any], abort: threading.Event) -> dict[str, Any]:
        """POST `body` as JSON to `base_url + path`; the decoded JSON object of a 200 answer."""
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8")
        last, what = "", "unreachable"
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise OpenAIBackendError(f"openai backend: {url}: cancelled after another request failed")
            retry_after: float | None = None
            with self._lock:
                self.requests_sent += 1
                if attempt:
                    self.retries += 1
            request = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                return self._decode(raw, url)
            except urllib.error.HTTPError as error:
                try:
                    error_body = error.read()
                except (OSError, http.client.HTTPException):
                    error_body = b""
                message = _server_message(error_body) or error.reason
                status = error.code
                if status == 429 or status >= 500:
                    last, what = f"HTTP {status} ({message})", "still failing"
                    retry_after = _retry_after(error.headers.get("Retry-After") if error.headers else None)
                else:
                    self._raise_client_error(status, message, url)
            except _RETRYABLE_TRANSPORT as error:
                reason = getattr(error, "reason", None) or error
                last = _one_line(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__)
                what = "unreachable"
            if attempt < self.max_retries:
                abort.wait(self._backoff(attempt, retry_after))
        raise EndpointUnreachableError(
            f"openai backend: {url} {what} after {self.max_retries + 1} attempts: {last}"
        )

    def _raise_client_error(self, status: int, message: str, url: str) -> None:
        lowered = message.lower()
        model_missing = "model" in lowered and any(
            phrase in lowered for phrase in ("not exist", "not found", "does not", "unknown", "no such")
        )
        if model_missing or (status == 404 and "model" in lowered):
            raise ModelNotFoundError(
                f"openai backend: model {self.model!r} is not served at {self.base_url} (HTTP {status}: {message})"
            )
        if status == 404:
            raise OpenAIBackendError(
                f"openai backend: {url} not found (HTTP 404: {message}); is base_url right (it ends in /v1)?"
            )
        if status in (401, 403):
            raise RequestRejectedError(
                f"openai backend: {url} refused the API key (HTTP {status}: {message}); "
                f"set {self.api_key_env} to a valid key"
            )
        raise RequestRejectedError(f"openai backend: {url} rejected the request (HTTP {status}: {message})")

    def _decode(self, raw: bytes, url: str) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError:
            raise MalformedResponseError(
                f"openai backend: {url} answered with a body that is not JSON: {_one_line(raw.decode('utf-8', 'replace'), 80)!r}"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise MalformedResponseError(
                f"openai backend: {url} answered without a 'choices' list: {_one_line(json.dumps(data), 80)!r}"
            )
        return data

    # --- requests for one prompt --------------------------------------------------------------

    def _request(
        self, prompt: Prompt, params: SamplingParams, n: int, seed: int, abort: threading.Event
    ) -> list[Completion]:
        """Up to `n` completions of `prompt` from one request (the server may return fewer)."""
        body: dict[str, Any] = {
            "model": self.model,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        chat = not isinstance(prompt, str)
        if chat:
            body["messages"] = prompt
            path = "/chat/completions"
        else:
            body["prompt"] = prompt
            path = "/completions"
        data = self._post(path, body, abort)
        url = self.base_url + path
        texts: list[str] = []
        reasons: list[FinishReason] = []
        for choice in sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)[:n]:
            text = self._choice_text(choice, chat)
            if text is None:
                raise MalformedResponseError(
                    f"openai backend: {url} answered with a choice without "
                    f"{'message.content' if chat else 'text'}: {_one_line(json.dumps(choice), 80)!r}"
                )
            text, stopped = cut_at_stop(text, params.stop)
            finish = choice.get("finish_reason")
            reasons.append("length" if finish == "length" and not stopped else "stop")
            texts.append(text)
        usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
        total = usage.get("completion_tokens")
        prompt_tokens = usage.get("prompt_tokens")
        tokens = split_tokens(
            total if isinstance(total, int) else None, texts, reasons, params.max_tokens
        )
        return [
            Completion(
                text,
                count,
                prompt_tokens if isinstance(prompt_tokens, int) else 0,
                reason,
                None if params.greedy else seed,
            )
            for text, count, reason in zip(texts, tokens, reasons)
        ]

    @staticmethod
    def _choice_text(choice: Any, chat: bool) -> str | None:
        if not isinstance(choice, dict):
            return None
        if chat:
            message = choice.get("message")
            if not isinstance(message, dict) or "content" not in message:
                return None
            content = message["content"]
            return "" if content is None else content if isinstance(content, str) else None
        text = choice.get("text")
        return text if isinstance(text, str) else None

    # --- the whole batch ----------------------------------------------------------------------

    def _generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        assert params.seed is not None  # resolved by `generate`
        seed = params.seed
        received: list[list[tuple[int, list[Completion]]]] = [[] for _ in prompts]  # (slot, ...)
        abort = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="openai-backend")
        pending: dict[Future[list[Completion]], tuple[int, int, int]] = {}  # -> (prompt, n, slot)
        slots: list[int] = [0] * len(prompts)  # completions requested so far, per prompt

        def submit(index: int, n: int) -> None:
            slot = slots[index]
            request_seed = derive_seed(seed, index) if slot == 0 else derive_seed(seed, index, "choice", slot)
            slots[index] += n
            future = pool.submit(self._request, prompts[index], params, n, request_seed, abort)
            pending[future] = (index, n, slot)

        try:
            for index in range(len(prompts)):
                if self.n_per_request and self._n_works:
                    submit(index, params.n)
                else:
                    for _ in range(params.n):
                        submit(index, 1)
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    index, n, slot = pending.pop(future)
                    completions = future.result()
                    if not completions:
                        raise MalformedResponseError(
                            f"openai backend: {self.base_url} answered with an empty 'choices' list"
                        )
                    received[index].append((slot, completions))
                    if len(completions) < n:
                        # Fewer choices than asked (the server ignores `n`): top up with
                        # single-choice requests, and ask for one choice from now on.
                        self._n_works = False
                        for _ in range(n - len(completions)):
                            submit(index, 1)
        except BaseException:
            abort.set()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        # In slot order, so the completions of a prompt do not depend on response timing.
        return [[c for _, part in sorted(parts, key=lambda p: p[0]) for c in part] for parts in received]
