"""The one place boto3 clients are made.

Clients are created on demand, never at import (moto's docs: a client made at
import time escapes the mock). Every client honours ``AWS_ENDPOINT_URL`` through
the settings, uses botocore's own retry modes, and has a connection pool sized
for the thread counts the tiers run.

Credentials, in order: ``credentials=`` given by the caller; a process given
container credentials (``AWS_CONTAINER_CREDENTIALS_FULL_URI``: an instance's role, on
AWS from ECS, locally from the stack's credential server) uses those and nothing
else; against a local endpoint, the local stack's administrator keys
(``<data dir>/aws/credentials``, written by `make run` for that endpoint), then keys
in the environment, then the constant ``testing`` pair a permissive moto accepts; on
real AWS, boto3's own chain.
"""

from __future__ import annotations

import configparser
import os
import threading
from pathlib import Path

import boto3
import botocore.credentials
import botocore.session
from botocore.config import Config

from infra.config import Settings

# A permissive moto accepts any credentials; real AWS must find its own (env, profile, role).
_LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
CONTAINER_CREDENTIALS_URI_VAR = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
CONTAINER_CREDENTIALS_TOKEN_VAR = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
LOCAL_AWS_DIR = "aws"  # under the data dir: `credentials` and `config`, as the AWS CLI reads them
_session_lock = threading.Lock()
DEFAULT_READ_TIMEOUT_S = 60.0
_sessions: dict[bool, boto3.session.Session] = {}


def _shared_session() -> boto3.session.Session:
    """One boto3 session per process tree: a new session re-parses botocore's service models
    (measured: 269 ms CPU for 4 clients vs 48 ms from a warm session). A session holds no
    sockets (clients own their pools), so a forked worker reuses its parent's warm one."""
    container = bool(os.environ.get(CONTAINER_CREDENTIALS_URI_VAR))
    if container not in _sessions:
        _sessions[container] = _container_session() if container else boto3.session.Session()
    return _sessions[container]


def _container_session() -> boto3.session.Session:
    """A session whose only credentials are the container provider's: a process on an instance
    has its role and nothing else (boto3's default chain would prefer keys in the environment or
    a ~/.aws profile of the person who started it)."""
    core = botocore.session.get_session()
    core.register_component("credential_provider",
                            botocore.credentials.CredentialResolver([botocore.credentials.ContainerProvider()]))
    return boto3.session.Session(botocore_session=core)


def local_aws_files(settings: Settings) -> tuple[Path, Path]:
    """(credentials, config): the local stack's administrator keys as a standard AWS shared-credentials file."""
    folder = Path(settings.data_dir) / LOCAL_AWS_DIR
    return folder / "credentials", folder / "config"


def local_admin_credentials(settings: Settings) -> dict | None:
    """The running local stack's administrator keys, when ``settings`` point at that stack's endpoint."""
    if not settings.is_local:
        return None
    cred_file, config_file = local_aws_files(settings)
    config, creds = configparser.ConfigParser(), configparser.ConfigParser()
    try:
        config.read_string(config_file.read_text())
        creds.read_string(cred_file.read_text())
        endpoint = config.get("default", "endpoint_url", fallback="")
        key, secret = creds.get("default", "aws_access_key_id"), creds.get("default", "aws_secret_access_key")
    except (OSError, configparser.Error):
        return None
    if endpoint.rstrip("/") != settings.endpoint_url.rstrip("/"):
        return None  # keys of another endpoint's stack
    return {"aws_access_key_id": key, "aws_secret_access_key": secret}


def _local_credentials(settings: Settings) -> dict:
    if os.environ.get(CONTAINER_CREDENTIALS_URI_VAR):
        return {}
    admin = local_admin_credentials(settings)
    if admin:
        return admin
    return {} if _has_env_credentials() else dict(_LOCAL_CREDENTIALS)


def _after_fork_in_child() -> None:
    global _session_lock
    _session_lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def botocore_config(settings: Settings, *, pool: int | None = None, read_timeout: float | None = None) -> Config:
    """``read_timeout`` None: long enough to outlast an SQS long poll; a caller that sets one
    (a 5 s health check) gets exactly that."""
    return Config(
        region_name=settings.region,
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        max_pool_connections=pool or settings.max_pool_connections,
        connect_timeout=5,
        read_timeout=max(DEFAULT_READ_TIMEOUT_S, settings.receive_wait_s + 10) if read_timeout is None else read_timeout,
        s3={"addressing_style": "path"} if settings.is_local else None,
    )


def make_client(service: str, settings: Settings, *, pool: int | None = None, read_timeout: float | None = None,
                credentials: dict | None = None):
    """A boto3 client for ``service`` configured from ``settings``; ``credentials`` (boto3's
    ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``) override the lookup."""
    if credentials:
        kwargs = dict(credentials)
    else:
        kwargs = _local_credentials(settings) if settings.is_local else {}
    # Session.client() is not thread-safe; clients themselves are.
    with _session_lock:
        return _shared_session().client(
            service,
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=botocore_config(settings, pool=pool, read_timeout=read_timeout),
            **kwargs,
        )


def _has_env_credentials() -> bool:
    return bool(os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))


class Clients:
    """Lazily made clients for one process, shared by its threads."""

    def __init__(self, settings: Settings, *, pool: int | None = None, credentials: dict | None = None):
        self.settings = settings
        self._pool = pool
        self._credentials = credentials
        self._made: dict[str, object] = {}
        self._lock = threading.Lock()

    def _get(self, service: str):
        with self._lock:
            if service not in self._made:
                self._made[service] = make_client(service, self.settings, pool=self._pool,
                                                  credentials=self._credentials)
            return self._made[service]

    @property
    def s3(self):
        return self._get("s3")

    @property
    def sqs(self):
        return self._get("sqs")

    @property
    def dynamodb(self):
        return self._get("dynamodb")

    @property
    def ec2(self):
        return self._get("ec2")

    @property
    def cloudwatch(self):
        return self._get("cloudwatch")

    @property
    def iam(self):
        return self._get("iam")

    @property
    def cloudformation(self):
        return self._get("cloudformation")

    @property
    def autoscaling(self):
        return self._get("autoscaling")

    @property
    def sts(self):
        return self._get("sts")
