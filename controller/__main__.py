"""`python -m controller`: run the scaling loop until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from infra.process import settings_and_logging

log = logging.getLogger("controller")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    parser.add_argument("--warm-pool", action="store_true",
                        help="stop surplus instances and start stopped ones instead of terminate/run")
    parser.add_argument("--metrics-interval", type=float, default=10.0,
                        help="seconds between CloudWatch publishes when nothing changes (default 10)")
    args = parser.parse_args(argv)
    settings = settings_and_logging()

    from controller.loop import Controller
    from infra.clients import Clients

    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping after this tick", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    controller = Controller(settings, Clients(settings, pool=4), warm_pool=args.warm_pool,
                            metrics_interval_s=args.metrics_interval)
    return controller.run(stop)


if __name__ == "__main__":
    sys.exit(main())
