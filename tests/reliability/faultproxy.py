"""A TCP proxy between the tiers and moto that can break S3/SQS/EC2 on demand.

The tiers are pointed at the proxy (``AWS_ENDPOINT_URL``); the test's own checks
talk to moto directly. ``inject(Fault.X, seconds)`` breaks every call for a while,
the way a real outage looks from a client:

- ``refuse``: the listening socket is closed, new connections get ECONNREFUSED;
- ``drop``: connections are accepted and their bytes vanish, nothing answers
  (a black hole: clients wait on their read timeouts);
- ``http503``: every request is answered ``503 Service Unavailable`` (throttling/outage).

Starting a fault aborts every connection in progress, so a pooled keep-alive
connection cannot slip past it; ending one aborts the black-holed connections, as
a network that comes back resets its stale flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
_503 = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s")
_503_BODY = b"<Error><Code>ServiceUnavailable</Code><Message>fault injected by faultproxy</Message></Error>"


class Fault(StrEnum):
    NONE = "none"
    REFUSE = "refuse"
    DROP = "drop"
    HTTP503 = "http503"


@dataclass
class ProxyStats:
    connections: int = 0
    forwarded_bytes: int = 0
    faulted_connections: int = 0  # connections a fault touched (503'd, black-holed or aborted)
    injected: list[tuple[str, float]] = field(default_factory=list)  # (fault, seconds)


class FaultProxy:
    """``with FaultProxy(target_port) as proxy: ... proxy.inject(Fault.HTTP503, 5)``; runs in its own thread."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, host: str = "127.0.0.1",
                 port: int = 0):
        self.target = (target_host, target_port)
        self.host, self.port = host, port
        self.stats = ProxyStats()
        self.fault = Fault.NONE
        self._until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------ control (any thread)
    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def inject(self, fault: Fault, seconds: float) -> None:
        """Break every call for ``seconds`` (non-blocking); the fault ends by itself."""
        self.stats.injected.append((fault.value, seconds))
        log.warning("fault proxy: %s for %.1f s", fault, seconds)
        asyncio.run_coroutine_threadsafe(self._set(fault, time.monotonic() + seconds), self._loop).result(10)

    def clear(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set(Fault.NONE, 0.0), self._loop).result(10)

    @property
    def faulty(self) -> bool:
        return self.fault is not Fault.NONE

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ event loop (proxy thread)
    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop.create_task(self._expire())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for w in list(self._live):
                w.transport.abort()
            if self._server is not None:
                self._server.close()
            self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True,
                                                  backlog=1024)

    async def _set(self, fault: Fault, until: float) -> None:
        previous, self.fault, self._until = self.fault, fault, until
        for w in list(self._live):  # nothing in progress survives a change of weather
            w.transport.abort()
        if fault is Fault.REFUSE and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if fault is not Fault.REFUSE and self._server is None:
            await self._listen()
        if previous is not fault:
            log.warning("fault proxy: %s -> %s", previous, fault)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.fault is not Fault.NONE and time.monotonic() >= self._until:
                await self._set(Fault.NONE, 0.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self._live.add(writer)
        try:
            if self.fault is Fault.DROP:
                self.stats.faulted_connections += 1
                while await reader.read(READ_CHUNK):
                    pass
            elif self.fault is Fault.HTTP503:
                self.stats.faulted_connections += 1
                with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    await reader.readuntil(b"\r\n\r\n")
                writer.write(_503 % (len(_503_BODY), _503_BODY))
                await writer.drain()
            else:
                await self._pipe(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._live.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._live.add(up_writer)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(READ_CHUNK):
                    self.stats.forwarded_bytes += len(chunk)
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            self._live.discard(up_writer)
            up_writer.transport.abort()


def main() -> None:  # pragma: no cover - a manual tool: python -m tests.reliability.faultproxy 4566
    import argparse

    parser = argparse.ArgumentParser(description="TCP proxy to moto that can inject faults (stdin: FAULT SECONDS)")
    parser.add_argument("target_port", type=int)
    parser.add_argument("--port", type=int, default=4567)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    with FaultProxy(args.target_port, port=args.port) as proxy:
        print(f"proxying {proxy.url} -> 127.0.0.1:{args.target_port}; type e.g. 'http503 10'", flush=True)
        for line in iter(input, ""):
            fault, seconds = line.split()
            proxy.inject(Fault(fault), float(seconds))


if __name__ == "__main__":
    main()
