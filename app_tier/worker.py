"""The queue worker: request queue -> S3 input -> model -> S3 output + job store + reply queue -> delete.

Three stages overlap so the model never waits on the network: a prefetch thread
receives a batch and fetches, decodes and preprocesses it; the main thread runs
inference; a post thread writes outputs and results and deletes the requests. At
most one batch waits between stages, so a worker holds at most about three batches.

Nothing is lost: a request message is deleted only after its output object and
result are written, so a crash repeats work (same key, same value) and never drops
it. The result goes to the job store first, where any web process finds it (no result
depends on a reply queue that may be being deleted: AWS still accepts sends to a
deleted queue for up to 60 s and then drops them), then to the reply queue the
request names, which only wakes its waiting request; a reply queue that no longer
exists gets the response queue. Bad input (not an image, missing object) gets an
error result and is deleted at once; an unknown failure hands the message back after
a backoff that grows with its receive count (``retry_visibility_s``) and, after
``maxReceiveCount`` receives, the redrive policy moves it to the dead-letter queue. So
does a request of a schema version this worker does not read (a newer web tier during
a rolling upgrade): left for redelivery, not dropped; on its last receive it is logged
once with its id and its job marked failed, and ``python -m infra redrive`` brings it
back once the workers are upgraded.

If any stage thread (or the visibility heartbeat) dies, the worker releases what it
holds and exits non-zero, so systemd's ``Restart=on-failure`` (on a local instance, its
init's stand-in for it) replaces it. Signal handlers only set flags; the main thread acts on them.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from app_tier.answers import Answers
from app_tier.classifier import Classifier, Prediction
from app_tier.fetch import Verdict, fetch_image
from app_tier.metrics import Metrics
from app_tier.visibility import HeldMessages
from infra.clients import Clients
from infra.config import Settings
from infra.jobstore import JobStore
from infra.messages import BadMessage, BadName, ImageRequest, ImageResult, UnknownVersion, check_reply_to, output_key
from infra.metrics import Metric
from infra.observe import queue_url

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NO_QUEUE = 2
RECEIVE_BACKOFF_MAX_S = 20.0
RECEIVE_BACKOFF_MIN_S = 0.5
ABORT_RECEIVE_WAIT_S = 2.0
EXIT_STAGE_DIED = 1
STAGE_JOIN_S = 5.0  # after a stage died, how long to wait for the others before exiting anyway
# A retryable failure comes back after 2, 4, 8 ... s (by receive count), at most this long
# and never later than the visibility timeout would have let it.
RETRY_BASE_S = 2
RETRY_MAX_S = 120
# Batches a worker holds before inference finishes with them: the one being inferred and one
# prepared behind it. More would hide latency no better and hoard messages that newly
# launched instances could be working on.
PIPELINE_BATCHES = 2


_M_ARENA_MAX = -8  # glibc mallopt parameter (malloc.h)
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Cap glibc's per-thread malloc arenas: ten fetch threads would otherwise each keep freed image buffers.

    Returns False where this is not glibc.
    """
    try:
        return ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1
    except (OSError, AttributeError):
        return False


class ItemState(StrEnum):
    READY = "ready"  # decoded and preprocessed, waiting for inference
    DONE = "done"  # classified: write output, send result, delete
    ERROR = "error"  # bad input: send error result, delete
    DROP = "drop"  # not one of our messages: delete without a result
    RETRY = "retry"  # unknown failure: leave it, it comes back
    GIVE_UP = "give_up"  # unknown failure on the last allowed receive: error result, leave it for the DLQ
    NEWER = "newer"  # a schema version we do not read: leave it (an upgraded worker may), then the DLQ


LEFT_FOR_REDELIVERY = frozenset({ItemState.RETRY, ItemState.GIVE_UP, ItemState.NEWER})  # not deleted: they come back


@dataclass
class Item:
    message_id: str
    receipt: str
    receive_count: int
    request: ImageRequest | None = None
    state: ItemState = ItemState.READY
    reason: str | None = None
    tensor: Any = None  # one preprocessed image, in the classifier's runtime's array type
    prediction: Prediction | None = None


