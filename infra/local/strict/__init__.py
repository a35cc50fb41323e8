"""The strict local AWS: moto made as strict as AWS where moto is kinder, one module per behaviour.

moto answers at once and exactly where AWS is eventually consistent, rounded or lagging, so code that
depends on moto's kindness passes every local test and fails on its first real deployment. Each module here
patches one such behaviour into the moto server process (``python -m infra.local.moto_server`` calls
``apply``), has a named setting with a short default (``settings.StrictSettings``), a row in
``docs/AWS-SEMANTICS.md`` quoting AWS's wording, and a test that fails on plain moto. ``IMGREC_STRICT_AWS=off``
turns every one of them off. Tests and benches raise a lag or inject a failure for their own resources at run
time through ``client`` (a route of ours on the moto server, scoped by resource-name prefix).
"""

from __future__ import annotations

import importlib
import logging

from infra.local.strict.settings import StrictSettings

log = logging.getLogger(__name__)

# Module name -> (what it emulates, the setting that tunes it). Order is the order they are patched in.
BEHAVIOURS: dict[str, tuple[str, str]] = {
    "sqs_counts": ("SQS approximate counts from a periodic snapshot", "sqs_count_lag_s"),
    "ec2_visibility": ("new EC2 instances and images invisible for a lag", "ec2_lag_s"),
    "ec2_idempotency": ("RunInstances ClientToken idempotency", "ec2_idempotency"),
    "cloudwatch_resolution": ("CloudWatch storage resolution, Period and StartTime rules", "cw_resolution"),
    "cloudwatch_ingest": ("CloudWatch ingest delay", "cw_ingest_delay_s"),
    "sqs_tombstones": ("a deleted SQS queue lingers: sends lost, name not reusable", "sqs_tombstone_s"),
    "ddb_gsi_lag": ("DynamoDB global secondary index reads lag the table", "ddb_gsi_lag_s"),
    "ddb_unprocessed": ("DynamoDB BatchGetItem leaves keys unprocessed", "ddb_unprocessed"),
    "iam_conditions": ("IAM conditions judged against AWS's request context", "iam_conditions"),
    "iam_run_instances": ("RunInstances authorised per resource, with the CreateTags it implies",
                          "iam_run_instances"),
    "s3_missing_key": ("S3 missing key 403 without s3:ListBucket", "s3_missing_key"),
    "unsigned": ("unsigned requests answered as AWS does under IAM enforcement", "unsigned"),
}


def apply(settings: StrictSettings | None = None) -> list[str]:
    """Install the control route and, unless switched off, every behaviour (in the moto server process)."""
    from infra.local.strict import context, control

    settings = settings or StrictSettings.from_env()
    state = control.install(settings)
    control.wrap_dispatcher()
    if not settings.on:
        log.info("strict AWS emulation off (IMGREC_STRICT_AWS=off): plain moto")
        return []
    context.install()  # which client call a thread serves; injected faults
    for name in BEHAVIOURS:
        importlib.import_module(f"{__name__}.{name}").apply(state)
    log.info("strict AWS emulation on: %s", summary(settings))
    return list(BEHAVIOURS)


def summary(settings: StrictSettings) -> str:
    """One line saying which behaviours are on and their defaults (what `make run` prints)."""
    return describe(settings.on, settings.values())


def describe(enabled: bool, values: dict[str, object]) -> str:
    """``summary`` from a server's reported state (``client.state``): what it actually runs, a line each."""
    if not enabled:
        return "off (IMGREC_STRICT_AWS=off: plain moto)"
    lines = ["on (IMGREC_STRICT_AWS=off for plain moto; docs/AWS-SEMANTICS.md)"]
    for what, key in BEHAVIOURS.values():
        lines.append(f"  {what}: {_shown(key, values[key])}")
    lines.append("  injected failures: on demand (infra.local.strict.client)")
    return "\n".join(lines)


def _shown(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if key.endswith("_s"):
        return f"{value:g} s"
    return f"{value:g}" if value else "on demand"
