"""The controller under AWS's harder semantics, on the strict local AWS (infra/local/strict): lagging queue
counts, instances EC2 does not list yet, CloudWatch's resolution rules, capacity refusals, throttling, lost
answers and a lease that changes hands mid-actuation. One test per behaviour; each fails on plain moto's
kindness or on the controller as it was before (counting messages, trusting one describe, recording launches
after the loop, checking the lease once a tick)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ReadTimeoutError

from app_tier.metrics import Metrics
from controller.lease import Lease
from controller.loop import Action, Controller
from infra.local.stack import status_line
from infra.local.strict.client import clear, inject_fault
from infra.messages import ImageRequest
from infra.metrics import Metric, stack_dimensions
from infra.observe import app_instances, queue_url
from tests.helpers import enqueue, strict_aws, wait_listed, wait_until
from web_tier.metrics_source import MetricsSource


def send(clients, settings, n: int) -> None:
    enqueue(clients, settings, [ImageRequest.new(f"k{i}.jpg", None, f"k{i}.jpg") for i in range(n)])


def drain(clients, settings) -> None:
    """What workers do: take every message and delete it."""
    url = queue_url(clients.sqs, settings.req_queue)
    while msgs := clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        clients.sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])


class Clock:
    """The controller's two clocks, moved by the test: monotonic for windows, wall for EC2 launch times."""

    def __init__(self):
        self.mono, self.offset = 1000.0, 0.0

    def wall(self) -> float:
        return time.time() + self.offset

    def tick(self, seconds: float = 1.0) -> None:
        self.mono += seconds
        self.offset += seconds


def controller(settings, clients, clock: Clock, **kw) -> Controller:
    return Controller(settings, clients, clock=lambda: clock.mono, wall_clock=clock.wall, **kw)


def calls(client, operation: str) -> list[float]:
    """Times of every ``operation`` call made through ``client`` (observed, not changed)."""
    seen: list[float] = []
    client.meta.events.register(f"before-call.{client.meta.service_model.endpoint_prefix}.{operation}",
                                lambda **_: seen.append(time.monotonic()))
    return seen


# ---------------------------------------------------------------- CloudWatch resolution

def test_worker_metrics_are_high_resolution_so_one_second_reads_and_the_dashboard_see_them(stack, clients):
    metrics = Metrics(clients.cloudwatch, stack.metrics_namespace, stack.prefix, "i-worker").start()
    metrics.count(Metric.IMAGES_PROCESSED, 7)
    metrics.close()
    end = datetime.now(UTC) + timedelta(seconds=2)

    def per_second() -> list[float]:
        resp = clients.cloudwatch.get_metric_data(StartTime=end - timedelta(seconds=30), EndTime=end, MetricDataQueries=[{
            "Id": "ip", "MetricStat": {"Metric": {"Namespace": stack.metrics_namespace, "MetricName": "ImagesProcessed",
                                               "Dimensions": stack_dimensions(stack.prefix)}, "Period": 1, "Stat": "Sum"}}])
        return resp["MetricDataResults"][0]["Values"]

    wait_until(lambda: 7.0 in per_second(), 10, what="the second the images were done")
    # A standard-resolution datum lands at the start of its minute: a 1 s read would put it in the wrong second.
    source = MetricsSource(stack, clients)
    wait_until(lambda: (source.read().values.get("images_per_s") or 0) > 0, 10, what="the dashboard's rate")


# ---------------------------------------------------------------- lagging counts

