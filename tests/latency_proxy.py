"""A small HTTP proxy on 127.0.0.1 in front of the S3-compatible test server: it delays every request and can
answer some with S3's throttling error, as a real bucket far away and under load would.

Each request is read whole (headers and a ``Content-Length`` body), held ``delay`` seconds, then forwarded on
the client's own upstream connection; responses stream back unchanged. With ``throttle_every=n``, every n-th
request is answered ``503 SlowDown`` (S3's error body) without reaching the server. Used by the S3
extraction tests (``tests/spark/test_s3_extraction.py``) and ``make bench-extract-s3``.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from urllib.parse import urlparse

SLOW_DOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                  b'<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>')


class LatencyProxy:
    """Counts what it did: ``requests`` seen, ``throttled`` answered 503, per method in ``methods``."""

    def __init__(self, upstream: str, delay: float = 0.0, throttle_every: int = 0):
        parsed = urlparse(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.delay, self.throttle_every = delay, throttle_every
        self.requests = self.throttled = 0
        self.methods: dict[str, int] = {}
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="latency-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = [task for task in asyncio.all_tasks(self._loop) if not task.done()]
        for task in tasks:  # the clients' connections and their pumps: closed before the loop is
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = pump = None
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests += 1
                method = request.split(b" ", 1)[0].decode()
                self.methods[method] = self.methods.get(method, 0) + 1
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.throttle_every and self.requests % self.throttle_every == 0:
                    self.throttled += 1
                    writer.write(_slow_down(method))
                    await writer.drain()
                    continue
                if upstream_writer is None:
                    upstream_reader, upstream_writer = await asyncio.open_connection(
                        self.upstream_host, self.upstream_port)
                    pump = asyncio.ensure_future(_copy(upstream_reader, writer))
                upstream_writer.write(request)
                await upstream_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if pump is not None:
                pump.cancel()
            for w in (upstream_writer, writer):
                if w is not None:
                    w.close()

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP/1.1 request (headers and its Content-Length body), or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head + (await reader.readexactly(length) if length else b"")


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass


def _slow_down(method: str) -> bytes:
    body = b"" if method == "HEAD" else SLOW_DOWN_BODY
    head = (f"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {len(SLOW_DOWN_BODY)}\r\n"
            f"x-amz-request-id: proxy\r\nConnection: keep-alive\r\n\r\n").encode()
    return head + body


@contextmanager
def latency_proxy(upstream: str, delay: float = 0.0, throttle_every: int = 0):
    """A running ``LatencyProxy`` in front of ``upstream`` (an ``http://host:port`` endpoint)."""
    with LatencyProxy(upstream, delay, throttle_every) as proxy:
        yield proxy
