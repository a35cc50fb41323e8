"""Tags and roles: how every resource says which stack owns it and what it is for. Defined here once.

Everything the project creates carries ``imgrec:stack=<prefix>``; teardown, destroy and the controller act
only on resources that carry their own prefix, so a same-named resource someone else made is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

STACK_TAG = "imgrec:stack"
ROLE_TAG = "imgrec:role"
NAME_TAG = "Name"
# Set on an instance by the local runner when it failed to boot or had a process OOM-killed.
HEALTH_TAG = "imgrec:health"
OWNER_TAG = "imgrec:owner"  # on a reply queue: the web process answering from it
HEARTBEAT_TAG = "imgrec:heartbeat"  # on a reply queue: epoch seconds of its owner's last beat
REF_TAG = "imgrec:ref"  # on a baked image: the git ref it was built from
TAG_KEYS = (STACK_TAG, ROLE_TAG, HEALTH_TAG, OWNER_TAG, HEARTBEAT_TAG, REF_TAG)


class Role(StrEnum):
    APP = "app"  # app-tier worker instances, their launch template, role and security group
    WEB = "web"  # web tier + controller instances (an Auto Scaling group), their role and group
    DATA = "data"  # buckets, queues, the job table: what the tiers read and write
    LOAD_BALANCER = "alb"  # the Application Load Balancer in front of several web instances
    BAKED_AMI = "baked-ami"  # an app-tier image made by `infra bake`
    BUILDER = "bake-builder"  # bake's temporary builder instance and its security group
    LOCAL = "local-stack"  # the local stack's own users (administrator, EC2 stand-in): never on AWS


def tag_dict(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """AWS's ``[{"Key": k, "Value": v}, ...]`` as a plain dict (``None`` and ``[]`` give ``{}``)."""
    return {t["Key"]: t["Value"] for t in tags or []}


def owned_by(tags: Iterable[Mapping[str, str]] | Mapping[str, str] | None, prefix: str) -> bool:
    """Whether a resource's tags (AWS list form or a plain dict) say that stack ``prefix`` made it."""
    as_dict = dict(tags) if isinstance(tags, Mapping) else tag_dict(tags)
    return as_dict.get(STACK_TAG) == prefix


def stack_tags(prefix: str, role: Role | str | None = None, **extra: str) -> list[dict[str, str]]:
    """The AWS tag list for a resource of stack ``prefix`` (with its role and any extra tags)."""
    tags = {STACK_TAG: prefix}
    if role is not None:
        tags[ROLE_TAG] = str(role)
    tags.update(extra)
    return [{"Key": k, "Value": v} for k, v in tags.items()]
