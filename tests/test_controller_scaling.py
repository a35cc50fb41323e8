"""The controller and the local instance runner as real processes on a moto server.

A burst of real images goes straight into the input bucket and request queue; the
test samples ``describe_instances`` every 0.2 s (as a grader would) and checks the
app tier scaled out to the policy's count, never above max, answered everything,
and came back to min. Every instance boots from the launch template's user data;
killing a worker process must make its instance's init restart it (Restart=on-failure).
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import pytest

from infra.config import Settings
from infra.local.ami import ensure_launch_template
from infra.local.runner import consoles_text
from infra.observe import app_instances
from tests.fleet import FleetSampler
from tests.helpers import collect_results, send_requests, upload_images
from tests.localinst import worker_processes
from tests.procs import log_text, start_module, stop_process, wait_for

pytestmark = pytest.mark.slow


def worker_pids(runner) -> list[int]:
    return sorted(p.pid for p in worker_processes(runner.pid))


@contextmanager
def scaling_stack(settings: Settings, tmp_path):
    """``python -m infra.local.runner`` and ``python -m controller``, stopped (with stragglers) at the end."""
    procs = []
    try:
        from infra.clients import Clients

        settings = settings.replace(launch_template=ensure_launch_template(Clients(settings).ec2, settings))
        sup = start_module("infra.local.runner", settings, log_path=tmp_path / "runner.log")
        procs.append(sup)
        wait_for(lambda: "runner ready" in log_text(sup) or sup.poll() is not None, 60, what="runner start")
        assert sup.poll() is None, log_text(sup)
        ctl = start_module("controller", settings, log_path=tmp_path / "controller.log")
        procs.append(ctl)
        yield sup, ctl
    finally:
        for proc in reversed(procs):
            stop_process(proc, timeout=40)
        for proc in procs:
            print(f"---- {proc.args[2]} log (tail) ----\n" + "\n".join(log_text(proc).splitlines()[-25:]))


BURST = 300


def test_burst_scales_out_to_max_back_to_min_and_dead_workers_are_replaced(stack, clients, tmp_path):
    settings = stack.replace(scaling="course", min_instances=1, max_instances=4, target_backlog_per_instance=5)
    # Enough that one lean worker (about 30 images/s here) is still busy when the new instances boot.
    requests = upload_images(clients.s3, settings, BURST)
    sampler = FleetSampler(clients.ec2, settings)
    with scaling_stack(settings, tmp_path) as (sup, ctl):
        wait_for(lambda: len(worker_pids(sup)) == 1, 30, what="the min-1 fleet's worker")
        assert len(app_instances(clients.ec2, settings)) == 1
        with sampler.running():
            wait_for(lambda: len(sampler.samples) >= 2, 10, interval=0.05, what="samples before the burst")
            send_requests(clients.sqs, settings, requests)
            results = collect_results(clients.sqs, settings, {r.request_id for r in requests}, 180)
            wait_for(lambda: sampler.samples[-1].running + sampler.samples[-1].pending == 1, 30,
                     what="the fleet back at min 1")
            at_min = len(sampler.samples)
            wait_for(lambda: len(sampler.samples) >= at_min + 2, 10, interval=0.05, what="samples after the burst")

        assert {r.request_id for r in requests} <= set(results), "some requests were not answered"
        assert all(results[r.request_id].ok for r in requests), [r for r in results.values() if not r.ok]
        counts = [s.running + s.pending for s in sampler.samples]
        print("fleet (running+pending) every 0.2 s:", counts)
        assert counts[0] == 1 and counts[-1] == 1
        assert sampler.peak == 4 and sampler.peak_running == 4  # BURST messages / 5, capped at max 4
        assert max(counts) <= settings.max_instances
        assert len({results[r.request_id].worker for r in requests}) > 1, "the new instances did no work"
        out = clients.s3.list_objects_v2(Bucket=settings.out_bucket)
        assert out.get("KeyCount") == BURST

        # the instance's init restarts a killed worker (Restart=on-failure, RestartSec=5)
        # The scaled-in instances must be gone first: a worker still draining on one of them would pass for
        # the victim's replacement below.
        halted = sampler.peak - settings.min_instances
        wait_for(lambda: consoles_text(settings.data_dir).count("instance halted") >= halted
                 and len(worker_pids(sup)) == 1, 40, what="surplus instances halted, one worker left")
        (victim,) = worker_pids(sup)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: "imgrec-worker.service: Main process exited, code=killed, status=9/KILL"
                 in consoles_text(settings.data_dir), 20, what="the init seeing the kill")
        wait_for(lambda: len(worker_pids(sup)) == 1 and worker_pids(sup) != [victim], 20,
                 what="a replacement worker")
        consoles = consoles_text(settings.data_dir)
        assert "imgrec-worker.service: Main process exited, code=killed, status=9/KILL" in consoles
        assert "imgrec-worker.service: Scheduled restart job, restart counter is at 1." in consoles
        # The killed worker's last long poll may still be open on the server and would swallow messages
        # sent now until their visibility timeout (SQS semantics, same on AWS): let it lapse first. The
        # server shows no sign of an orphaned poll, so this one waits out its known length from the kill.
        time.sleep(max(0.0, killed_at + settings.receive_wait_s + 1 - time.monotonic()))
        more = upload_images(clients.s3, settings, 3, start=BURST)
        send_requests(clients.sqs, settings, more)
        again = collect_results(clients.sqs, settings, {r.request_id for r in more}, 60)
        assert {r.request_id for r in more} <= set(again)
        (instance,) = app_instances(clients.ec2, settings)
        assert {again[r.request_id].worker for r in more} == {instance.id}
        assert "action=launch" in log_text(ctl) and "action=remove" in log_text(ctl)
    assert worker_pids(sup) == [] and sup.returncode == 0


def test_grader_profile_min0_max15_peaks_at_15_and_returns_to_zero(stack, clients, tmp_path):
    settings = stack.replace(scaling="course")  # the course's profile: 0 to 15
    requests = upload_images(clients.s3, settings, 100)
    sampler = FleetSampler(clients.ec2, settings)
    with scaling_stack(settings, tmp_path) as (sup, ctl):
        # The controller's first decision, on an empty queue: nothing to launch at min 0.
        wait_for(lambda: "backlog=0 " in log_text(ctl), 30, what="the controller's first tick")
        assert app_instances(clients.ec2, settings) == [] and worker_pids(sup) == []
        with sampler.running():
            sent_at = send_requests(clients.sqs, settings, requests)
            results = collect_results(clients.sqs, settings, {r.request_id for r in requests}, 240)
            drained_at = max(r.done_at for r in results.values())
            wait_for(lambda: sampler.samples[-1].running + sampler.samples[-1].pending == 0, 30,
                     what="the fleet back at 0")
        assert {r.request_id for r in requests} <= set(results)
        zero_at = next(s.at for s in sampler.samples if s.at > drained_at and s.running + s.pending == 0)
        first_up = next(s.at for s in sampler.samples if s.running + s.pending > 0)
        print(f"grader profile: first instance {first_up - sent_at:+.2f} s after the burst, peak running "
              f"{sampler.peak_running}, last answer {drained_at - sent_at:.1f} s after it, "
              f"0 running {zero_at - drained_at:.2f} s after the last answer")
        assert sampler.peak_running == 15 and sampler.peak == 15
        # How soon after the last answer it is back at 0 (the grader's bar is 5 s) is a figure:
        # tests/bench/bench_controller.py prints it. Here: it got there (the wait above, and zero_at exists).
        assert zero_at > drained_at
