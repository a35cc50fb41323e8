"""`python -m web_tier`: serve the web tier with waitress until SIGTERM or Ctrl-C.

With ``IMGREC_WEB_PROCESSES`` above 1 the listening socket is opened with
SO_REUSEPORT, so that many independent processes share the port and the kernel
spreads new connections over them (`make run` starts them; each has its own
dispatcher and reply queue, and one dying leaves the others serving).
"""

from __future__ import annotations

import logging
import signal
import socket
import sys

from infra.process import settings_and_logging

log = logging.getLogger("web_tier")


LOOP_TICK_S = 0.2  # how often waitress's loop looks at the stop flag (a signal also wakes its poll)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop below checks it between passes. Raising from the handler instead
    lost the signal whenever it landed while waitress was handling a channel: waitress logs any exception
    there as "uncaptured" and closes that channel, and the process kept serving until SIGKILL."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum, _frame) -> None:
        self.signal = signal.Signals(signum).name


def listen_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket; ``reuse_port`` lets sibling processes bind the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def main() -> int:
    settings = settings_and_logging()
    from waitress import create_server

    from web_tier import create_app, get_state

    # Hand the GIL to a woken request thread quickly (default 5 ms): it is on every answer's path.
    sys.setswitchinterval(0.0005)
    app = create_app(settings)
    state = get_state(app)
    try:
        sock = listen_socket(settings.web_host, settings.web_port, reuse_port=settings.web_processes > 1)
        server = create_server(
            app, sockets=[sock], threads=settings.web_threads,
            # Waitress buffers whole bodies before the app runs: refuse oversize ones from the headers.
            max_request_body_size=state.max_body_bytes,
            # Every waiting POST / holds a connection; waitress's default limit is 100.
            connection_limit=max(1000, settings.web_threads * 4),
            asyncore_use_poll=True, ident="imgrec",
        )
    except OSError as err:
        log.error("cannot listen on %s:%s: %s", settings.web_host, settings.web_port, err)
        state.close(dispatcher_timeout=0)
        return 1
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("web tier listening on http://%s:%s/ (%d threads, %s; request queue %s, job table %s)",
             settings.web_host, server.effective_port, settings.web_threads,
             "port shared with sibling processes" if settings.web_processes > 1 else "sole process on the port",
             settings.req_queue, settings.jobs_table)
    try:
        while stop.signal is None:
            server.asyncore.loop(timeout=LOOP_TICK_S, map=server._map, use_poll=True, count=1)
        log.info("%s received, stopping", stop.signal)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        state.close()
        log.info("web tier stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
