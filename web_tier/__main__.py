"""`python -m web_tier`: serve the web tier with waitress until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import sys

from infra.process import settings_and_logging

log = logging.getLogger("web_tier")


class _Stop(Exception):
    """Raised in the main thread by the signal handler to leave waitress's loop."""


def _raise_stop(signum, _frame):
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    settings = settings_and_logging()
    from waitress import create_server

    from web_tier import create_app, get_state

    # Hand the GIL to a woken request thread quickly (default 5 ms): it is on every answer's path.
    sys.setswitchinterval(0.0005)
    app = create_app(settings)
    state = get_state(app)
    try:
        server = create_server(
            app, host=settings.web_host, port=settings.web_port, threads=settings.web_threads,
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
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("web tier listening on http://%s:%s/ (%d threads, queues %s -> %s)", settings.web_host,
             server.effective_port, settings.web_threads, settings.req_queue, settings.resp_queue)
    try:
        server.run()
    except _Stop as why:
        log.info("%s received, stopping", why)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        state.close()
        log.info("web tier stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
