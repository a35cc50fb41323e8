"""The strict local AWS's settings: one switch, and one named default per emulated behaviour.

Read by the moto server process at start (``python -m infra.local.moto_server`` inherits the caller's
environment), listed in the README's configuration table. Defaults are short, so `make run` and the suite
still feel instant; a test raises a value for its own resources at run time through the control route
(``infra.local.strict.client``), for example AWS's worst case of a 60 s count lag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from infra.config import ConfigError, env_field, values_from_env

SWITCHES = ("on", "off")
NOTE = "local stack (strict AWS): "


@dataclass(frozen=True)
class StrictSettings:
    enabled: str = env_field(
        "IMGREC_STRICT_AWS", "on",
        "`on`: the local moto server behaves as strictly as AWS where moto is kinder (docs/AWS-SEMANTICS.md); "
        "`off`: plain moto, every emulation below off",
    )
    sqs_count_lag_s: float = env_field(
        "IMGREC_STRICT_SQS_COUNT_LAG", 1.0,
        "seconds a queue's ApproximateNumberOfMessages* snapshot lives before it is refreshed (AWS: up to 60)",
    )
    ec2_lag_s: float = env_field(
        "IMGREC_STRICT_EC2_LAG", 1.0,
        "seconds a new instance or image stays invisible to describe calls and NotFound by id",
    )
    ec2_idempotency: str = env_field(
        "IMGREC_STRICT_EC2_IDEMPOTENCY", "on",
        "`on`: RunInstances with a ClientToken it has seen returns the same instances, as AWS does",
    )
    cw_resolution: str = env_field(
        "IMGREC_STRICT_CW_RESOLUTION", "on",
        "`on`: CloudWatch keeps each datum at its StorageResolution (default 60 s) and reads follow AWS's "
        "Period and StartTime rules",
    )
    cw_ingest_delay_s: float = env_field(
        "IMGREC_STRICT_CW_INGEST_DELAY", 1.0,
        "seconds before a datum put to CloudWatch can be read back",
    )
    sqs_tombstone_s: float = env_field(
        "IMGREC_STRICT_SQS_TOMBSTONE", 2.0,
        "seconds a deleted queue lingers: sends to it succeed and are lost, CreateQueue of its name answers "
        "QueueDeletedRecently (AWS: 60)",
    )
    ddb_gsi_lag_s: float = env_field(
        "IMGREC_STRICT_DDB_GSI_LAG", 1.0,
        "seconds before a write to a DynamoDB table shows in queries on its global secondary indexes",
    )
    ddb_unprocessed: float = env_field(
        "IMGREC_STRICT_DDB_UNPROCESSED", 0.0,
        "fraction (0-1) of each BatchGetItem's keys answered as UnprocessedKeys, as a throttled table does "
        "(0: only on demand, from a test)",
    )
    iam_conditions: str = env_field(
        "IMGREC_STRICT_IAM_CONDITIONS", "on",
        "`on`: with IAM enforced, policy conditions are judged against the request context AWS documents "
        "(cloudwatch:namespace, aws:ResourceTag/*, iam:PassedToService on the PassRole a launch implies)",
    )
    iam_run_instances: str = env_field(
        "IMGREC_STRICT_IAM_RUN_INSTANCES", "on",
        "`on`: RunInstances is also authorised per resource with ec2:LaunchTemplate, and needs ec2:CreateTags "
        "(ec2:CreateAction) for its tags"
    )
    s3_missing_key: str = env_field(
        "IMGREC_STRICT_S3_MISSING_KEY", "on",
        "`on`: with IAM enforced, GetObject/HeadObject of a missing key answers 403 unless the caller may "
        "s3:ListBucket the bucket (then 404), as S3 does",
    )
    unsigned: str = env_field(
        "IMGREC_STRICT_UNSIGNED", "on",
        "`on`: with IAM enforced, an unsigned or malformed-signature request answers AWS's 403 "
        "MissingAuthenticationToken (or 400 IncompleteSignature) instead of a 500 and a traceback",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("str", str) and value not in SWITCHES:
                raise ConfigError(f"{f.metadata['env']}={value!r}: must be on or off")
            if f.type in ("float", float) and not 0 <= float(value) <= 3600:
                raise ConfigError(f"{f.metadata['env']}={value!r}: must be between 0 and 3600 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StrictSettings:
        return cls(**values_from_env(cls, env))

    @property
    def on(self) -> bool:
        return self.enabled == "on"

    def values(self) -> dict[str, object]:
        """Every behaviour's default, keyed by field name (what scopes override), the switch left out."""
        return {f.name: coerce(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "enabled"}


def coerce(key: str, value: object) -> object:
    """A value for ``key`` as behaviours read it: switches become bools, lags floats."""
    types = {f.name: f.type for f in dataclasses.fields(StrictSettings)}
    if key not in types or key == "enabled":
        raise KeyError(key)
    if types[key] in ("str", str):
        if isinstance(value, bool):
            return value
        if str(value) not in SWITCHES:
            raise ValueError(f"{key}: must be on or off (or a bool), got {value!r}")
        return str(value) == "on"
    value = float(value)
    if not 0 <= value <= 3600:
        raise ValueError(f"{key}: must be between 0 and 3600 seconds, got {value}")
    return value
