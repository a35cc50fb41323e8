"""Thin EC2 actuation: launch app-tier instances and remove surplus ones.

Only the EC2 (and, for the idle signal, CloudWatch) API is used, so the same code
drives real AWS and the local moto server; locally the instance runner boots moto's
instances from their user data. Which instances go on scale-in is a pure choice
(``choose_removals``): pending ones first (they hold no work), then idle ones (no
``ImagesProcessed`` data points lately), then the newest. The worker's two-stage
SIGTERM is the last line of defence for a busy one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import Settings
from infra.metrics import Metric, instance_dimensions
from infra.observe import ACTIVE_STATES, LIVE_STATES, FleetReader, Instance, InstanceState
from infra.tags import NAME_TAG, Role, stack_tags
from infra.userdata import app_user_data

log = logging.getLogger(__name__)

IDLE_LOOKBACK_S = 10  # a CloudWatch high-resolution period; on standard metrics it finds nothing -> "newest"


def free_indices(instances: Iterable[Instance], settings: Settings, count: int) -> list[int]:
    """The ``count`` lowest n (from 1) whose ``Name=<app prefix>-<n>`` no live instance holds."""
    used = {i.name for i in instances if i.state in LIVE_STATES}
    out, k = [], 1
    while len(out) < count:
        if settings.app_instance_name(k) not in used:
            out.append(k)
        k += 1
    return out


def choose_removals(instances: Iterable[Instance], count: int, activity: Mapping[str, float] | None = None) -> list[str]:
    """Ids of the ``count`` instances to remove: pending, then idle, then newest."""
    activity = activity or {}
    candidates = [i for i in instances if i.state in ACTIVE_STATES]

    def rank(inst: Instance):
        busy = activity.get(inst.id, 0.0) > 0
        return (inst.state != InstanceState.PENDING, busy, -inst.launch_time, inst.id)

    return [i.id for i in sorted(candidates, key=rank)[: max(0, count)]]


def user_data(settings: Settings) -> str:
    """Boot script for an AMI launch (no launch template): the very script deploy puts in the
    launch template (``infra.userdata.app_user_data``), so the units and the env file are the same
    whichever path launched the instance. The image must be baked (``python -m infra bake``): the
    controller does not know where to install the project from."""
    return app_user_data(settings)


def recent_activity(cloudwatch, settings: Settings, instance_ids: list[str],
                    lookback_s: int = IDLE_LOOKBACK_S, now: datetime | None = None) -> dict[str, float]:
    """Images each instance processed in the last ``lookback_s`` (CloudWatch ImagesProcessed).

    Best effort: on any error the answer is {} and removal falls back to newest-first.
    """
    if cloudwatch is None or not instance_ids:
        return {}
    end = now or datetime.now(UTC)
    queries = [{
        "Id": f"m{i}",
        "MetricStat": {
            "Metric": {"Namespace": settings.metrics_namespace, "MetricName": str(Metric.IMAGES_PROCESSED),
                       "Dimensions": instance_dimensions(settings.prefix, iid)},
            "Period": lookback_s, "Stat": "Sum"},
        "ReturnData": True,
    } for i, iid in enumerate(instance_ids[:500])]
    try:
        resp = cloudwatch.get_metric_data(MetricDataQueries=queries, StartTime=end - timedelta(seconds=lookback_s),
                                          EndTime=end + timedelta(seconds=1))
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
            if err.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
                return set()  # not listed yet: AWS's describe may lag a fresh run_instances
            log.error("describe_instances failed for %s", instance_ids)
            raise
        return {i["InstanceId"] for r in reservations for i in r["Instances"]
                if InstanceState(i["State"]["Name"]) not in LIVE_STATES}

    def launch(self, n: int, fleet: list[Instance] | None = None) -> list[str]:
        """Bring ``n`` more instances up (warm-pool stopped ones first); returns their ids."""
        if n <= 0:
            return []
        fleet = self.fleet() if fleet is None else fleet
        ids: list[str] = []
        if self.warm_pool:
            stopped = [i.id for i in fleet if i.state == InstanceState.STOPPED][:n]
            if stopped:
                try:
                    self.ec2.start_instances(InstanceIds=stopped)
                except ClientError:
                    log.error("start_instances failed for %s", stopped)
                    raise
                log.info("started warm instances %s", stopped)
                ids += stopped
        for k in free_indices(fleet, self.settings, n - len(ids)):
            ids.append(self._run_one(k))
        return ids

    def _run_one(self, k: int) -> str:
        s = self.settings
        name = s.app_instance_name(k)
        kwargs = {
            "MinCount": 1, "MaxCount": 1,
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
        except ClientError:
            log.error("run_instances failed for %s (template %r, ami %s)", name, s.launch_template, s.ami_id)
            raise
        log.info("launched %s as %s in %.0f ms", inst["InstanceId"], name, (time.monotonic() - started) * 1000)
        return inst["InstanceId"]

    def remove(self, instance_ids: list[str]) -> list[str]:
        """Terminate (or, with a warm pool, stop) these instances."""
        if not instance_ids:
            return []
        verb = "stop_instances" if self.warm_pool else "terminate_instances"
        try:
            getattr(self.ec2, verb)(InstanceIds=list(instance_ids))
        except ClientError:
            log.error("%s failed for %s", verb, instance_ids)
            raise
        log.info("%s %s", "stopped" if self.warm_pool else "terminated", instance_ids)
        return list(instance_ids)

    def scale_in(self, count: int, fleet: list[Instance] | None = None) -> list[str]:
        """Remove ``count`` instances, choosing pending, then idle, then newest."""
        if count <= 0:
            return []
        fleet = self.fleet() if fleet is None else fleet
        running = [i.id for i in fleet if i.state == InstanceState.RUNNING]
        activity = recent_activity(self.cloudwatch, self.settings, running)
        return self.remove(choose_removals(fleet, count, activity))
