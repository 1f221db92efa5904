"""A small analytics HTTP service for the demo and the tests, which can be told to fail.

Plain asyncio, no framework, in its own thread: ``POST /events`` takes one JSON event or a
list of them and answers 202. Modes: ``ok``; ``error`` (every request gets a 500);
``hang`` (requests are accepted and never answered); ``down`` (the port is closed, so
connections are refused). ``received`` holds every event accepted in ``ok`` mode.

Run alone: ``python -m otel_resilience_demo.analytics_stub --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
from typing import Any

__all__ = ["MODES", "AnalyticsStub"]

MODES = ("ok", "error", "hang", "down")


class AnalyticsStub:
    """The analytics service stand-in; ``start()``, ``set_mode()``, ``stop()``."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="analytics-stub", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self, coroutine: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> AnalyticsStub:
        """Start serving in ``ok`` mode."""
        if not self._thread.is_alive():
            self._thread.start()
        self._run(self._listen())
        self.mode = "ok"
        return self

    def set_mode(self, mode: str) -> None:
        """Switch to ``ok``, ``error``, ``hang`` or ``down``."""
        if mode not in MODES:
            raise ValueError(f"analytics stub mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "down":
            self._run(self._close())
        elif self._server is None:
            self._run(self._listen())
        if mode != "hang":
            self._run(self._cut())  # hung requests end when the stub stops hanging
        self.mode = mode

    def events(self) -> list[dict[str, Any]]:
        """A copy of the events received so far."""
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        """Close the port and the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._cut()

    async def _cut(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = [*lines[0].split(" "), "", ""][:2]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip() or 0)
                body = await reader.readexactly(length) if length else b""
                self.requests += 1
                if self.mode == "hang":
                    await reader.read()  # never answer; the connection ends when cut
                    return
                status, document = self._answer(method, path, body)
                payload = json.dumps(document).encode()
                writer.write(
                    f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _answer(self, method: str, path: str, body: bytes) -> tuple[str, dict[str, Any]]:
        if self.mode == "error":
            return "500 Internal Server Error", {"error": "analytics stub told to fail"}
        if method == "GET":
            return "200 OK", {"status": "ok", "received": len(self.received)}
        if method != "POST" or path != "/events":
            return "404 Not Found", {"error": f"no route {method} {path}"}
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return "400 Bad Request", {"error": "body is not JSON"}
        events = data if isinstance(data, list) else [data]
        with self._lock:
            self.received.extend(event for event in events if isinstance(event, dict))
        return "202 Accepted", {"accepted": len(events)}


def main() -> None:  # pragma: no cover - a manual tool
    parser = argparse.ArgumentParser(description="analytics stub for the example chat service")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--mode", choices=MODES, default="ok")
    args = parser.parse_args()
    stub = AnalyticsStub(args.port).start()
    stub.set_mode(args.mode)
    print(f"analytics stub on {stub.url} in mode {args.mode}; Ctrl-C stops")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