@pytest.mark.parametrize("profile", ["course", "work"])
def test_a_60_s_count_lag_neither_terminates_nor_relaunches_for_the_same_backlog(stack, clients, profile):
    """The count says 12 for a minute after the workers took them all; then 0. The fleet must go out once and
    come back once: no instance terminated while the stale count stands, none launched again after."""
    extra = {} if profile == "course" else {"rate_estimate": 1.0, "boot_estimate_s": 2.0, "latency_target_s": 5.0}
    settings = stack.replace(scaling=profile, min_instances=0, max_instances=3, scale_in_window_s=0.5, **extra)
    clock = Clock()
    ctl = controller(settings, clients, clock)
    ticks = []
    with strict_aws(settings, sqs_count_lag_s=60, ec2_lag_s=2):
        send(clients, settings, 12)
        ticks.append(ctl.step())
        assert ticks[0].backlog == 12 and ticks[0].action == Action.LAUNCH and ticks[0].changed
        drain(clients, settings)
        for _ in range(8):  # the count stays at 12: hold, launch nothing more
            clock.tick()
            ticks.append(ctl.step())
        assert {t.backlog for t in ticks} == {12} and all(t.action == Action.NONE for t in ticks[1:]), ticks
        wait_listed(clients.ec2, ticks[0].changed)
        with strict_aws(settings, sqs_count_lag_s=0):  # the minute is over: the snapshot catches up
            deadline = time.monotonic() + 30
            while len(app_instances(clients.ec2, settings)) or ctl.brain.unseen:
                assert time.monotonic() < deadline, ticks[-3:]
                clock.tick(61 if profile == "work" else 1)  # the work profile keeps a paid minute
                ticks.append(ctl.step())
                time.sleep(0.2)
    launched = [i for t in ticks if t.action == Action.LAUNCH for i in t.changed]
    removed = [i for t in ticks if t.action == Action.REMOVE for i in t.changed]
    assert launched == ticks[0].changed and sorted(removed) == sorted(launched), ticks
    first_removal = next(n for n, t in enumerate(ticks) if t.action == Action.REMOVE)
    assert all(t.action != Action.LAUNCH for t in ticks[first_removal:])


# ---------------------------------------------------------------- EC2: refusals, names, unlisted launches

def test_a_capacity_refusal_partway_keeps_the_launches_made_and_names_stay_unique(stack, clients):
    settings = stack.replace(scaling="course", min_instances=0, max_instances=5, scale_in_window_s=0.5)
    clock = Clock()
    ctl = controller(settings, clients, clock)
    third = settings.app_instance_name(3)  # the fault's scope: only the RunInstances that names this instance
    try:
        with strict_aws(settings, sqs_count_lag_s=0, ec2_lag_s=60):  # nothing launched is listed during the test
            inject_fault(settings.endpoint_url, third, "ec2:RunInstances", "InsufficientInstanceCapacity")
            send(clients, settings, 25)
            tick = ctl.step()
            assert tick.action == Action.LAUNCH and len(tick.changed) == 2, tick
            assert "InsufficientInstanceCapacity" in tick.reason
            assert set(ctl.brain.unseen) == set(tick.changed)  # recorded as they happened, not lost with the tick
            clock.tick()
            held = ctl.step()
            assert held.action == Action.BACKOFF and held.changed == [] and held.pending == 2, held
            clear(settings.endpoint_url, third)
            clock.tick(3)  # past the first back-off (2 s)
            more = ctl.step()
            assert more.action == Action.LAUNCH and len(more.changed) == 3, more
            names = sorted(lx.name for lx in ctl.brain.unseen.values())
            assert names == sorted(settings.app_instance_name(k) for k in range(1, 6))  # none named twice
            status = status_line(settings, clients)
            source = MetricsSource(settings, clients)
            wait_until(lambda: (source.read().values.get("launch_refusals") or 0) >= 1, 10,
                       what="the dashboard showing the refusal")
            assert "launches refused: 1 capacity" in status_line(settings, clients) or "refused" in status
    finally:
        clear(settings.endpoint_url, third)


