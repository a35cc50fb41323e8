"""``python -m workload``: the course generators' flags, plus open-loop arrivals and a monitor.

Exit codes: 0 every request succeeded, 1 some failed, 2 bad input, 130 interrupted.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from workload.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MONITOR_INTERVAL_S,
    DEFAULT_MONITOR_PNG,
    DEFAULT_REST_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    WorkloadConfig,
    WorkloadError,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        print(f"workload: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m workload", description="Send images to an imgrec (or course-format) endpoint "
                "and report correctness, latency and, with --monitor, how the fleet scaled.")
    p.add_argument("--num_request", type=_positive_int, help="requests to send (default: every image once)")
    p.add_argument("--url", required=True, help="web tier URL, e.g. http://127.0.0.1:8000 (POST goes to its path or /)")
    p.add_argument("--image_folder", required=True, help="folder of images to send (sorted by name)")
    p.add_argument("--prediction_file", help="CSV of image name -> expected label (course format or labels.csv)")
    p.add_argument("--concurrency", type=_positive_int, default=DEFAULT_CONCURRENCY,
                   help=f"sender threads (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--rate", type=_positive_float, help="open loop: Poisson arrivals at this many requests/s "
                   "(default: send everything at once)")
    p.add_argument("--repeat", action="store_true", help="cycle through the folder to reach --num_request")
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds to wait for one answer (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--csv", metavar="PATH", help="write one row per request here")
    p.add_argument("--monitor", nargs="?", const=DEFAULT_MONITOR_PNG, metavar="PNG",
                   help="sample queues and instances every second (AWS_ENDPOINT_URL / IMGREC_* settings) until "
                   f"the system is at rest, and draw a timeline (default {DEFAULT_MONITOR_PNG})")
    p.add_argument("--monitor_interval", type=_positive_float, default=DEFAULT_MONITOR_INTERVAL_S,
                   help=argparse.SUPPRESS)
    p.add_argument("--rest_timeout", type=_positive_float, default=DEFAULT_REST_TIMEOUT_S,
                   help=f"--monitor: stop watching this long after the load (default {DEFAULT_REST_TIMEOUT_S:g} s)")
    p.add_argument("--seed", type=int, help="seed for the Poisson arrivals (reproducible runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> WorkloadConfig:
    return WorkloadConfig(
        url=args.url, image_folder=args.image_folder, num_request=args.num_request,
        prediction_file=args.prediction_file, concurrency=args.concurrency, rate=args.rate, repeat=args.repeat,
        timeout_s=args.timeout, csv_path=args.csv, monitor=args.monitor is not None, monitor_png=args.monitor,
        monitor_interval_s=args.monitor_interval, rest_timeout_s=args.rest_timeout, seed=args.seed,
        progress=not args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="workload: %(levelname)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    from workload.report import summary_text
    from workload.runner import run_workload

    try:
        result = run_workload(config_from_args(args))
    except WorkloadError as err:
        print(f"workload: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("workload: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary_text(result), flush=True)
    for what, path in (("per-request CSV", result.csv_path), ("timeline", result.png_path)):
        if path is not None:
            print(f"workload: {what} written to {path}", file=sys.stderr)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.failed == 0 else EXIT_FAILED
