"""Instance-profile credentials for local processes: the EC2 instance-metadata service's job, on loopback.

On AWS a process on an instance gets its instance profile's role credentials from the
metadata service, which assumes the role for it and refreshes them before they expire.
Locally ``CredentialServer`` does the same over HTTP on 127.0.0.1, in the format of
boto3's container-credentials provider (the ECS one), backed by ``sts:AssumeRole`` on
moto with the keys of the stack's EC2 stand-in user (``infra.local.moto_iam``).

Interface (for the local stack and the instance runner)::

    server = CredentialServer(settings, sts).start()   # sts: a client with the EC2 stand-in's keys
    server = CredentialServer.for_stack(settings).start()   # or: in another process, keys from <data>/aws
    role = profile_role(admin_iam, instance["IamInstanceProfile"]["Arn"])   # infra.local.account
    env = server.env_for_role("imgrec-app-role", session_name="i-0abc")   # vars to add
    child_env = {**without_credentials(os.environ), **env}                # a process that has only that role
    ...
    server.stop()

``env_for_role`` returns ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (``http://127.0.0.1:<port>/role/<role>/<session>``)
and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` (a random token that opens only that URL).
``infra.clients`` then uses those credentials and nothing else. Each answer has at
least ``refresh_margin_s`` left; botocore asks again 15 minutes before expiry, and the
server assumes the role again when its copy has less than the margin left.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from infra.clients import CONTAINER_CREDENTIALS_TOKEN_VAR, CONTAINER_CREDENTIALS_URI_VAR
from infra.config import Settings

log = logging.getLogger(__name__)

DEFAULT_DURATION_S = 3600  # what EC2 hands out: about an hour
DEFAULT_REFRESH_MARGIN_S = 20 * 60  # more than botocore's 15-minute advisory refresh, so it never refreshes in vain
MIN_DURATION_S = 900  # STS's minimum
SHUTDOWN_POLL_S = 0.05  # how soon stop() returns (http.server's default is 0.5 s)
# Variables that would give a process credentials other than its role's.
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                   CONTAINER_CREDENTIALS_URI_VAR, CONTAINER_CREDENTIALS_TOKEN_VAR,
                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")


def without_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less every variable that carries or points at AWS credentials."""
    return {k: v for k, v in env.items() if k not in CREDENTIAL_VARS}


@dataclass(frozen=True)
class RoleCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: float  # unix time

    def as_container_response(self, account: str) -> dict:
        """The JSON botocore's ContainerProvider reads."""
        return {"AccessKeyId": self.access_key_id, "SecretAccessKey": self.secret_access_key,
                "Token": self.session_token, "AccountId": account,
                "Expiration": datetime.fromtimestamp(self.expiration, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


class CredentialServer:
    """Serves role credentials on 127.0.0.1 to the processes given a token for them."""

    def __init__(self, settings: Settings, sts, *, host: str = "127.0.0.1", port: int = 0,
                 duration_s: int = DEFAULT_DURATION_S, refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
                 clock: Callable[[], float] = time.time):
        if duration_s < MIN_DURATION_S or refresh_margin_s >= duration_s:
            raise ValueError(f"duration_s must be >= {MIN_DURATION_S} and larger than refresh_margin_s")
        self.settings, self.sts = settings, sts
        self.host, self.port = host, port
        self.duration_s, self.refresh_margin_s, self.clock = duration_s, refresh_margin_s, clock
        self._tokens: dict[tuple[str, str], str] = {}  # (role, session) -> token
        self._cache: dict[tuple[str, str], RoleCredentials] = {}
        self._lock = threading.Lock()
        self._account: str | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.assumed = 0  # AssumeRole calls made

    @classmethod
    def for_stack(cls, settings: Settings, **options) -> CredentialServer:
        """A server in any process, signing with the EC2 stand-in's keys the running local stack wrote."""
        from infra.clients import make_client
        from infra.local.account import ec2_service_credentials

        keys = ec2_service_credentials(settings)
        if keys is None:
            raise RuntimeError(f"no EC2 stand-in keys under {settings.data_dir}/aws: is the local stack running?")
        return cls(settings, make_client("sts", settings, credentials=keys), **options)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> CredentialServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                status, body = server.answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *args):
                log.debug("credential server: %s", fmt % args)

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(SHUTDOWN_POLL_S,),
                                        name="credential-server", daemon=True)
        self._thread.start()
        log.info("credential server on %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
            log.info("credential server on %s stopped", self.url)

    def __enter__(self) -> CredentialServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env_for_role(self, role_name: str, session_name: str | None = None) -> dict[str, str]:
        """Environment variables that give a process ``role_name``'s credentials (and only those)."""
        session = session_name or f"{self.settings.prefix}-local"
        with self._lock:
            token = self._tokens.setdefault((role_name, session), secrets.token_urlsafe(24))
        return {CONTAINER_CREDENTIALS_URI_VAR: f"{self.url}/role/{quote(role_name)}/{quote(session)}",
                CONTAINER_CREDENTIALS_TOKEN_VAR: token}

    def answer(self, path: str, token: str) -> tuple[int, dict]:
        """(HTTP status, JSON body) for a GET of ``path`` with ``token``."""
        parts = path.split("/")
        if len(parts) != 4 or parts[1] != "role":
            return 404, {"message": "use /role/<role>/<session>"}
        key = (unquote(parts[2]), unquote(parts[3]))
        with self._lock:
            expected = self._tokens.get(key)
        if expected is None or not secrets.compare_digest(expected, token):
            log.warning("credential server: refused %s (unknown role/session or wrong token)", path)
            return 403, {"message": "wrong token for this role"}
        try:
            creds = self.credentials(*key)
        except (ClientError, BotoCoreError) as err:
            return 502, {"message": f"AssumeRole {key[0]} failed: {err}"}
        return 200, creds.as_container_response(self._account or "")

    def credentials(self, role_name: str, session_name: str) -> RoleCredentials:
        """The cached credentials, assumed again when less than the refresh margin is left."""
        key = (role_name, session_name)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.expiration - self.clock() > self.refresh_margin_s:
                return cached
            fresh = self._assume(role_name, session_name)
            self._cache[key] = fresh
            return fresh

    def _assume(self, role_name: str, session_name: str) -> RoleCredentials:
        if self._account is None:
            self._account = self.sts.get_caller_identity()["Account"]
        from infra.local.account import role_arn

        arn = role_arn(self._account, role_name)
        try:
            got = self.sts.assume_role(RoleArn=arn, RoleSessionName=session_name,
                                       DurationSeconds=self.duration_s)["Credentials"]
        except ClientError:
            log.error("assume_role %s (session %s) failed", arn, session_name)
            raise
        self.assumed += 1
        expiration = got["Expiration"].timestamp()
        log.info("assumed %s for session %s (key %s, until %s)", role_name, session_name, got["AccessKeyId"],
                 time.strftime("%H:%M:%S", time.localtime(expiration)))
        return RoleCredentials(got["AccessKeyId"], got["SecretAccessKey"], got["SessionToken"], expiration)
