"""Where moto 5.2's EC2 differs from AWS in a way the local stack depends on, corrected in our launcher.

- ``run_instances`` from a launch template ignores the template's ``IamInstanceProfile``: on AWS the
  instance gets that profile (it is how deploy gives app instances their role). Without this, every
  local app instance would boot with no role and get no credentials. An instance-level profile in the
  request still wins, as on AWS.
"""

from __future__ import annotations

import functools
import logging

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


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.ec2.models.instances import InstanceBackend

    InstanceBackend.run_instances = _with_template_profile(InstanceBackend.run_instances)
    _applied = True
    log.debug("moto fixes applied: launch templates' instance profiles")
