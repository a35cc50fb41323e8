"""A new EC2 instance or image is invisible to the API for a while: NotFound by id, absent from filtered lists.

AWS ("Eventual consistency in the Amazon EC2 API"): "if you run a command to modify or describe the resource
that you just created, its ID might not have propagated throughout the system, and you will get an error
responding that the resource does not exist." and, for ``InvalidInstanceID.NotFound``: "If you successfully
run the RunInstances command, and then immediately run another command using the instance ID that was
provided in the response of RunInstances, it might return an InvalidInstanceID.NotFound error. This does not
mean the instance does not exist." ... "TerminateInstances: ... If you get an InvalidInstanceID.NotFound error
after running TerminateInstances, this does not mean that the instance is or will be terminated. Your instance
could still be running."
https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html

moto lists a new instance or image at once. Here, for ``ec2_lag_s`` (``IMGREC_STRICT_EC2_LAG``, resolved for
the instance's ``imgrec:stack``/Name tags or launch template, or the image's name and tags, when it is made),
every EC2 API call a client makes sees it as absent: describe calls by id, terminate, stop, start, attribute
and tag calls answer ``InvalidInstanceID.NotFound`` / ``InvalidAMIID.NotFound`` (we take the harsher side of
"might"), and unfiltered or filtered lists leave it out. moto's own work (CloudFormation, Auto Scaling, the
RunInstances call itself) still sees everything.
"""

from __future__ import annotations

import threading
import time

from infra.local.strict import context
from infra.local.strict.control import StrictState

KEY = "ec2_lag_s"
_visible_at: dict[str, float] = {}  # resource id -> monotonic time it appears to clients
_lock = threading.Lock()
UNHIDDEN_ACTIONS = frozenset({"RunInstances"})


def hidden(resource_id: str) -> bool:
    """Whether a client's EC2 call should not see ``resource_id`` now."""
    call = context.current()
    if call is None or call.service != "ec2" or call.action in UNHIDDEN_ACTIONS:
        return False
    with _lock:
        return _visible_at.get(resource_id, 0.0) > time.monotonic()


def _names_from_run(kwargs: dict) -> list[str]:
    tags = (kwargs.get("tags") or {}).get("instance", {})
    template = kwargs.get("launch_template") or {}
    return [*tags.values(), template.get("LaunchTemplateName"), template.get("LaunchTemplateId")]


def _record(resource_id: str, lag: float) -> None:
    with _lock:
        _visible_at[resource_id] = time.monotonic() + lag


def apply(state: StrictState) -> None:
    from moto.ec2.exceptions import InvalidAMIIdError
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.models.instances import InstanceBackend

    run_instances = InstanceBackend.run_instances
    all_reservations = InstanceBackend.all_reservations
    create_image, register_image, copy_image = AmiBackend.create_image, AmiBackend.register_image, AmiBackend.copy_image
    describe_images = AmiBackend.describe_images

    def run_instances_recorded(self, image_id, count, user_data, security_group_names, **kwargs):
        lag = float(state.value(KEY, _names_from_run(kwargs)))
        reservation = run_instances(self, image_id, count, user_data, security_group_names, **kwargs)
        for instance in reservation.instances:
            _record(instance.id, lag)
        return reservation

    def all_reservations_visible(self, filters=None):
        reservations = all_reservations(self, filters)
        if context.current() is None:
            return reservations
        out = []
        for reservation in reservations:  # moto hands out shallow copies: trimming one touches nothing stored
            kept = [i for i in reservation.instances if not hidden(i.id)]
            if kept:
                reservation.instances = kept
                out.append(reservation)
        return out

    def image_recorded(original):
        def make(self, *args, **kwargs):
            ami = original(self, *args, **kwargs)
            names = [getattr(ami, "name", None), *[t.get("value") for t in getattr(ami, "get_tags", lambda: [])()]]
            _record(ami.id, float(state.value(KEY, names)))
            return ami
        return make

    def describe_images_visible(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        missing = [i for i in ami_ids or () if hidden(i)]
        if missing:
            raise InvalidAMIIdError(missing)
        images = describe_images(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)
        return [ami for ami in images if not hidden(ami.id)]

    InstanceBackend.run_instances = run_instances_recorded
    InstanceBackend.all_reservations = all_reservations_visible
    AmiBackend.create_image = image_recorded(create_image)
    AmiBackend.register_image = image_recorded(register_image)
    AmiBackend.copy_image = image_recorded(copy_image)
    AmiBackend.describe_images = describe_images_visible
