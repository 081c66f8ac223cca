"""A local OpenAI-compatible chat-completions server that injects faults, for the LLM client tests.

It is a real HTTP server on loopback speaking the wire protocol (``POST /v1/chat/completions``);
it is not a mock of our code: the clients under test open sockets, send JSON, parse responses,
time out and retry exactly as against vLLM's or OpenAI's server.

What it answers comes from a script: ``server.script(action, ...)`` queues actions for the next
requests (first in, first out); when the queue is empty, ``server.responder(request_body)`` decides
(default: a fixed JSON answer). An action is a dict:

- ``{"content": "text"}`` / ``{"json": {...}}``: 200 with that message content (``json`` is dumped);
- ``{"status": 429, "retry_after": "1"}`` / ``{"status": 500}``: that status (optional ``body``);
- ``{"raw": "not json"}``: 200 with a body that is not JSON at all;
- ``"delay_s": seconds`` in any action: wait that long before answering (slow model);

Every request is logged (``server.requests``: path, headers, parsed body), e.g. for privacy checks
that no other customer's data reached a prompt; ``server.max_in_flight`` is the largest number of
requests it was serving at once.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def completion(content: str, model: str = "fake-model") -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def last_user_content(body: dict) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


class FakeOpenAIServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[dict] = []
        self.responder: Callable[[dict], dict] = lambda body: {"json": {"answer": "ok"}}
        self.in_flight = 0
        self.max_in_flight = 0
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False   # a handler still sleeping in a slow answer must not block stop()
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *actions: dict) -> None:
        with self._lock:
            self._queue.extend(actions)

    def _next_action(self, body: dict) -> dict:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.responder(body)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = {"unparseable": raw.decode("utf-8", "replace")}
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                            "received_at": time.time()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self._counted = True
                try:
                    if self.path.rstrip("/") != "/v1/chat/completions":
                        self._send(404, {"error": {"message": f"no route {self.path}"}})
                        return
                    self._answer(server._next_action(body))
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up (timeout) before we answered: expected for slow actions
                finally:
                    self._answered()

            def _answered(self) -> None:
                """The request stops counting as in flight before its answer is written: once the
                client has the answer it may send the next one, which must not find this one counted
                (a client limited to N requests at once was seen at N + 1 under load)."""
                if getattr(self, "_counted", False):
                    self._counted = False
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, action: dict) -> None:
                if action.get("delay_s"):
                    time.sleep(action["delay_s"])
                if "status" in action and action["status"] != 200:
                    headers = {"Retry-After": str(action["retry_after"])} if "retry_after" in action else {}
                    self._send(action["status"], action.get("body", {"error": {"message": "injected fault"}}),
                               headers)
                elif "raw" in action:
                    self._send(200, action["raw"])
                elif "json" in action:
                    self._send(200, completion(json.dumps(action["json"])))
                else:
                    self._send(200, completion(action.get("content", "")))

            def _send(self, status: int, payload: Any, headers: dict | None = None) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self._answered()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
