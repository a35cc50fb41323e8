"""moto 5.2's CloudFormation creates a bucket without its ``VersioningConfiguration`` and
``PublicAccessBlockConfiguration`` (it applies only ``BucketEncryption`` and ``Tags``), corrected in our launcher.

AWS: "VersioningConfiguration: Enables multiple versions of all objects in this bucket" and
"PublicAccessBlockConfiguration: Configuration that defines how Amazon S3 handles public access"
(https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-s3-bucket.html).
Our intake and worker rely on versioning (the worker reads the exact version the web tier stored), and the
buckets' privacy is part of the stack: a bucket made from the template must have both, on create and on
an update that changes them.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)
_applied = False


def _apply_settings(bucket_name: str, properties: dict, account_id: str, region_name: str) -> None:
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    backend = s3_backends[account_id][get_partition(region_name)]
    versioning = (properties.get("VersioningConfiguration") or {}).get("Status")
    if versioning:
        backend.put_bucket_versioning(bucket_name, versioning)
    block = properties.get("PublicAccessBlockConfiguration")
    if block:
        backend.put_public_access_block(bucket_name, {k: str(v).lower() for k, v in block.items()})


def _create(original):
    @functools.wraps(original)
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        bucket = original.__func__(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        _apply_settings(bucket.name, cloudformation_json.get("Properties", {}), account_id, region_name)
        return bucket

    return classmethod(create_from_cloudformation_json)


def _update(original):
    @functools.wraps(original)
    def update_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                                        region_name):
        bucket = original.__func__(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                                   region_name)
        _apply_settings(bucket.name, cloudformation_json.get("Properties", {}), account_id, region_name)
        return bucket

    return classmethod(update_from_cloudformation_json)


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.s3.models import FakeBucket

    FakeBucket.create_from_cloudformation_json = _create(FakeBucket.__dict__["create_from_cloudformation_json"])
    FakeBucket.update_from_cloudformation_json = _update(FakeBucket.__dict__["update_from_cloudformation_json"])
    _applied = True
    log.debug("moto fix applied: CloudFormation buckets get their versioning and public access block")
