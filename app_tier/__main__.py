"""``python -m app_tier``: load the configured model and run one queue worker until stopped.

Exit codes: 0 graceful stop, 1 a stage thread died, 2 queues missing, 3 model
unavailable (missing, corrupt or mismatched artifact), 128+signal after a second
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.request

from app_tier.classifier import ModelUnavailable
from app_tier.runtime import load_worker_classifier
from app_tier.worker import run_worker
from infra.config import Settings
from infra.process import settings_and_logging

log = logging.getLogger("app_tier")

IMDS = "http://169.254.169.254"
EXIT_NO_MODEL = 3


def imds_instance_id(endpoint: str = IMDS, timeout: float = 1.0) -> str | None:
    """This EC2 instance's id through IMDSv2 (token first), or None off EC2."""
    base = f"{endpoint.rstrip('/')}/latest"
    try:
        token_req = urllib.request.Request(f"{base}/api/token", method="PUT",
                                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with urllib.request.urlopen(token_req, timeout=timeout) as resp:
            token = resp.read().decode()
        id_req = urllib.request.Request(f"{base}/meta-data/instance-id",
                                        headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(id_req, timeout=timeout) as resp:
            return resp.read().decode().strip() or None
    except OSError:
        return None


def resolve_instance_id(settings: Settings) -> str:
    if settings.instance_id:
        return settings.instance_id
    if settings.endpoint_url is None or settings.imds_endpoint:  # on EC2, or a local instance's metadata
        found = imds_instance_id(settings.imds_endpoint or IMDS)
        if found:
            return found
        log.warning("instance metadata not reachable; using a local instance id")
    return f"local-{os.getpid()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app_tier", description=__doc__.splitlines()[0])
    parser.add_argument("--max-messages", type=int, default=None, help="stop after receiving this many messages")
    parser.add_argument("--until-empty", action="store_true", help="stop when a receive finds the queue empty")
    parser.add_argument("--model", default=None, help="override IMGREC_MODEL")
    args = parser.parse_args(argv)
    settings = settings_and_logging()
    instance_id = resolve_instance_id(settings)
    try:
        classifier = load_worker_classifier(settings, args.model)
    except ModelUnavailable as err:
        log.error("worker %s cannot load its model: %s", instance_id, err)
        return EXIT_NO_MODEL
    return run_worker(settings, classifier, instance_id, max_messages=args.max_messages, until_empty=args.until_empty)


if __name__ == "__main__":
    sys.exit(main())
