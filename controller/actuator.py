"""Thin EC2 actuation: launch app-tier instances one by one, terminate (or stop) the ones chosen.

Only the EC2 (and, for the idle signal, CloudWatch) API is used, so the same code drives
real AWS and the local moto server; locally the instance runner boots moto's instances from
their user data. Which instances go on scale-in is a pure choice (``controller.brain.choose_removals``);
the worker's two-stage SIGTERM is the last line of defence for a busy one.

Every launch carries a ``ClientToken``: "With an idempotent request, if the original request
completes successfully, any subsequent retries complete successfully without performing any
further actions" (Ensuring idempotency in Amazon EC2 API requests,
https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html), so a launch retried
after an answer that never arrived does not start a second instance.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from controller.brain import choose_removals
from infra.config import Settings
from infra.metrics import Metric, metric_query, read_period
from infra.observe import LIVE_STATES, FleetReader, Instance, InstanceState
from infra.tags import NAME_TAG, Role, stack_tags
from infra.userdata import app_user_data

log = logging.getLogger(__name__)

IDLE_LOOKBACK_S = 20  # a worker publishes every 5 s: 20 s without an image is idle (a high-resolution period)
NOT_FOUND = "InvalidInstanceID.NotFound"
# RunInstances refusals that say "not now" rather than "never": the controller backs off and tries again.
CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded",
                            "InsufficientCapacity", "Unsupported"})
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})


class Refusal(StrEnum):
    CAPACITY = "capacity"
    THROTTLED = "throttled"


def refusal(err: Exception) -> Refusal | None:
    """Whether an EC2 error is a capacity refusal or throttling (both worth a back-off), else None."""
    if not isinstance(err, ClientError):
        return None
    code = error_code(err)
    if code in CAPACITY_CODES:
        return Refusal.CAPACITY
    if code in THROTTLE_CODES:
        return Refusal.THROTTLED
    return None


def error_code(err: Exception) -> str:
    if isinstance(err, ClientError):
        return err.response.get("Error", {}).get("Code", "ClientError")
    return type(err).__name__


def free_names(used: Iterable[str], name_for: Callable[[int], str], count: int) -> list[str]:
    """The ``count`` lowest names ``name_for(n)`` (n from 1; ``Settings.app_instance_name`` for the
    controller) that ``used`` does not hold, lowest first."""
    used = set(used)
    out, k = [], 1
    while len(out) < count:
        name = name_for(k)
        if name not in used:
            out.append(name)
        k += 1
    return out


def user_data(settings: Settings) -> str:
    """Boot script for an AMI launch (no launch template): the very script deploy puts in the
    launch template (``infra.userdata.app_user_data``), so the units and the env file are the same
    whichever path launched the instance. The image must be baked (``python -m infra bake``): the
    controller does not know where to install the project from."""
    return app_user_data(settings)


def new_token() -> str:
    """A ClientToken (at most 64 ASCII characters)."""
    return uuid.uuid4().hex


def recent_activity(cloudwatch, settings: Settings, instance_ids: list[str],
                    lookback_s: int = IDLE_LOOKBACK_S, now: datetime | None = None) -> dict[str, float]:
    """Images each instance processed in the last ``lookback_s`` (high-resolution ImagesProcessed).

    Best effort: on any error the answer is {} and removal falls back to newest-first.
    """
    if cloudwatch is None or not instance_ids:
        return {}
    end = now or datetime.now(UTC)
    period = read_period(lookback_s)
    queries = [metric_query(f"m{i}", settings.metrics_namespace, settings.prefix, Metric.IMAGES_PROCESSED, "Sum",
                            period, iid) for i, iid in enumerate(instance_ids[:500])]
    try:
        resp = cloudwatch.get_metric_data(MetricDataQueries=queries, StartTime=end - timedelta(seconds=period),
                                          EndTime=end + timedelta(seconds=period))
    except (ClientError, BotoCoreError) as err:
        log.warning("cannot read %s for idle check of %d instances: %s", Metric.IMAGES_PROCESSED, len(instance_ids), err)
        return {}
    out = {}
    for result in resp.get("MetricDataResults", []):
        idx = int(result["Id"][1:])
        out[instance_ids[idx]] = float(sum(result.get("Values", [])))
    return out


class Ec2Actuator:
    """Launches and removes app-tier instances; ``warm_pool`` stops/starts instead of terminate/run."""

    def __init__(self, ec2, settings: Settings, *, cloudwatch=None, warm_pool: bool = False):
        self.ec2 = ec2
        self.settings = settings
        self.cloudwatch = cloudwatch
        self.warm_pool = warm_pool
        self._fleet = FleetReader(ec2, settings)

    def fleet(self) -> list[Instance]:
        return self._fleet.read()

    def ended(self, instance_ids: list[str]) -> set[str]:
        """Those of ``instance_ids`` EC2 already lists as terminated. An instance whose boot failed between two
        fleet reads is never seen live; without this it would count as pending for the whole unseen grace."""
        if not instance_ids:
            return set()
        try:
            reservations = self.ec2.describe_instances(InstanceIds=list(instance_ids))["Reservations"]
        except ClientError as err:
            if error_code(err) == NOT_FOUND:
                return set()  # not listed yet: AWS's describe may lag a fresh run_instances
            log.error("describe_instances failed for %s", instance_ids)
            raise
        return {i["InstanceId"] for r in reservations for i in r["Instances"]
                if InstanceState(i["State"]["Name"]) not in LIVE_STATES}

    def run_one(self, name: str, token: str) -> str:
        """One RunInstances for one instance named ``name``; ``token`` makes a retry return the same instance."""
        s = self.settings
        kwargs = {
            "MinCount": 1, "MaxCount": 1, "ClientToken": token,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": stack_tags(s.prefix, Role.APP, **{NAME_TAG: name})}],
        }
        if s.launch_template:
            # $Latest: CloudFormation adds a version per stack update but leaves the default at 1
            kwargs["LaunchTemplate"] = {"LaunchTemplateName": s.launch_template, "Version": "$Latest"}
        else:
            kwargs.update(ImageId=s.ami_id, InstanceType=s.instance_type, UserData=user_data(s))
        started = time.monotonic()
        try:
            inst = self.ec2.run_instances(**kwargs)["Instances"][0]
        except (ClientError, BotoCoreError) as err:
            log.error("run_instances failed for %s (template %r, ami %s, token %s): %s", name, s.launch_template,
                      s.ami_id, token, error_code(err))
            raise
        log.info("launched %s as %s in %.0f ms", inst["InstanceId"], name, (time.monotonic() - started) * 1000)
        return inst["InstanceId"]

    def start_stopped(self, instance_ids: list[str]) -> list[str]:
        """Warm pool: start stopped instances (they keep their names)."""
        if not instance_ids:
            return []
        try:
            self.ec2.start_instances(InstanceIds=list(instance_ids))
        except (ClientError, BotoCoreError):
            log.error("start_instances failed for %s", instance_ids)
            raise
        log.info("started warm instances %s", instance_ids)
        return list(instance_ids)

    def launch(self, n: int, fleet: list[Instance] | None = None) -> list[str]:
        """Bring ``n`` more instances up (warm-pool stopped ones first), one RunInstances each; returns their
        ids. A convenience for tools and tests: the controller's loop launches one at a time itself."""
        if n <= 0:
            return []
        fleet = self.fleet() if fleet is None else fleet
        ids: list[str] = []
        if self.warm_pool:
            ids += self.start_stopped([i.id for i in fleet if i.state == InstanceState.STOPPED][:n])
        used = {i.name for i in fleet if i.state in LIVE_STATES}
        for name in free_names(used, self.settings.app_instance_name, n - len(ids)):
            ids.append(self.run_one(name, new_token()))
        return ids

    def remove(self, instance_ids: list[str]) -> list[str]:
        """Terminate (or, with a warm pool, stop) these instances."""
        if not instance_ids:
            return []
        verb = "stop_instances" if self.warm_pool else "terminate_instances"
        try:
            getattr(self.ec2, verb)(InstanceIds=list(instance_ids))
        except (ClientError, BotoCoreError) as err:
            log.error("%s failed for %s: %s", verb, instance_ids, error_code(err))
            raise
        log.info("%s %s", "stopped" if self.warm_pool else "terminated", instance_ids)
        return list(instance_ids)

    def scale_in(self, count: int, fleet: list[Instance] | None = None) -> list[str]:
        """Remove ``count`` instances, choosing pending, then idle, then newest."""
        if count <= 0:
            return []
        fleet = self.fleet() if fleet is None else fleet
        return self.remove(choose_removals(fleet, count, self.activity(fleet)))

    def activity(self, fleet: list[Instance]) -> dict[str, float]:
        running = [i.id for i in fleet if i.state == InstanceState.RUNNING]
        return recent_activity(self.cloudwatch, self.settings, running)
