"""Faults against the running tiers: nothing is lost, nothing stays stuck.

Every case submits its own images (unique names) through ``POST /api/jobs``, breaks
something while they are being worked on, and ends with the same audit: every job
answered with a label, exactly one output object per image, the request queue,
response queue and DLQ empty.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid

import psutil
import pytest
import requests
from botocore.exceptions import ClientError

from infra.clients import Clients
from tests.images import jpeg_bytes
from tests.procs import wait_for
from tests.reliability.faultproxy import Fault
from tests.reliability.stack import VISIBILITY_S, SyncProbe, audit, submit_all
from tests.reliability.tally import TALLY

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]


def make_images(count: int, tag: str) -> tuple[str, dict[str, bytes]]:
    prefix = f"{tag}-{uuid.uuid4().hex[:6]}-"
    return prefix, {f"{prefix}{i:04d}.jpg": jpeg_bytes(i, size=(160, 120)) for i in range(count)}


def finish(stack, prefix: str, submitted, case: str):
    result = audit(stack.url, stack.clients, stack.direct, submitted, prefix)
    TALLY.requests(sent=len(submitted.ids), answered=result.answered, lost=len(result.lost),
                   client_errors=submitted.client_errors)
    TALLY.notes.append(f"{case}: {len(submitted.ids)} images, {result.answered} answered, "
                       f"{len(result.lost)} lost, {len(result.failed)} failed, DLQ {result.dlq}")
    assert result.problems == [], result.problems
    return result


def finish_sync(probe: SyncProbe, case: str, *, outages: list[tuple[float, float]] = ()) -> None:
    """Synchronous clients during a fault: each answered with its own label, none waiting longer than its
    message's visibility timeout plus 10 s (one more visibility timeout for each time a worker died holding
    it), beyond the time AWS was unreachable meanwhile (``outages``, when nothing can answer); a refusal at
    intake (503, or no connection) is not a wait, the client retries it."""
    right = probe.answered
    wrong = [o for o in probe.outcomes if o.status == 200 and o not in right]
    stalled = [o for o in probe.outcomes if o.status in (422, 504)]
    refused = [o for o in probe.outcomes if o.status in (0, 503)]
    bound = VISIBILITY_S + 10
    over = probe.over_bound(bound, VISIBILITY_S, outages)
    redelivered = [o for o in probe.outcomes if o.receives > 1]
    TALLY.requests(sent=len(probe.outcomes), answered=len(right), lost=len(stalled), mismatched=len(wrong),
                   client_errors=len(refused))
    TALLY.sync_waits.append(
        f"{case}: {len(probe.outcomes)} synchronous requests, {len(right)} answered right, longest wait "
        f"{probe.longest_s():.1f} s" + (f" ({probe.longest_s(outages):.1f} s beyond "
                                         f"{sum(b - a for a, b in outages):.0f} s of outages)" if outages else "")
        + f"; {len(redelivered)} received more than once (a worker died holding it, or the outage); over the bound ({bound} s, "
        f"+{VISIBILITY_S} s per redelivery): {len(over)}; {len(refused)} refused at intake")
    assert len(right) >= 2, f"{case}: the synchronous clients got almost nothing through: {probe.outcomes[:5]}"
    assert wrong == [] and stalled == [], (wrong[:3], stalled[:3])
    assert outages or refused == [], refused[:3]
    assert over == [], over[:3]


def healthz(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def waiting_requests(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as resp:
            return int(json.load(resp).get("waiting", 0))
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_sigkill_a_random_worker_every_few_seconds_during_300_images(proc_stack):
    stack = proc_stack
    prefix, images = make_images(300, "kill")
    done = threading.Event()
    killed: list[int] = []
    rng = random.Random(9)

    def killer():
        while not done.wait(3.0):
            workers = stack.workers()
            if workers:
                victim = rng.choice(workers)
                try:
                    victim.kill()
                except Exception:  # noqa: BLE001 - it may have exited on its own
                    continue
                killed.append(victim.pid)
                TALLY.fault(f"SIGKILL worker pid {victim.pid}")

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        submitted = submit_all(stack.url, images)
        finish_at = time.monotonic() + 300
        from tests.reliability.stack import wait_jobs

        wait_jobs(stack.url, list(submitted.ids.values()), timeout_s=finish_at - time.monotonic())
        # Synchronous clients while the kills go on, the burst done: a wait is then the work itself, plus a
        # visibility timeout each time a worker dies holding the request (not the queue behind 300 images).
        with SyncProbe(stack.url, f"sync-{prefix}") as probe:
            wait_for(lambda: len(probe.outcomes) >= 30, 120, what="30 synchronous requests during the kills")
    finally:
        done.set()
        thread.join(5)
    finish_sync(probe, "SIGKILL worker every 3 s")
    assert len(killed) >= 5, f"only {len(killed)} workers were killed: the run was too short to test anything"
    finish(stack, prefix, submitted, f"SIGKILL worker x{len(killed)}")
    consoles = stack.consoles()
    seen = consoles.count("imgrec-worker.service: Main process exited, code=killed, status=9/KILL")
    pending = consoles.count("imgrec-worker.service: Failed with result 'signal'; restart in")
    done_or_cancelled = (consoles.count("imgrec-worker.service: Scheduled restart job")
                         + consoles.count("imgrec-worker.service: pending restart cancelled by stop"))
    TALLY.notes.append(f"worker kills seen by the instances' inits: {seen}; restarts scheduled {pending} "
                       f"(the rest hit workers already draining for a scale-in)")
    assert seen >= len(killed) - 1, "the instances' inits did not see the kills"
    assert pending >= len(killed) // 2 and done_or_cancelled >= pending - 1, \
        "the instances' inits did not restart the killed workers (Restart=on-failure)"
    assert stack.procs["runner"].poll() is None


def test_controller_sigkill_and_restart_mid_run(proc_stack):
    stack = proc_stack
    prefix, images = make_images(120, "ctl")
    first = dict(list(images.items())[:60])
    rest = dict(list(images.items())[60:])
    submitted = submit_all(stack.url, first)
    pid = stack.kill("controller")
    TALLY.fault(f"SIGKILL controller pid {pid}")
    # The workers pause while no controller runs, so the new one meets a backlog (the lean worker would
    # otherwise drain it before the new controller's lease wait is over) and must act on it.
    paused: list[psutil.Process] = []

    def pause_new_workers() -> None:
        """Also a worker on an instance the dead controller launched just before it died, booting now."""
        for w in stack.workers():
            if w.pid not in {p.pid for p in paused}:
                with contextlib.suppress(psutil.NoSuchProcess):
                    w.suspend()
                    paused.append(w)

    holding = threading.Event()

    def keep_paused() -> None:  # a worker restarting (Restart=on-failure) or booting comes back with a new pid
        while not holding.wait(0.2):
            pause_new_workers()

    pause_new_workers()
    holder = threading.Thread(target=keep_paused, daemon=True)
    holder.start()
    try:
        more = submit_all(stack.url, rest)  # the backlog grows while no controller runs
        before_restart = len(stack.log("controller"))  # both controllers append to one log
        stack.start_tier("controller")
        wants_max = f"desired={stack.direct.max_instances} "
        try:
            wait_for(lambda: wants_max in stack.log("controller")[before_restart:], 60,
                     what="the restarted controller sizing the fleet for the backlog")
        except AssertionError as err:
            raise AssertionError(f"{err}\ncontroller log since the restart:\n"
                                 f"{stack.log('controller')[before_restart:][-3000:]}") from None
    finally:
        holding.set()
        holder.join(5)
        for w in paused:
            with contextlib.suppress(psutil.NoSuchProcess):
                w.resume()
    # Synchronous clients while the new controller works off the backlog (not while the test holds the workers).
    with SyncProbe(stack.url, f"sync-{prefix}") as probe:
        wait_for(lambda: len(probe.answered) >= 4, 90, what="synchronous clients answered")
    submitted.ids.update(more.ids)
    finish_sync(probe, "controller SIGKILL + restart")
    finish(stack, prefix, submitted, "controller SIGKILL + restart")
    # The new controller took over: it scaled with the backlog and brings the fleet back to min.
    assert f"controller for {stack.direct.prefix}:" in stack.log("controller")[before_restart:], (
        "the restarted controller never started")
    wait_for(lambda: stack.running_instances() == stack.direct.min_instances, 60, what="fleet back at min")
    assert re.search(r"action=(launch|remove)", stack.log("controller")[before_restart:]), (
        "the restarted controller never scaled")
    assert stack.procs["controller"].poll() is None


def test_web_tier_restart_mid_run(proc_stack):
    stack = proc_stack
    prefix, images = make_images(120, "web")
    names = list(images)
    submitted = submit_all(stack.url, {n: images[n] for n in names[:60]})
    # Synchronous course-API clients waiting at the moment of the restart: they may see an error,
    # but their images must still be answered (their output objects appear).
    waiting = {f"{prefix}sync-{i}.jpg": jpeg_bytes(1000 + i, size=(160, 120)) for i in range(5)}
    outcomes: dict[str, str] = {}

    def post_one(name: str) -> None:
        try:
            resp = requests.post(stack.url, files={"myfile": (name, waiting[name], "image/jpeg")}, timeout=120)
            outcomes[name] = f"{resp.status_code} {resp.text[:60]}"
        except requests.RequestException as err:
            outcomes[name] = f"error {type(err).__name__}"

    threads = [threading.Thread(target=post_one, args=(n,)) for n in waiting]
    for t in threads:
        t.start()
    # Restart once all five wait (the web tier counts its waiters; each registers just before it
    # stores and enqueues its image, which takes a few ms more).
    wait_for(lambda: waiting_requests(stack.url) >= len(waiting), 30, what="the synchronous clients to wait")
    wait_for(lambda: stack.log("web").count(f"enqueued: key={prefix}sync-") >= len(waiting), 30,
             what="the synchronous clients' images to be enqueued")
    away = stack.restart_web()
    TALLY.fault(f"web tier restart for {away:.1f} s")
    more = submit_all(stack.url, {n: images[n] for n in names[60:]})
    for t in threads:
        t.join(130)
    submitted.ids.update(more.ids)
    errors = sum(1 for o in outcomes.values() if not o.startswith("200"))
    result = finish(stack, prefix + "0", submitted, "web tier restart")  # the JSON-API images
    assert result.answered == 120
    TALLY.requests(sent=len(waiting), answered=len(waiting), lost=0, client_errors=errors)
    # Waiting clients' images: answered all the same (output object per image).
    from tests.reliability.stack import output_keys

    keys = set(output_keys(stack.clients, stack.direct, f"{prefix}sync-"))
    assert keys == {n[:-4] for n in waiting}, (outcomes, keys)


def test_s3_and_sqs_outage_through_the_proxy_then_recovery(proc_stack):
    stack = proc_stack
    prefix, images = make_images(120, "outage")
    probe = SyncProbe(stack.url, f"sync-{prefix}").__enter__()
    submitted = submit_all(stack.url, dict(list(images.items())[:60]))
    health_during = []
    outages: list[tuple[float, float]] = []  # when AWS was unreachable (monotonic): nothing can answer then
    for fault in (Fault.HTTP503, Fault.REFUSE, Fault.DROP):
        began = time.monotonic()
        stack.proxy.inject(fault, 6.0)
        TALLY.fault(f"{fault.value} for 6 s")
        health_during.append(healthz(stack.url))
        wait_for(lambda: not stack.proxy.faulty, 15, what="fault to end")
        outages.append((began, time.monotonic()))
        wait_for(lambda: healthz(stack.url) == 200, 30, what="/healthz back to 200 after the fault")
    # Submissions during a fault are refused (503) and retried by the client until accepted.
    outages.append((time.monotonic(), time.monotonic() + 4.0))
    stack.proxy.inject(Fault.HTTP503, 4.0)
    TALLY.fault("http503 for 4 s (during submission)")
    more = submit_all(stack.url, dict(list(images.items())[60:]))
    submitted.ids.update(more.ids)
    submitted.client_errors += more.client_errors
    # A black hole is only seen once the health check's read timeout passes (see docs/SECURITY.md).
    TALLY.notes.append(f"/healthz during http503, refuse, drop: {health_during}")
    assert health_during[:2] == [503, 503], f"/healthz during the faults: {health_during}"
    wait_for(lambda: healthz(stack.url) == 200, 60, what="/healthz back to 200")
    probe.__exit__(None, None, None)
    finish_sync(probe, "S3/SQS outage", outages=outages)
    finish(stack, prefix, submitted, "S3/SQS outage (503, refused, dropped)")
    assert more.client_errors >= 1, "the submission-time outage was not seen by the client"
    for name in ("web", "controller", "runner"):
        assert stack.procs[name].poll() is None, f"{name} died during the outage"


def test_every_fault_case_ran_within_the_tiers_roles(proc_stack):
    """Last in the module: the faults above ran with IAM enforced, and no tier was ever denied."""
    stack = proc_stack
    stranger = Clients(stack.direct)  # the test environment's keys: not an identity of this account
    with pytest.raises(ClientError) as denied:
        stranger.sqs.list_queues()
    assert denied.value.response["Error"]["Code"] in ("InvalidClientTokenId", "AccessDenied", "403")
    logs = "".join(p.read_text(errors="replace") for p in stack.logs.glob("*.log") if p.name != "moto.log")
    logs += stack.consoles()
    assert "AccessDenied" not in logs and "not authorized" not in logs
