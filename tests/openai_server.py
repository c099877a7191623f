"""An OpenAI-compatible HTTP server on loopback, for the `openai` backend's tests.

This is a small server of our own (not `transformers serve` or `vllm serve`), built on the real
`transformers` model: every completion comes from `HfBackend.generate` on the tiny Llama of
`tests/tiny_model.py`, so the bytes on the wire are real model output. It is a
`http.server.ThreadingHTTPServer` bound to 127.0.0.1 on a free port and speaks the subset of the
OpenAI API the backend uses:

    GET  /v1/models
    POST /v1/completions        {"model", "prompt", "n", "temperature", "top_p", "max_tokens", "seed", "stop"}
    POST /v1/chat/completions   {"model", "messages", ...}

answering with `choices` (`text` / `message.content`, `finish_reason`) and `usage`, and with a
vLLM-style 404 (`The model ... does not exist.`) for a model it does not serve. A request's
`seed` is passed to `HfBackend` as the sampling seed, so a test can recompute what the server
should have answered.

Test knobs (thread-safe): `fail_next(k, status, retry_after)` answers the next k requests with
`status` (and a `Retry-After` header); `malformed_next(k, kind)` answers 200 with a body that is
not JSON / has no `choices` / has a choice without text; `die_after(n)`: requests after the n-th
get their connection dropped without an answer and the server shuts down (its port then refuses
connections); `max_n` caps the choices per answer (a server that ignores `n`); `delay` (with
`jitter`) holds each answer so requests overlap and arrive out of order; `api_key` makes it
require `Authorization: Bearer <key>`. It records every request (`requests`) and the most
requests it held at once (`max_in_flight`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from codedpo.components.llm.base import SamplingParams
from codedpo.components.llm.hf import HfBackend


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        app = self.server.app
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": app.model_name, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "code": 404}})

    def do_POST(self) -> None:
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        app._enter(self.path, self.headers.get("Authorization"), raw)
        left = False
        try:
            action = app._next_action()
            if action[0] == "die":
                app._leave()
                left = True
                self.close_connection = True  # drop the connection without an answer
                threading.Thread(target=app.stop, daemon=True).start()
                return
            status, body, headers = app._answer(self.path, self.headers.get("Authorization"), raw, action)
            app._hold()
            app._leave()  # before answering: the client cannot send its next request earlier
            left = True
            self._send(status, body, headers)
        finally:
            if not left:
                app._leave()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: OpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # a client that gave up is no error


class OpenAIServer:
    """A loopback OpenAI-compatible server answering with `backend` (see the module docstring)."""

    def __init__(self, backend: HfBackend, model_name: str = "tiny-llama") -> None:
        self.backend = backend
        self.model_name = model_name
        self.delay = 0.0
        self.jitter = False
        self.max_n: int | None = None
        self.api_key: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # HfBackend seeds torch's global RNG: one at a time
        self._fail: list[tuple[int, str | None]] = []
        self._malformed: list[str] = []
        self._die_after: int | None = None
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.app = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            self._httpd.shutdown()
            self._httpd.server_close()

    # --- knobs ---------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 429, retry_after: str | None = "1") -> None:
        with self._lock:
            self._fail.extend([(status, retry_after)] * count)

    def malformed_next(self, count: int, kind: str = "bad_json") -> None:
        assert kind in ("bad_json", "no_choices", "no_text")
        with self._lock:
            self._malformed.extend([kind] * count)

    def die_after(self, count: int) -> None:
        with self._lock:
            self._die_after = count

    # --- request handling ----------------------------------------------------------------------

    def _enter(self, path: str, authorization: str | None, raw: bytes) -> None:
        with self._lock:
            self.requests.append({"path": path, "authorization": authorization, "raw": raw})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _hold(self) -> None:
        if self.delay:
            time.sleep(random.uniform(0, self.delay) if self.jitter else self.delay)

    def _next_action(self) -> tuple[str, Any]:
        with self._lock:
            if self._die_after is not None and len(self.requests) > self._die_after:
                return ("die", None)
            if self._fail:
                return ("fail", self._fail.pop(0))
            if self._malformed:
                return ("malformed", self._malformed.pop(0))
            return ("serve", None)

    def _answer(
        self, path: str, authorization: str | None, raw: bytes, action: tuple[str, Any]
    ) -> tuple[int, bytes | dict[str, Any], dict[str, str]]:
        kind, detail = action
        if kind == "fail":
            status, retry_after = detail
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return status, {"error": {"message": "Too many requests, slow down", "code": status}}, headers
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided", "code": 401}}, {}
        if kind == "malformed":
            if detail == "bad_json":
                return 200, b"<html>502 Bad Gateway</html>", {}
            if detail == "no_choices":
                return 200, {"id": "x", "object": "text_completion", "error": "overloaded"}, {}
            return 200, {"id": "x", "choices": [{"index": 0, "finish_reason": "stop"}]}, {}
        route = path.rstrip("/")
        if route not in ("/v1/completions", "/v1/chat/completions"):
            return 404, {"error": {"message": f"no route {path}", "code": 404}}, {}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"error": {"message": "request body is not JSON", "code": 400}}, {}
        if body.get("model") != self.model_name:
            message = f"The model `{body.get('model')}` does not exist."
            return 404, {"error": {"message": message, "type": "NotFoundError", "code": 404}}, {}
        chat = route == "/v1/chat/completions"
        prompt = body.get("messages") if chat else body.get("prompt")
        try:
            params = SamplingParams(
                n=int(body.get("n", 1)),
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                max_tokens=int(body.get("max_tokens", 16)),
                seed=body.get("seed"),
                stop=tuple(body.get("stop") or ()),
            )
        except ValueError as error:
            return 400, {"error": {"message": str(error), "code": 400}}, {}
        with self._model_lock:
            completions = self.backend.generate([prompt], params)[0]
        if self.max_n is not None:
            completions = completions[: self.max_n]
        choices: list[dict[str, Any]] = []
        for index, completion in enumerate(completions):
            choice: dict[str, Any] = {"index": index, "finish_reason": completion.finish_reason}
            if chat:
                choice["message"] = {"role": "assistant", "content": completion.text}
            else:
                choice["text"] = completion.text
                choice["logprobs"] = None
            choices.append(choice)
        generated = sum(c.num_tokens for c in completions)
        prompt_tokens = completions[0].prompt_tokens if completions else 0
        return (
            200,
            {
                "id": f"cmpl-{len(self.requests)}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": generated,
                    "total_tokens": prompt_tokens + generated,
                },
            },
            {},
        )
