"""Under IAM enforcement, a request without a signature (or with a malformed one) gets AWS's error, not a crash.

AWS (Common Errors): "MissingAuthenticationToken: The request must contain either a valid (registered) AWS
access key ID or X.509 certificate. HTTP Status Code: 403" and "IncompleteSignature: The request signature does
not conform to AWS standards. HTTP Status Code: 400".
https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/CommonErrors.html (the errors common to all services);
S3 answers an anonymous request to a private bucket 403 ``AccessDenied`` and a malformed Authorization header
400 ``AuthorizationHeaderMalformed`` ("The authorization header you provided is invalid.")
https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html

moto, with IAM enforced, reads the Authorization header unconditionally: an unsigned request (``curl
http://127.0.0.1:4566/``) or one whose header has no SigV4 credential scope answers 500 with an HTML page and
logs a 60-line traceback. Here (``IMGREC_STRICT_UNSIGNED``, on) it answers the service's own error document:
403 ``MissingAuthenticationToken`` (S3: 403 ``AccessDenied``), or 400 ``IncompleteSignature`` (S3: 400
``AuthorizationHeaderMalformed``), and logs one line. A wrong signature was already 403 ``SignatureDoesNotMatch``
in moto. Presigned URLs (the signature in the query string) go to moto as before. Without IAM enforcement
(moto's permissive mode) nothing changes: nobody checks signatures there.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlparse

from infra.local.strict.control import StrictState

log = logging.getLogger(__name__)
KEY = "unsigned"
_SCOPE = re.compile(r"Credential=[^/\s,]+/\d{8}/[^/\s,]+/[^/\s,]+/aws4_request")


def signature_problem(headers, url: str) -> str | None:
    """``missing``, ``malformed`` or None for a request that carries a well-formed SigV4 signature (pure)."""
    query = parse_qs(urlparse(url).query)
    if "X-Amz-Credential" in query or "X-Amz-Signature" in query:
        return None  # presigned: moto's own checks
    auth = headers.get("Authorization") or ""
    if not auth:
        return "missing"
    if not auth.startswith("AWS4-HMAC-SHA256") or not _SCOPE.search(auth) or "Signature=" not in auth:
        return "malformed"
    return None


def apply(state: StrictState) -> None:
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import JsonRESTError
    from moto.core.exceptions import _RESTError as RESTError
    from moto.iam.access_control import S3IAMRequest
    from moto.s3.exceptions import S3AccessDeniedError, S3ClientError

    class MissingToken(RESTError):
        code = 403

        def __init__(self) -> None:
            super().__init__("MissingAuthenticationToken", "Request is missing Authentication Token")

    class JsonMissingToken(JsonRESTError):
        code = 403

        def __init__(self) -> None:
            super().__init__("MissingAuthenticationToken", "Request is missing Authentication Token")

    class Incomplete(RESTError):
        code = 400

        def __init__(self) -> None:
            super().__init__("IncompleteSignature", "The request signature does not conform to AWS standards.")

    class JsonIncomplete(JsonRESTError):
        code = 400

        def __init__(self) -> None:
            super().__init__("IncompleteSignature", "The request signature does not conform to AWS standards.")

    class S3Malformed(S3ClientError):
        def __init__(self) -> None:
            super().__init__("AuthorizationHeaderMalformed", "The authorization header you provided is invalid.")

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate(self, iam_request_cls: type, resource: str = "*") -> None:
        enforced = ActionAuthenticatorMixin.request_count >= moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
        if enforced and state.value(KEY, (resource,)):
            problem = signature_problem(self.headers, getattr(self, "uri", "") or "")
            if problem is not None:
                s3 = iam_request_cls is S3IAMRequest
                as_json = bool(self.headers.get("X-Amz-Target"))
                log.info("%s signature on %s %s: answered as AWS does", problem, self.method,
                         urlparse(getattr(self, "uri", "") or "").path or "/")
                if problem == "missing":
                    raise S3AccessDeniedError() if s3 else JsonMissingToken() if as_json else MissingToken()
                raise S3Malformed() if s3 else JsonIncomplete() if as_json else Incomplete()
        return original(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate
