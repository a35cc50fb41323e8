"""``run_workload``: the whole run in-process, for the CLI, ``make bench`` and end-to-end tests."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from workload.generator import Progress, Sender, send_all
from workload.inputs import check_reachable, normalize_url, plan_targets, scan_folder
from workload.model import DEFAULT_MONITOR_PNG, RunResult, WorkloadConfig, WorkloadError
from workload.report import write_csv
from workload.truth import load_truth

log = logging.getLogger(__name__)


def validate(config: WorkloadConfig) -> None:
    if config.concurrency < 1:
        raise WorkloadError(f"--concurrency must be at least 1, got {config.concurrency}")
    if config.rate is not None and not config.rate > 0:
        raise WorkloadError(f"--rate must be > 0 requests/s, got {config.rate}")
    if not config.timeout_s > 0:
        raise WorkloadError(f"--timeout must be > 0 s, got {config.timeout_s}")
    if config.monitor and not config.monitor_interval_s > 0:
        raise WorkloadError("monitor interval must be > 0 s")
    for flag, path in (("--csv", config.csv_path), ("--monitor", config.monitor_png)):
        if path is not None:
            _check_writable(flag, Path(path))


def _check_writable(flag: str, path: Path) -> None:
    """Fail before the load, not after it, when an output cannot be written."""
    if path.is_dir():
        raise WorkloadError(f"{flag} {path} is a folder; give a file path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise WorkloadError(f"{flag} {path}: folder {parent} is not writable")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _settings(config: WorkloadConfig):
    if config.settings is not None:
        return config.settings
    from infra.config import LOCAL_ENDPOINT, ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as err:
        raise WorkloadError(f"--monitor: {err}") from None
    # A stack on this machine (`make run`) is watched through its moto server, unless told otherwise.
    if settings.endpoint_url is None and urlsplit(config.url).hostname in LOCAL_HOSTS:
        log.warning("--monitor: AWS_ENDPOINT_URL is unset and --url is local: watching the local stack at %s",
                    LOCAL_ENDPOINT)
        settings = settings.replace(endpoint_url=LOCAL_ENDPOINT)
    return settings


def run_workload(config: WorkloadConfig) -> RunResult:
    """Send the load, watch the system if asked, write the CSV and PNG; bad input raises ``WorkloadError``."""
    validate(config)
    url = normalize_url(config.url)
    images, skipped = scan_folder(config.image_folder)
    truth = load_truth(config.prediction_file) if config.prediction_file is not None else None
    targets = plan_targets(images, config.num_request, config.repeat, truth)
    try:
        payloads = {p: p.read_bytes() for p in {t.path for t in targets}}
    except OSError as err:
        raise WorkloadError(f"cannot read image {err.filename}: {err.strerror}") from None
    check_reachable(url, min(5.0, config.timeout_s))

    progress = Progress()
    monitor = None
    if config.monitor:
        from infra.clients import Clients
        from workload.monitor import Monitor

        settings = _settings(config)
        monitor = Monitor(settings, Clients(settings), progress.snapshot, config.monitor_interval_s)
        monitor.connect()
    t0 = time.monotonic()
    started_at = time.time()
    if monitor is not None:
        monitor.start(t0)
    log.info("sending %s requests to %s (%s)", len(targets), url,
             f"Poisson {config.rate}/s" if config.rate else f"burst, {config.concurrency} threads")
    sender = Sender(url, config.timeout_s, payloads, t0, progress)
    samples = []
    try:
        records, interrupted = send_all(targets, sender, concurrency=min(config.concurrency, len(targets)),
                                        rate=config.rate, seed=config.seed, show_progress=config.progress)
        sent = [r for r in records if r.end_s > r.start_s]
        wall = max((r.end_s for r in sent), default=0.0) - min((r.start_s for r in sent), default=0.0)
        if monitor is not None and not interrupted:
            log.info("waiting for the system to come back to rest (request queue empty, fleet at min)")
            monitor.wait_for_rest(time.monotonic() - t0, config.rest_timeout_s)
    finally:
        if monitor is not None:
            samples = monitor.stop()
    result = RunResult(config, records, wall, started_at, skipped_files=skipped, samples=samples,
                       fleet=monitor.summary() if monitor is not None else None, interrupted=interrupted)
    if config.csv_path is not None:
        result.csv_path = write_csv(records, config.csv_path)
    if monitor is not None or config.monitor_png is not None:
        from workload.plot import plot_timeline

        result.png_path = plot_timeline(result, config.monitor_png or DEFAULT_MONITOR_PNG)
    return result
