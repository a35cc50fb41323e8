"""`python -m infra redrive`: move dead-lettered requests back to the request queue (after an upgrade or a fix).

A request reaches the dead-letter queue when the workers failed on it ``maxReceiveCount``
times, or could not read its schema version (a newer web tier during a rolling upgrade).
Its job reads ``failed`` with that reason until then; once redriven and answered, the
job (and its batch's counters) read the new result. Each message is sent to the request
queue before it is deleted from the dead-letter queue, so a crash in between repeats it
(the workers' writes are idempotent) and never loses it. Messages the controller is
looking at (hidden for up to ``controller.reaper.DLQ_LOOK_S``) are waited for, with a
progress line, up to ``wait_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.observe import queue_depth, queue_url

log = logging.getLogger(__name__)

REDRIVE_LOOK_S = 30  # a message being moved is hidden this long, so a crash leaves it to the next run
DEFAULT_WAIT_S = 45.0  # longer than the reaper's look (30 s): every hidden message comes back within it


@dataclass
class Redriven:
    moved: int = 0
    failed: int = 0  # sends refused (left in the dead-letter queue)
    left_in_flight: int = 0  # still hidden when the wait ran out: run it again


def redrive(settings: Settings, sqs, *, wait_s: float = DEFAULT_WAIT_S, say: Callable[[str], None] = print,
            clock=time.monotonic) -> Redriven:
    dlq_url, req_url = queue_url(sqs, settings.dlq), queue_url(sqs, settings.req_queue)
    out = Redriven()
    deadline = clock() + wait_s
    next_line = clock()
    while True:
        msgs = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   VisibilityTimeout=REDRIVE_LOOK_S, MessageAttributeNames=["All"]).get("Messages", [])
        if msgs:
            _move(sqs, req_url, dlq_url, msgs, out)
            continue
        depth = queue_depth(sqs, dlq_url)
        if depth.visible + depth.in_flight == 0:
            break
        if clock() >= deadline:
            out.left_in_flight = depth.in_flight
            break
        if clock() >= next_line:
            say(f"redrive: {out.moved} moved; {depth.in_flight} dead-lettered requests are being looked at "
                f"(hidden up to {REDRIVE_LOOK_S} s), waiting up to {max(0.0, deadline - clock()):.0f} s more")
            next_line = clock() + 5
        time.sleep(0.5)
    return out


def _move(sqs, req_url: str, dlq_url: str, msgs: list[dict], out: Redriven) -> None:
    entries = [{"Id": str(n), "MessageBody": m["Body"],
                **({"MessageAttributes": m["MessageAttributes"]} if m.get("MessageAttributes") else {})}
               for n, m in enumerate(msgs)]
    try:
        resp = sqs.send_message_batch(QueueUrl=req_url, Entries=entries)
    except ClientError:
        log.error("send_message_batch of %d dead-lettered requests to the request queue failed", len(entries))
        raise
    sent = [msgs[int(ok["Id"])] for ok in resp.get("Successful", [])]
    for failed in resp.get("Failed", []):
        out.failed += 1
        log.error("dead-lettered message %s not moved: %s", msgs[int(failed["Id"])]["MessageId"],
                  failed.get("Message") or failed.get("Code"))
    if sent:
        sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                                                            for n, m in enumerate(sent)])
    out.moved += len(sent)


def summary(result: Redriven, settings: Settings) -> str:
    line = f"redrive: {result.moved} requests moved from {settings.dlq} back to {settings.req_queue}"
    if result.failed:
        line += f"; {result.failed} could not be sent (still in {settings.dlq})"
    if result.left_in_flight:
        line += f"; {result.left_in_flight} were still hidden when the wait ran out: run it again"
    return line
