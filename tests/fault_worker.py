"""``python -m tests.fault_worker FAULT [app_tier args]``: the real worker with one AWS call made to fail.

The fault is injected at the AWS SDK boundary (a botocore event hook on the worker's
own clients), never inside our code, so the worker's real threads, queues and
heartbeat meet it the way they would meet an S3 outage or a wedged connection:

- ``s3-error``: every GetObject fails with S3 ``InternalError`` (retryable);
- ``s3-hang``: every GetObject blocks forever (a wedged worker);
- ``receive-crash``: the second ReceiveMessage raises ``RuntimeError`` (the prefetch stage dies).
"""

from __future__ import annotations

import itertools
import sys
import threading

from botocore.exceptions import ClientError

from app_tier.__main__ import resolve_instance_id
from app_tier.runtime import load_worker_classifier
from app_tier.worker import Worker, install_signal_handlers
from infra.clients import Clients
from infra.process import settings_and_logging


def main(argv: list[str]) -> int:
    fault, *rest = argv
    settings = settings_and_logging()
    clients = Clients(settings)
    if fault == "s3-error":
        def hook(**_):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "GetObject")
        clients.s3.meta.events.register("before-call.s3.GetObject", hook)
    elif fault == "s3-hang":
        def hook(**_):
            threading.Event().wait()
        clients.s3.meta.events.register("before-call.s3.GetObject", hook)
    elif fault == "receive-crash":
        calls = itertools.count(1)

        def hook(**_):
            if next(calls) >= 2:
                raise RuntimeError("injected: receive crashed")
        clients.sqs.meta.events.register("before-call.sqs.ReceiveMessage", hook)
    else:
        raise SystemExit(f"unknown fault {fault}")
    worker = Worker(settings, load_worker_classifier(settings), instance_id=resolve_instance_id(settings),
                    clients=clients, until_empty="--until-empty" in rest)
    install_signal_handlers(worker)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
