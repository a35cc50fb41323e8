"""S3 answers a missing object 404 only to a caller that may list the bucket; anyone else gets 403.

AWS (GetObject and HeadObject, Permissions): "If the object you request doesn't exist, the error that Amazon S3
returns depends on whether you also have the s3:ListBucket permission. If you have the s3:ListBucket permission on
the bucket, Amazon S3 returns an HTTP status code 404 Not Found error. If you don't have the s3:ListBucket
permission, Amazon S3 returns an HTTP status code 403 Forbidden error."
https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html

moto answers 404 NoSuchKey to everyone, so a role without ListBucket passes every local test while on AWS its
"missing input" is an AccessDenied it cannot tell from a real denial (the worker then retried it to the
dead-letter queue). Here (``IMGREC_STRICT_S3_MISSING_KEY``, on, for the bucket's name), with IAM enforced, a
GetObject or HeadObject of a key that has no version in the bucket answers 403 AccessDenied unless the
caller's policies allow ``s3:ListBucket`` on the bucket. Without IAM enforcement every caller may list, so 404.
"""

from __future__ import annotations

from infra.local.strict.control import StrictState

KEY = "s3_missing_key"


def apply(state: StrictState) -> None:
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import S3IAMRequest
    from moto.s3.exceptions import MissingKey, MissingVersion, S3AccessDeniedError
    from moto.s3.responses import S3Response
    from moto.utilities.utils import get_partition

    def may_list(self, bucket: str) -> bool:
        """Whether the caller's policies allow s3:ListBucket on ``bucket`` (moto's evaluation, our corrections)."""
        try:
            request = S3IAMRequest(account_id=self.current_account, method="GET", path=f"/{bucket}", data={},
                                   body=b"", headers=self.headers, action="ListBucket")
            request.check_action_permitted(f"arn:{get_partition(self.region)}:s3:::{bucket}")
            return True
        except Exception:  # noqa: BLE001 - denied (moto raises its HTTP errors)
            return False

    def hidden(self, bucket: str, key: str) -> bool:
        """A missing key the caller may not learn is missing."""
        if ActionAuthenticatorMixin.request_count < moto_settings.INITIAL_NO_AUTH_ACTION_COUNT:
            return False  # IAM not enforced: everyone may list
        if not state.value(KEY, (bucket,)):
            return False
        try:
            versions = self.backend.get_bucket(bucket).keys.getlist(key, [])
        except Exception:  # noqa: BLE001 - no such bucket: moto's own answer stands
            return False
        return not versions and not may_list(self, bucket)

    get_key, head_object = S3Response._get_key, S3Response.head_object

    def _get_key(self, *args, **kwargs):
        try:
            return get_key(self, *args, **kwargs)
        except (MissingKey, MissingVersion):
            if hidden(self, self.bucket_name, self.parse_key_name()):
                raise S3AccessDeniedError() from None
            raise

    def head_object_hidden(self, bucket_name, query, key_name, headers):
        status, response_headers, body = head_object(self, bucket_name, query, key_name, headers)
        if status == 404 and hidden(self, bucket_name, key_name):
            return 403, response_headers, body
        return status, response_headers, body

    S3Response._get_key = _get_key
    S3Response.head_object = head_object_hidden
