"""Where moto 5.2's EC2 differs from AWS in a way the local stack depends on, corrected in our launcher.

- ``run_instances`` from a launch template ignores the template's ``IamInstanceProfile``: on AWS the
  instance gets that profile (it is how deploy gives app instances their role). Without this, every
  local app instance would boot with no role and get no credentials. An instance-level profile in the
  request still wins, as on AWS.
- DynamoDB writes are not serialised: moto's server answers requests on threads and its
  ``update_item``/``transact_write_items`` read, change and store an item without a lock, so two
  concurrent ``ADD`` updates of one counter can lose one. AWS: "The actions are completed atomically
  so that either all of them succeed or none of them succeeds"
  (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html), and an
  update of one item is atomic. The batch counters (``infra/jobstore.py``) and the controller's lease
  depend on it; here each DynamoDB item write (and item read) runs under one lock.
"""

from __future__ import annotations

import functools
import logging
import threading

log = logging.getLogger(__name__)
_applied = False


def _template_profile(backend, launch_template: dict) -> dict:
    if not launch_template:
        return {}
    data = backend._get_template_from_args(launch_template).data
    profile = data.get("IamInstanceProfile") or {}
    return {"iam_instance_profile_arn": profile.get("Arn")} if profile.get("Arn") else (
        {"iam_instance_profile_name": profile["Name"]} if profile.get("Name") else {})


def _with_template_profile(original):
    @functools.wraps(original)
    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        reservation = original(self, image_id, count, user_data, security_group_names, **kwargs)
        if kwargs.get("iam_instance_profile_arn") or kwargs.get("iam_instance_profile_name"):
            return reservation  # the request's own profile; moto's response layer associates it
        profile = _template_profile(self, kwargs.get("launch_template") or {})
        for instance in reservation.instances if profile else ():
            self.associate_iam_instance_profile(instance_id=instance.id, **profile)
        return reservation

    return run_instances


DYNAMODB_LOCK = threading.RLock()
DYNAMODB_SERIALISED = ("put_item", "update_item", "delete_item", "transact_write_items", "get_item",
                       "batch_get_item", "batch_write_item", "transact_get_items")


def serialised(original):
    @functools.wraps(original)
    def call(*args, **kwargs):
        with DYNAMODB_LOCK:
            return original(*args, **kwargs)

    return call


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.ec2.models.instances import InstanceBackend

    InstanceBackend.run_instances = _with_template_profile(InstanceBackend.run_instances)
    for name in DYNAMODB_SERIALISED:
        if hasattr(DynamoDBBackend, name):
            setattr(DynamoDBBackend, name, serialised(getattr(DynamoDBBackend, name)))
    _applied = True
    log.debug("moto fixes applied: launch templates' instance profiles, serialised DynamoDB item writes")