def test_persistent_throttling_backs_off_doubling_and_shows_on_the_status_line(stack, clients):
    settings = stack.replace(scaling="course", min_instances=0, max_instances=2)
    clock = Clock()
    ctl = controller(settings, clients, clock)
    attempts = calls(clients.ec2, "RunInstances")
    with strict_aws(settings, sqs_count_lag_s=0):
        inject_fault(settings.endpoint_url, settings.prefix, "ec2:RunInstances", "RequestLimitExceeded")
        send(clients, settings, 3)
        actions = []
        for _ in range(8):  # 8 s of ticks: tries at 0, 2 (+2), 6 (+4): botocore's retries inside each try
            actions.append(ctl.step().action)
            clock.tick()
        assert actions == [Action.BACKOFF, Action.BACKOFF, Action.BACKOFF, Action.BACKOFF, Action.BACKOFF,
                           Action.BACKOFF, Action.BACKOFF, Action.BACKOFF]
        assert ctl.backoff.failures == 3 and ctl.backoff.code == "RequestLimitExceeded"
        assert len(attempts) == 3  # one RunInstances call per try (botocore retried each inside), none while held
        wait_until(lambda: "launches refused: 3 throttled" in status_line(settings, clients), 10,
                   what="the status line")


def test_a_launch_whose_answer_was_lost_is_retried_with_its_client_token(stack, clients):
    """RunInstances happened, its answer never came (a timeout): the retry must not start a second instance."""
    settings = stack.replace(scaling="course", min_instances=1, max_instances=1)
    clock = Clock()
    ctl = controller(settings, clients, clock)
    lost = []

    def lose_the_answer(**_):
        if not lost:
            lost.append(1)
            raise ReadTimeoutError(endpoint_url=settings.endpoint_url)

    clients.ec2.meta.events.register("after-call.ec2.RunInstances", lose_the_answer)
    with strict_aws(settings, ec2_lag_s=5):  # the instance it did launch is not listed when it tries again
        first = ctl.step()
        assert first.action == Action.FAILED and lost, first
        clock.tick()
        second = ctl.step()
        assert second.action == Action.LAUNCH and len(second.changed) == 1, second
        wait_listed(clients.ec2, second.changed)
        fleet = app_instances(clients.ec2, settings)
        assert [i.id for i in fleet] == second.changed and fleet[0].name == settings.app_instance_name(1)


# ---------------------------------------------------------------- the lease

def test_a_lease_handover_mid_actuation_stops_the_old_holder_before_its_next_launch(stack, clients):
    settings = stack.replace(scaling="course", min_instances=0, max_instances=3, controller_lease_s=3.0)
    clock = Clock()
    a = controller(settings, clients, clock)
    b_clock = [0.0]
    b = Lease(clients.dynamodb, settings.jobs_table, settings.controller_lease_s, owner="b", clock=lambda: b_clock[0])

    def b_takes_over(**_):
        if b.mem.held_rvn is None:  # the first launch has happened: b, which saw the lease stand still, takes it
            b.tick()
            b_clock[0] += settings.controller_lease_s
            assert b.tick()

    with strict_aws(settings, sqs_count_lag_s=0):
        send(clients, settings, 15)
        clients.ec2.meta.events.register("after-call.ec2.RunInstances", b_takes_over)
        tick = a.step()
        assert tick.action == Action.LAUNCH and len(tick.changed) == 1 and "lease lost" in tick.reason, tick
        clock.tick()
        assert a.step() is None  # no longer the holder: no tick, no EC2 call


def test_a_reaper_pass_that_outlasts_the_lease_keeps_the_controller_off_ec2(stack, clients):
    settings = stack.replace(scaling="course", min_instances=0, max_instances=3, controller_lease_s=3.0)
    clock = Clock()
    ctl = controller(settings, clients, clock)
    attempts = calls(clients.ec2, "RunInstances")
    slow = []

    def slow_reaper(**_):  # the reaper lists reply queues; this pass takes longer than the lease
        if not slow:
            slow.append(1)
            clock.tick(settings.controller_lease_s)

    clients.sqs.meta.events.register("before-call.sqs.ListQueues", slow_reaper)
    with strict_aws(settings, sqs_count_lag_s=0):
        send(clients, settings, 15)
        tick = ctl.step()
    assert slow and attempts == [] and tick.action == Action.LOST_LEASE, tick