@dataclass
class Batch:
    items: list[Item]
    fetch_ms: float = 0.0
    infer_ms: float = 0.0
    infer_cpu_ms: float = 0.0  # the inference thread's own CPU time: infer_ms far above it means contention
    write_ms: float = 0.0
    results: dict[str, ImageResult] = field(default_factory=dict)  # message id -> result

    @property
    def short_ids(self) -> str:
        return ",".join(i.message_id[:8] for i in self.items)


def retry_visibility_s(receive_count: int, visibility_timeout_s: int) -> int:
    """Seconds until a retryable message is visible again: doubling with its receive count, capped (pure)."""
    exponent = max(0, min(receive_count, 30) - 1)
    return int(min(RETRY_BASE_S * 2 ** exponent, RETRY_MAX_S, visibility_timeout_s))


def after_failure(receive_count: int, max_receive_count: int) -> ItemState:
    """An unknown failure retries, except on the last receive the redrive policy allows (pure)."""
    return ItemState.GIVE_UP if receive_count >= max_receive_count else ItemState.RETRY


def result_for(item: Item, instance_id: str, infer_ms: float | None, now: float) -> ImageResult | None:
    """The response-queue message for a finished item, or None when it gets none (pure)."""
    req = item.request
    if req is None or item.state not in (ItemState.DONE, ItemState.ERROR, ItemState.GIVE_UP):
        return None
    if item.state is ItemState.DONE:
        return ImageResult(req.request_id, req.name, label=item.prediction.label, score=item.prediction.score,
                           worker=instance_id, sent_at=req.sent_at, done_at=now, infer_ms=infer_ms,
                           receives=item.receive_count, batch_id=req.batch_id)
    return ImageResult(req.request_id, req.name, error=item.reason or "failed", worker=instance_id,
                       sent_at=req.sent_at, done_at=now, receives=item.receive_count, batch_id=req.batch_id)


class Worker:
    """One app-tier instance's worker. Build it in the process that runs it (never across a fork)."""

    def __init__(self, settings: Settings, classifier: Classifier, *, instance_id: str,
                 clients: Clients | None = None, max_messages: int | None = None, until_empty: bool = False):
        self.settings = settings
        self.classifier = classifier
        self.instance_id = instance_id
        self.clients = clients or Clients(settings)
        self.max_messages = max_messages
        self.until_empty = until_empty
        self._stopping = threading.Event()
        self._signals: list[int] = []  # appended by the signal handler, acted on by the main thread
        self._signals_seen = 0
        self._stage_died: str | None = None
        self._not_receiving = threading.Event()
        self._not_receiving.set()
        self._ready: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._done: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._slots = threading.Semaphore(PIPELINE_BATCHES)
        self._backoff = RECEIVE_BACKOFF_MIN_S  # after a failed receive; doubles up to the max
        self._received = 0
        self._answered = 0
        self._first_at: float | None = None
        self._last_at: float | None = None
        self.held: HeldMessages | None = None
        self.metrics: Metrics | None = None
        self.store = JobStore(self.clients.dynamodb, settings.jobs_table)
        self._req_url = self._resp_url = ""
        # JPEG decode can skip DCT scales while the picture stays twice the model's input.
        self._min_side = 2 * classifier.input_size

    # ------------------------------------------------------------ control
    def request_stop(self) -> None:
        """First stage: receive nothing more; finish what is held, then ``run`` returns 0."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: finishing %d held messages", self.instance_id,
                     len(self.held) if self.held else 0)
        self._stopping.set()

    def on_signal(self, signum: int) -> None:
        """Signal-handler side: only record it (a list append takes no lock that the interrupted code may
        hold). The main thread's ``_check_signals``, at least every half second, drains or aborts."""
        self._signals.append(signum)

    def _check_signals(self) -> None:
        while self._signals_seen < len(self._signals):
            signum = self._signals[self._signals_seen]
            self._signals_seen += 1
            if self._signals_seen == 1:
                log.info("worker %s got %s: draining", self.instance_id, signal.Signals(signum).name)
                self.request_stop()
            else:
                self.abort(128 + signum)

    def abort(self, code: int = 1) -> None:
        """Second stage: hand every held message back (visibility 0) and exit the process now (main thread)."""
        # A receive in progress may be returning messages right now: let it register them
        # (a non-empty queue answers at once; an empty one returns nothing worth waiting for).
        self._not_receiving.wait(ABORT_RECEIVE_WAIT_S)
        released = self.held.release_all() if self.held else 0
        log.warning("worker %s exiting now; released %d messages", self.instance_id, released)
        logging.shutdown()
        os._exit(code)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> int:
        """Work until stopped; returns the process exit code."""
        limit_malloc_arenas()
        sqs = self.clients.sqs
        try:
            self._req_url = queue_url(sqs, self.settings.req_queue)
            self._resp_url = queue_url(sqs, self.settings.resp_queue)
        except (ClientError, BotoCoreError) as err:
            log.error("worker %s cannot find its queues (%s); is the stack provisioned?", self.instance_id, err)
            return EXIT_NO_QUEUE
        self.classifier.open(self.settings.torch_threads)  # after any fork: ORT sessions must not cross one
        self.held = HeldMessages(sqs, self._req_url, self.settings.visibility_timeout_s,
                                 instance_id=self.instance_id, max_hold_s=self.settings.max_hold_s).start()
        self.metrics = Metrics(self.clients.cloudwatch, self.settings.metrics_namespace, self.settings.prefix,
                               self.instance_id).start()
        n = self.settings.worker_batch_size
        self._fetch_pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fetch")
        self._write_pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="write")
        self.answers = Answers(sqs, self.store, self._resp_url, self.settings.resp_queue, self.instance_id,
                               self._write_pool)
        log.info("worker %s ready: model %s, runtime %s on %s, queue %s, batch %d, %d threads", self.instance_id,
                 self.classifier.name, self.classifier.runtime, self.classifier.device, self.settings.req_queue, n,
                 self.settings.torch_threads)
        prefetch, post = (threading.Thread(target=self._stage, args=(name, fn), name=name, daemon=True)
                          for name, fn in (("prefetch", self._prefetch_loop), ("post", self._post_loop)))
        try:
            prefetch.start()
            post.start()
            self._infer_loop(post)
            for thread in (prefetch, post):
                self._join(thread)
        finally:
            self._stopping.set()
            self.held.release_all()  # only non-empty if a stage died unexpectedly
            self.held.stop()
            self.metrics.close()
            self._fetch_pool.shutdown(wait=False, cancel_futures=True)
            self._write_pool.shutdown(wait=False, cancel_futures=True)
        self._log_summary()
        if self._stage_died:
            log.error("worker %s exiting with %d: its %s stage died", self.instance_id, EXIT_STAGE_DIED,
                      self._stage_died)
            return EXIT_STAGE_DIED
        return EXIT_OK

    def _stage(self, name: str, loop) -> None:
        """Run a stage thread; its death (an unexpected exception) stops the worker with a non-zero code."""
        try:
            loop()
        except BaseException:
            log.exception("worker %s: %s stage died; releasing held messages and exiting", self.instance_id, name)
            self._stage_died = self._stage_died or name
            self._stopping.set()

    def _healthy(self) -> bool:
        """Main thread: act on signals; False once a stage or the heartbeat has died."""
        self._check_signals()
        if self._stage_died is None and self.held is not None and not self.held.alive:
            log.error("worker %s: visibility heartbeat died; exiting", self.instance_id)
            self._stage_died = "visibility"
            self._stopping.set()
        return self._stage_died is None

    def _put(self, q: queue.Queue, item, consumer: threading.Thread) -> bool:
        """Hand ``item`` to the next stage; False if that stage has ended (nobody would take it)."""
        while consumer.is_alive():
            self._check_signals()
            try:
                q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _join(self, thread: threading.Thread) -> None:
        deadline = None
        while thread.is_alive():
            thread.join(0.5)
            if not self._healthy():
                deadline = deadline or time.monotonic() + STAGE_JOIN_S
                if time.monotonic() > deadline:
                    log.error("worker %s: %s stage did not end in %.0f s; exiting without it", self.instance_id,
                              thread.name, STAGE_JOIN_S)
                    return

    # ------------------------------------------------------------ stage 1: receive, fetch, decode
    def _prefetch_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                if not self._slots.acquire(timeout=0.5):
                    continue
                if not self._receive_one_batch():
                    self._slots.release()
        finally:
            self._hand_on(None)

    def _receive_one_batch(self) -> bool:
        """Receive, fetch and decode one batch and hand it to inference; False if none was handed on."""
        limit = self.settings.worker_batch_size
        if self.max_messages is not None:
            limit = min(limit, self.max_messages - self._received)
            if limit <= 0:
                self.request_stop()
                return False
        try:
            messages = self._receive(limit)
            self._backoff = RECEIVE_BACKOFF_MIN_S
        except (ClientError, BotoCoreError) as err:
            log.error("receive from %s failed (instance %s): %s; retrying in %.1f s",
                      self.settings.req_queue, self.instance_id, err, self._backoff)
            self._stopping.wait(self._backoff)
            self._backoff = min(self._backoff * 2, RECEIVE_BACKOFF_MAX_S)
            return False
        if not messages:
            if self.until_empty:
                log.info("worker %s: request queue is empty", self.instance_id)
                self.request_stop()
            return False
        if self._stopping.is_set():
            # The stop came during the long poll. Finish these rather than hand them back: each
            # hand-back costs a receive, and during a scale-in many draining workers in long polls
            # passed a new message round until maxReceiveCount sent it, never tried, to the DLQ.
            log.info("worker %s: %d messages arrived while stopping; finishing them", self.instance_id,
                     len(messages))
        self._received += len(messages)
        if self._first_at is None:
            self._first_at = time.monotonic()
        try:
            batch = self._prepare(messages)
        except Exception:
            log.exception("preparing batch failed (instance %s); its messages will come back", self.instance_id)
            self.held.retry_later({m["ReceiptHandle"]: retry_visibility_s(_receive_count(m),
                                                                          self.settings.visibility_timeout_s)
                                   for m in messages})
            return False
        return self._hand_on(batch)

    def _hand_on(self, batch: Batch | None) -> bool:
        """Prefetch -> inference; gives up if the worker is exiting because a stage died."""
        while not self._stage_died:
            try:
                self._ready.put(batch, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _receive(self, limit: int) -> list[dict]:
        self._not_receiving.clear()
        try:
            resp = self.clients.sqs.receive_message(
                QueueUrl=self._req_url, MaxNumberOfMessages=limit, WaitTimeSeconds=self.settings.receive_wait_s,
                AttributeNames=["ApproximateReceiveCount"], MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            messages = resp.get("Messages", [])
            now = time.monotonic()
            for m in messages:
                self.held.add(m["ReceiptHandle"], m["MessageId"], now)
            return messages
        finally:
            self._not_receiving.set()

    def _prepare(self, messages: list[dict]) -> Batch:
        started = time.monotonic()
        items = []
        for m in messages:
            item = Item(m["MessageId"], m["ReceiptHandle"], _receive_count(m))
            try:
                item.request = ImageRequest.from_json(m["Body"])
                if item.request.reply_to is not None:  # answers go only to this stack's reply queues
                    refused = check_reply_to(item.request.reply_to, self._req_url, self.settings.prefix,
                                             self.settings.resp_queue)
                    if refused:
                        raise BadMessage(f"request {item.request.request_id}: {refused}")
                output_key(item.request.name)
            except UnknownVersion as err:
                item.state, item.reason = ItemState.NEWER, str(err)
                self.answers.newer_version(err, item.message_id, item.receive_count, self.settings.max_receive_count)
            except BadMessage as err:
                log.warning("dropping message %s: %s", item.message_id, err)
                item.state, item.reason = ItemState.DROP, str(err)
            except BadName as err:
                item.state, item.reason = ItemState.ERROR, f"bad file name: {err}"
            items.append(item)
        todo = [i for i in items if i.state is ItemState.READY]
        for _ in self._fetch_pool.map(self._fetch_one, todo):
            pass
        return Batch(items, fetch_ms=(time.monotonic() - started) * 1000)

    def _fetch_one(self, item: Item) -> None:
        req = item.request
        try:
            got = fetch_image(self.clients.s3, self.settings.in_bucket, req,
                              max_bytes=self.settings.max_upload_bytes, min_side=self._min_side)
            if got.verdict is Verdict.OK:
                item.tensor = self.classifier.preprocess([got.image])[0]
                return
        except Exception as err:  # noqa: BLE001 - unknown failure: retry, then DLQ
            log.exception("fetching request %s (message %s) failed", req.request_id, item.message_id)
            item.state, item.reason = after_failure(item.receive_count, self.settings.max_receive_count), repr(err)
            return
        if got.verdict is Verdict.BAD_INPUT:
            item.state, item.reason = ItemState.ERROR, got.reason
            log.info("request %s (%s) is bad input: %s", req.request_id, req.name, got.reason)
        else:
            item.state, item.reason = after_failure(item.receive_count, self.settings.max_receive_count), got.reason

    # ------------------------------------------------------------ stage 2: inference (main thread)
    def _infer_loop(self, post: threading.Thread) -> None:
        """Infer what prefetch hands on until it ends or any stage dies; post still gets what was inferred."""
        try:
            while self._healthy():
                try:
                    batch = self._ready.get(timeout=0.5)
                except queue.Empty:
                    continue
                if batch is None:
                    break
                try:
                    self._infer(batch)
                except Exception as err:  # noqa: BLE001 - e.g. out of memory: retry, then DLQ
                    log.exception("inference failed for batch %s (instance %s)", batch.short_ids, self.instance_id)
                    for item in batch.items:
                        if item.state is ItemState.READY:
                            item.state = after_failure(item.receive_count, self.settings.max_receive_count)
                            item.reason = f"inference failed: {type(err).__name__}"
                finally:
                    self._slots.release()  # the next batch may be received now
                if not self._put(self._done, batch, post):
                    break
        finally:
            self._put(self._done, None, post)

    def _infer(self, batch: Batch) -> None:
        ready = [i for i in batch.items if i.state is ItemState.READY]
        if not ready:
            return
        inputs = self.classifier.stack([i.tensor for i in ready])
        started, cpu_started = time.monotonic(), time.thread_time()
        predictions = self.classifier.infer(inputs)
        batch.infer_ms = (time.monotonic() - started) * 1000
        batch.infer_cpu_ms = (time.thread_time() - cpu_started) * 1000
        for item, pred in zip(ready, predictions, strict=True):
            item.prediction, item.state, item.tensor = pred, ItemState.DONE, None

    # ------------------------------------------------------------ stage 3: write, answer, delete
    def _post_loop(self) -> None:
        while True:
            batch = self._done.get()
            if batch is None:
                break
            try:
                self._post(batch)
            except Exception:
                log.exception("posting batch %s failed (instance %s); its messages will come back",
                              batch.short_ids, self.instance_id)
            finally:
                self._let_go(batch)

    def _let_go(self, batch: Batch) -> None:
        """Stop holding the batch; retryable failures come back after their backoff, not the whole timeout."""
        retry = {i.receipt: retry_visibility_s(i.receive_count, self.settings.visibility_timeout_s)
                 for i in batch.items if i.state in LEFT_FOR_REDELIVERY}
        self.held.discard(i.receipt for i in batch.items if i.receipt not in retry)
        if retry:
            log.info("batch %s: %d messages retry later (%s s; instance %s)", batch.short_ids, len(retry),
                     ",".join(str(s) for s in sorted(set(retry.values()))), self.instance_id)
            self.held.retry_later(retry)

    def _post(self, batch: Batch) -> None:
        started = time.monotonic()
        done = [i for i in batch.items if i.state is ItemState.DONE]
        for item, ok in zip(done, self._write_pool.map(self._put_output, done), strict=True):
            if not ok:
                item.state = after_failure(item.receive_count, self.settings.max_receive_count)
                item.reason = "output write failed"
        n_done = sum(1 for i in batch.items if i.state is ItemState.DONE)
        per_image_ms = batch.infer_ms / n_done if n_done else None
        now = time.time()
        for item in batch.items:
            result = result_for(item, self.instance_id, per_image_ms, now)
            if result is not None:
                batch.results[item.message_id] = result
        give_up = {i.message_id for i in batch.items if i.state is ItemState.GIVE_UP}
        recorded = self.answers.record(batch.results, only_if_queued=give_up)
        replies = {i.message_id: i.request.reply_to for i in batch.items if i.message_id in batch.results}
        sent = self.answers.send({mid: (replies[mid], r) for mid, r in batch.results.items()}, recorded,
                                 batch.short_ids)
        deletable = [i for i in batch.items
                     if i.state is ItemState.DROP or (i.state in (ItemState.DONE, ItemState.ERROR) and i.message_id in sent)]
        self._delete(deletable)
        batch.write_ms = (time.monotonic() - started) * 1000
        self._account(batch, sent)

    def _put_output(self, item: Item) -> bool:
        key = output_key(item.request.name)
        try:
            self.clients.s3.put_object(Bucket=self.settings.out_bucket, Key=key,
                                       Body=item.prediction.label.encode(), ContentType="text/plain")
            return True
        except (ClientError, BotoCoreError) as err:
            log.error("put_object s3://%s/%s for request %s failed: %s", self.settings.out_bucket, key,
                      item.request.request_id, err)
            return False

    def _delete(self, items: list[Item]) -> None:
        for start in range(0, len(items), 10):
            chunk = items[start:start + 10]
            entries = [{"Id": str(n), "ReceiptHandle": i.receipt} for n, i in enumerate(chunk)]
            try:
                resp = self.clients.sqs.delete_message_batch(QueueUrl=self._req_url, Entries=entries)
            except (ClientError, BotoCoreError) as err:
                # Results are out; the messages come back and are answered again, harmlessly.
                log.error("delete_message_batch on %s failed for %s: %s", self.settings.req_queue,
                          ",".join(i.message_id[:8] for i in chunk), err)
                continue
            for failed in resp.get("Failed", []):
                log.error("delete failed for message %s: %s", chunk[int(failed["Id"])].message_id,
                          failed.get("Message") or failed.get("Code"))

    def _account(self, batch: Batch, sent: set[str]) -> None:
        ok = errors = 0
        for mid, result in batch.results.items():
            if mid not in sent:
                continue
            if result.ok:
                ok += 1
            else:
                errors += 1
            if result.sent_at:
                self.metrics.timing(Metric.END_TO_END_MS, max(0.0, (result.done_at - result.sent_at) * 1000))
        self.metrics.count(Metric.IMAGES_PROCESSED, ok)
        self.metrics.count(Metric.IMAGE_ERRORS, errors)
        n_done = sum(1 for i in batch.items if i.state is ItemState.DONE)
        if n_done:
            self.metrics.timing(Metric.INFERENCE_MS, batch.infer_ms / n_done)
        self._answered += ok + errors
        self._last_at = time.monotonic()
        retry = sum(1 for i in batch.items if i.state in LEFT_FOR_REDELIVERY)
        log.info("batch %s size=%d ok=%d errors=%d retry=%d fetch=%.0fms infer=%.0fms (cpu %.0fms) write=%.0fms instance=%s",
                 batch.short_ids, len(batch.items), ok, errors, retry, batch.fetch_ms, batch.infer_ms, batch.infer_cpu_ms,
                 batch.write_ms, self.instance_id)

    def _log_summary(self) -> None:
        busy = (self._last_at - self._first_at) if self._first_at and self._last_at else 0.0
        rate = self._answered / busy if busy > 0 else 0.0
        log.info("worker %s done: answered %d requests in %.2f s (%.1f images/s), %d ok, %d errors",
                 self.instance_id, self._answered, busy, rate, self.metrics.totals[Metric.IMAGES_PROCESSED],
                 self.metrics.totals[Metric.IMAGE_ERRORS])


def _receive_count(message: dict) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))


def install_signal_handlers(worker: Worker) -> None:
    """First SIGTERM/SIGINT drains; a second one releases what is held and exits now.

    The handler only records the signal: the main thread, which checks at least every
    half second, logs, drains or releases and exits (no locks taken inside a handler).
    """

    def handle(signum, _frame):
        worker.on_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)


def run_worker(settings: Settings, classifier: Classifier, instance_id: str, **options) -> int:
    """What a (forked) worker process runs: its own clients, signal handlers, then the loop."""
    worker = Worker(settings, classifier, instance_id=instance_id, **options)
    install_signal_handlers(worker)
    return worker.run()
