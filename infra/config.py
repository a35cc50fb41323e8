"""One configuration object for every tier, parsed from the environment.

Every setting has a named default below and an environment variable; the README's
configuration table lists them all. Invalid values fail at start-up with a
``ConfigError`` that names the variable, so a typo never surfaces as a confusing
AWS error minutes later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_REGION = "us-east-1"
DEFAULT_PREFIX = "imgrec"
DEFAULT_WEB_INSTANCE_NAME = "web-instance"
DEFAULT_APP_INSTANCE_PREFIX = "app-tier-instance"
# Scaling profiles (README "Scaling"): `work` sizes the fleet by measured work, `course` keeps one instance per
# few messages (what the course's grader expects). Each profile gives defaults to the settings it shapes; a
# variable that is set wins over its profile.
SCALING_PROFILES = ("work", "course")
DEFAULT_SCALING = "work"
PROFILE_DEFAULTS: dict[str, dict[str, float]] = {
    "work": {"min_instances": 1, "max_instances": 19, "scale_in_window_s": 10.0},
    "course": {"min_instances": 0, "max_instances": 15, "scale_in_window_s": 2.0},
}
DEFAULT_LATENCY_TARGET_S = 45.0
# Until the controller has measured its own fleet: AWS-like guesses (README "Scaling" cites them).
DEFAULT_BOOT_ESTIMATE_S = 40.0
DEFAULT_RATE_ESTIMATE = 25.0
DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_RUNTIME = "onnx"  # onnxruntime: ~120 MB RSS per worker after loading instead of ~790 MB with torch (README "Runtimes")
RUNTIMES = ("onnx", "torch")
DEFAULT_MODEL_DIR = ""  # empty: `<data dir>/models`
DEFAULT_MAX_HOLD_S = 900  # 15 min: far above any real batch, far below SQS's 12 h visibility cap
DEFAULT_MODEL_URI = ""  # empty: no download at boot (local, or the torch runtime)
# The model artifact: `<models dir>/<model>/` locally, `<IMGREC_MODEL_URI>` (an S3 prefix) on AWS.
ARTIFACT_MODEL_FILE = "model.onnx"
ARTIFACT_MANIFEST_FILE = "manifest.json"


def artifact_dir(models_dir: str | os.PathLike, model: str) -> str:
    """Where a model's artifact lives: ``<models dir>/<model>/``. One definition for all who read it: the
    build (`make install`), the local stack's workers and AMI, and deploy, which uploads exactly this one."""
    return os.path.join(models_dir, model)


def file_sha256(path) -> str:
    """The artifact's checksum, as the manifest records it; one definition for the worker and deploy."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
DEFAULT_REQUEST_TIMEOUT_S = 300.0
DEFAULT_VISIBILITY_TIMEOUT_S = 60
DEFAULT_RECEIVE_WAIT_S = 20
DEFAULT_MAX_RECEIVE_COUNT = 3
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_POOL_CONNECTIONS = 64
DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_TARGET_BACKLOG_PER_INSTANCE = 5
DEFAULT_TORCH_THREADS = 1
DEFAULT_WORKER_BATCH_SIZE = 10
DEFAULT_WEB_HOST = "127.0.0.1"
DEFAULT_WEB_PORT = 8000
DEFAULT_WEB_THREADS = 256
DEFAULT_WEB_PROCESSES = 2
DEFAULT_REPLY_QUEUE = "shared"
DEFAULT_REPLY_HEARTBEAT_S = 10.0
DEFAULT_CONTROLLER_LEASE_S = 15.0
DEFAULT_DATA_DIR = ".data"
DEFAULT_INSTANCE_TYPE = "t3.micro"
DEFAULT_AMI_ID = "ami-12c6146b"  # moto ships this id; deploy/bake resolve the latest Amazon Linux 2023 instead
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_LOCAL_ISOLATION = "auto"
LOCAL_ISOLATION_MODES = ("auto", "off")
DEFAULT_METRICS_NAMESPACE = "ImgRec"
DEFAULT_LOCAL_IAM = "on"  # the local stack's moto checks signatures and IAM policies
LOCAL_IAM_MODES = ("on", "off")

# Where `make run` serves its moto; tools outside the stack look here when no endpoint is set.
LOCAL_ENDPOINT = "http://127.0.0.1:4566"
MAX_QUEUE_MESSAGE_BYTES = 1024
REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
# S3 bucket names: 3-63 chars, lowercase letters, digits, dots, hyphens.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# An S3 prefix; it reaches a systemd ExecStart line, so no spaces, quotes or `$`.
MODEL_URI_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9._/-]*$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
RETRY_MODES = ("standard", "adaptive", "legacy")
REPLY_QUEUE_MODES = ("shared", "own")
REPLY_STALE_BEATS = 6  # a reply queue whose heartbeat is this many beats old has lost its owner
# Resource names that default to `<prefix>-<suffix>` unless set.
DERIVED_SUFFIXES = {"in_bucket": "in-bucket", "out_bucket": "out-bucket", "req_queue": "req-queue",
                    "resp_queue": "resp-queue", "dlq": "req-dlq", "jobs_table": "jobs"}


class ConfigError(ValueError):
    """A setting from the environment is missing or invalid; the message names it."""


def env_field(var: str, default, doc: str, *, profile: bool = False):
    """A settings field read from environment variable ``var``; ``doc`` goes into the README table.
    ``profile``: unset means the scaling profile's default (``PROFILE_DEFAULTS``)."""
    return field(default=default, metadata={"env": var, "doc": doc, "profile": profile})


_env_field = env_field


@dataclass(frozen=True)
class Settings:
    region: str = _env_field("AWS_REGION", DEFAULT_REGION, "AWS region (AWS_DEFAULT_REGION is read too)")
    endpoint_url: str | None = _env_field(
        "AWS_ENDPOINT_URL", None, "AWS endpoint; unset means real AWS, `make run` sets http://127.0.0.1:4566"
    )
    prefix: str = _env_field("IMGREC_PREFIX", DEFAULT_PREFIX, "name prefix of every resource")
    in_bucket: str = _env_field("IMGREC_IN_BUCKET", "", "input bucket (default `<prefix>-in-bucket`)")
    out_bucket: str = _env_field("IMGREC_OUT_BUCKET", "", "output bucket (default `<prefix>-out-bucket`)")
    req_queue: str = _env_field("IMGREC_REQ_QUEUE", "", "request queue (default `<prefix>-req-queue`)")
    resp_queue: str = _env_field("IMGREC_RESP_QUEUE", "", "response queue (default `<prefix>-resp-queue`)")
    dlq: str = _env_field("IMGREC_DLQ", "", "dead-letter queue (default `<prefix>-req-dlq`)")
    jobs_table: str = _env_field(
        "IMGREC_JOBS_TABLE", "", "DynamoDB table of job state and leases (default `<prefix>-jobs`)"
    )
    web_instance_name: str = _env_field("IMGREC_WEB_INSTANCE_NAME", DEFAULT_WEB_INSTANCE_NAME, "Name tag of the web instance")
    app_instance_prefix: str = _env_field(
        "IMGREC_APP_INSTANCE_PREFIX", DEFAULT_APP_INSTANCE_PREFIX, "app instances are tagged `Name=<this>-<n>`"
    )
    scaling: str = _env_field(
        "IMGREC_SCALING", DEFAULT_SCALING,
        "scaling profile: `work` sizes the fleet by measured work within IMGREC_LATENCY_TARGET, `course` keeps "
        "one instance per IMGREC_TARGET_BACKLOG messages (0 to 15, the course grader's)",
    )
    min_instances: int | None = _env_field(
        "IMGREC_MIN_INSTANCES", None, "fewest app-tier instances (0 allowed); unset: work 1, course 0", profile=True)
    max_instances: int | None = _env_field(
        "IMGREC_MAX_INSTANCES", None, "most app-tier instances; unset: work 19, course 15", profile=True)
    model: str = _env_field("IMGREC_MODEL", DEFAULT_MODEL, "classifier model name")
    runtime: str = _env_field(
        "IMGREC_RUNTIME", DEFAULT_RUNTIME, "worker inference runtime: `onnx` (no torch in the worker) or `torch` (reference, CUDA)"
    )
    model_dir: str = _env_field(
        "IMGREC_MODEL_DIR", DEFAULT_MODEL_DIR, "ONNX artifacts, `<dir>/<model>/model.onnx` + `manifest.json` (default `<data dir>/models`)"
    )
    max_hold_s: int = _env_field(
        "IMGREC_MAX_HOLD_S", DEFAULT_MAX_HOLD_S, "a worker stops extending a message's visibility after holding it this long (s)"

    )
    model_uri: str = _env_field(
        "IMGREC_MODEL_URI", DEFAULT_MODEL_URI,
        "S3 prefix an app instance fetches and verifies its artifact from at boot (set by deploy); empty: none",
    )
    request_timeout_s: float = _env_field(
        "IMGREC_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT_S, "seconds a synchronous `POST /` waits before 504"
    )
    visibility_timeout_s: int = _env_field(
        "IMGREC_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_S, "request-queue visibility timeout (s)"
    )
    receive_wait_s: int = _env_field("IMGREC_RECEIVE_WAIT", DEFAULT_RECEIVE_WAIT_S, "SQS long-poll wait (s, 0-20)")
    max_receive_count: int = _env_field(
        "IMGREC_MAX_RECEIVE_COUNT", DEFAULT_MAX_RECEIVE_COUNT, "receives before a message goes to the DLQ"
    )
    max_upload_bytes: int = _env_field("IMGREC_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES, "largest accepted upload")
    retry_mode: str = _env_field("IMGREC_RETRY_MODE", DEFAULT_RETRY_MODE, "botocore retry mode")
    max_attempts: int = _env_field("IMGREC_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, "botocore max attempts per call")
    max_pool_connections: int = _env_field(
        "IMGREC_MAX_POOL_CONNECTIONS", DEFAULT_MAX_POOL_CONNECTIONS, "HTTP connections per boto3 client"
    )
    poll_interval_s: float = _env_field("IMGREC_POLL_INTERVAL", DEFAULT_POLL_INTERVAL_S, "controller loop period (s)")
    target_backlog_per_instance: int = _env_field(
        "IMGREC_TARGET_BACKLOG", DEFAULT_TARGET_BACKLOG_PER_INSTANCE, "course profile: messages per app instance"
    )
    scale_in_window_s: float | None = _env_field(
        "IMGREC_SCALE_IN_WINDOW", None, "the need must stay lower this long before scale-in (s); unset: work 10, "
        "course 2", profile=True,
    )
    latency_target_s: float = _env_field(
        "IMGREC_LATENCY_TARGET", DEFAULT_LATENCY_TARGET_S,
        "work profile: launch only what drains the backlog within this many seconds at the least instance-time",
    )
    boot_estimate_s: float = _env_field(
        "IMGREC_BOOT_ESTIMATE", DEFAULT_BOOT_ESTIMATE_S,
        "work profile: launch-to-first-image seconds assumed until the controller has measured one",
    )
    rate_estimate: float = _env_field(
        "IMGREC_RATE_ESTIMATE", DEFAULT_RATE_ESTIMATE,
        "work profile: images/s one instance is assumed to serve until the controller has measured it",
    )
    torch_threads: int = _env_field(
        "IMGREC_TORCH_THREADS", DEFAULT_TORCH_THREADS, "inference threads per worker process (torch or onnxruntime)"
    )
    worker_batch_size: int = _env_field("IMGREC_BATCH_SIZE", DEFAULT_WORKER_BATCH_SIZE, "messages per receive (1-10)")
    web_host: str = _env_field("IMGREC_WEB_HOST", DEFAULT_WEB_HOST, "web tier bind address")
    web_port: int = _env_field("IMGREC_WEB_PORT", DEFAULT_WEB_PORT, "web tier port")
    web_threads: int = _env_field("IMGREC_WEB_THREADS", DEFAULT_WEB_THREADS, "web tier worker threads")
    web_processes: int = _env_field(
        "IMGREC_WEB_PROCESSES", DEFAULT_WEB_PROCESSES,
        "web processes sharing the web port (SO_REUSEPORT); `make run` starts this many",
    )
    reply_queue: str = _env_field(
        "IMGREC_REPLY_QUEUE", DEFAULT_REPLY_QUEUE,
        "a web process's reply queue: `shared` = the response queue unless a live process holds it, "
        "`own` = its own `<prefix>-reply-<id>`",
    )
    reply_heartbeat_s: float = _env_field(
        "IMGREC_REPLY_HEARTBEAT", DEFAULT_REPLY_HEARTBEAT_S,
        "seconds between reply-queue heartbeats; the controller reaps one silent for 6 of them",
    )
    controller_lease_s: float = _env_field(
        "IMGREC_CONTROLLER_LEASE", DEFAULT_CONTROLLER_LEASE_S,
        "seconds a controller's lease lasts unrenewed (one controller acts per stack)",
    )
    data_dir: str = _env_field("IMGREC_DATA_DIR", DEFAULT_DATA_DIR, "local state (pid files, `make run` logs, model artifacts)")
    local_isolation: str = _env_field(
        "IMGREC_LOCAL_ISOLATION", DEFAULT_LOCAL_ISOLATION,
        "local instances: `auto` uses namespaces and memory cgroups where allowed, `off` none (said at start)"
    )
    instance_type: str = _env_field("IMGREC_INSTANCE_TYPE", DEFAULT_INSTANCE_TYPE, "app-tier EC2 instance type")
    ami_id: str = _env_field("IMGREC_AMI_ID", DEFAULT_AMI_ID, "app-tier AMI (local: any moto AMI)")
    launch_template: str = _env_field(
        "IMGREC_LAUNCH_TEMPLATE", "", "app-tier launch template name (set by deploy); empty: run from IMGREC_AMI_ID"
    )
    instance_id: str = _env_field(
        "IMGREC_INSTANCE_ID", "", "this worker's instance id; empty: instance metadata on AWS, `local-<pid>` locally"
    )
    imds_endpoint: str | None = _env_field(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", None,
        "instance metadata endpoint (botocore's variable); unset: 169.254.169.254 on AWS, per instance locally"
    )
    metrics_namespace: str = _env_field(
        "IMGREC_METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE, "CloudWatch namespace (dimension Stack=<prefix>)"
    )
    log_level: str = _env_field("IMGREC_LOG_LEVEL", DEFAULT_LOG_LEVEL, "logging level")
    local_iam: str = _env_field(
        "IMGREC_LOCAL_IAM", DEFAULT_LOCAL_IAM,
        "local stack: `on` makes moto check signatures and each role's IAM policies; `off`: moto's permissive defaults"
    )

    def __post_init__(self) -> None:
        # Derived names and the profile's defaults: set here so a frozen instance is complete after construction.
        for name in DERIVED_SUFFIXES:
            if not getattr(self, name):
                object.__setattr__(self, name, _derived_default(self.prefix, name))
        if self.scaling not in SCALING_PROFILES:
            raise ConfigError(f"IMGREC_SCALING={self.scaling!r}: must be one of {', '.join(SCALING_PROFILES)}")
        for name, value in PROFILE_DEFAULTS[self.scaling].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        def fail(attr: str, why: str) -> None:
            raise ConfigError(f"{_var(attr)}={getattr(self, attr)!r}: {why}")

        if not REGION_RE.match(self.region):
            fail("region", "not an AWS region name like us-east-1")
        if self.endpoint_url is not None and not re.match(r"^https?://[^\s/]+", self.endpoint_url):
            fail("endpoint_url", "must be an http(s) URL such as http://127.0.0.1:4566")
        if not PREFIX_RE.match(self.prefix):
            fail("prefix", "use 1-40 lowercase letters, digits and hyphens, starting with a letter or digit")
        for attr in ("in_bucket", "out_bucket"):
            if not BUCKET_RE.match(getattr(self, attr)):
                fail(attr, "not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)")
        if self.in_bucket == self.out_bucket:
            fail("out_bucket", "input and output buckets must differ")
        for attr in ("req_queue", "resp_queue", "dlq"):
            if not QUEUE_RE.match(getattr(self, attr)):
                fail(attr, "not a valid SQS queue name (1-80 letters, digits, hyphens, underscores)")
        if len({self.req_queue, self.resp_queue, self.dlq}) != 3:
            fail("dlq", "request, response and dead-letter queues must have different names")
        if not TABLE_RE.match(self.jobs_table):
            fail("jobs_table", "not a valid DynamoDB table name (3-255 letters, digits, . _ -)")
        if self.min_instances < 0:
            fail("min_instances", "must be >= 0")
        if not 1 <= self.max_instances <= 100:
            fail("max_instances", "must be between 1 and 100")
        if self.max_instances < self.min_instances:
            fail("max_instances", f"must be >= IMGREC_MIN_INSTANCES ({self.min_instances})")
        if self.request_timeout_s <= 0:
            fail("request_timeout_s", "must be > 0")
        if not 1 <= self.visibility_timeout_s <= 43200:
            fail("visibility_timeout_s", "must be between 1 and 43200 seconds")
        if not 0 <= self.receive_wait_s <= 20:
            fail("receive_wait_s", "must be between 0 and 20 seconds")
        if not 1 <= self.max_receive_count <= 1000:
            fail("max_receive_count", "must be between 1 and 1000")
        if self.max_upload_bytes < 1:
            fail("max_upload_bytes", "must be >= 1")
        if self.retry_mode not in RETRY_MODES:
            fail("retry_mode", f"must be one of {', '.join(RETRY_MODES)}")
        if not 1 <= self.max_attempts <= 20:
            fail("max_attempts", "must be between 1 and 20")
        if self.max_pool_connections < 1:
            fail("max_pool_connections", "must be >= 1")
        if self.poll_interval_s <= 0:
            fail("poll_interval_s", "must be > 0")
        if self.target_backlog_per_instance < 1:
            fail("target_backlog_per_instance", "must be >= 1")
        if self.scale_in_window_s < 0:
            fail("scale_in_window_s", "must be >= 0")
        if not 1 <= self.latency_target_s <= 86400:
            fail("latency_target_s", "must be between 1 and 86400 seconds")
        if not 0 <= self.boot_estimate_s <= 3600:
            fail("boot_estimate_s", "must be between 0 and 3600 seconds")
        if not 0 < self.rate_estimate <= 100000:
            fail("rate_estimate", "must be a positive number of images/s")
        if self.runtime not in RUNTIMES:
            fail("runtime", f"must be one of {', '.join(RUNTIMES)}")
        if not 1 <= self.max_hold_s <= 43200:
            fail("max_hold_s", "must be between 1 and 43200 seconds")
        if self.torch_threads < 1:
            fail("torch_threads", "must be >= 1")
        if not 1 <= self.worker_batch_size <= 10:
            fail("worker_batch_size", "must be between 1 and 10 (the SQS receive limit)")
        if not 1 <= self.web_port <= 65535:
            fail("web_port", "must be a TCP port (1-65535)")
        if self.web_threads < 1:
            fail("web_threads", "must be >= 1")
        if self.local_iam not in LOCAL_IAM_MODES:
            fail("local_iam", "must be on or off")
        if self.local_isolation not in LOCAL_ISOLATION_MODES:
            fail("local_isolation", f"must be one of {', '.join(LOCAL_ISOLATION_MODES)}")
        if self.imds_endpoint is not None and not re.match(r"^https?://[^\s/]+", self.imds_endpoint):
            fail("imds_endpoint", "must be an http(s) URL")
        if self.runtime not in RUNTIMES:
            fail("runtime", f"must be one of {', '.join(RUNTIMES)}")
        if self.model_uri and not MODEL_URI_RE.match(self.model_uri):
            fail("model_uri", "use an S3 prefix like s3://bucket/models/<model>/<sha256>/ (no spaces or quotes)")
        if not 1 <= self.web_processes <= 64:
            fail("web_processes", "must be between 1 and 64")
        if self.reply_queue not in REPLY_QUEUE_MODES:
            fail("reply_queue", f"must be one of {', '.join(REPLY_QUEUE_MODES)}")
        if not 0.1 <= self.reply_heartbeat_s <= 3600:
            fail("reply_heartbeat_s", "must be between 0.1 and 3600 seconds")
        if not 1 <= self.controller_lease_s <= 3600:
            fail("controller_lease_s", "must be between 1 and 3600 seconds")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            fail("log_level", "must be DEBUG, INFO, WARNING, ERROR or CRITICAL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Parse every field from ``env`` (default ``os.environ``); ``overrides`` win."""
        return cls(**{**values_from_env(cls, env), **overrides})

    def replace(self, **changes) -> Settings:
        """A copy with some fields changed; derived names follow a changed prefix."""
        if "prefix" in changes:
            for name in DERIVED_SUFFIXES:
                if getattr(self, name) == _derived_default(self.prefix, name):
                    changes.setdefault(name, "")
        if changes.get("scaling", self.scaling) != self.scaling:
            for name, value in PROFILE_DEFAULTS[self.scaling].items():
                if getattr(self, name) == value:
                    changes.setdefault(name, None)
        return dataclasses.replace(self, **changes)

    @property
    def queue_names(self) -> tuple[str, str, str]:
        return (self.req_queue, self.resp_queue, self.dlq)

    def app_instance_name(self, n: int) -> str:
        return f"{self.app_instance_prefix}-{n}"

    @property
    def models_dir(self) -> str:
        """Where model artifacts live: ``IMGREC_MODEL_DIR`` or ``<data dir>/models``."""
        return self.model_dir or os.path.join(self.data_dir, "models")

    @property
    def artifact_dir(self) -> str:
        """This model's artifact (``model.onnx`` + ``manifest.json``) on this machine."""
        return artifact_dir(self.models_dir, self.model)

    @property
    def local_iam_enforced(self) -> bool:
        return self.local_iam == "on"

    @property
    def reply_stale_s(self) -> float:
        return REPLY_STALE_BEATS * self.reply_heartbeat_s

    @property
    def is_local(self) -> bool:
        """True when talking to an emulator (moto) rather than real AWS."""
        return self.endpoint_url is not None

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.metadata["env"]] = str(value)
        return out


def _derived_default(prefix: str, name: str) -> str:
    return f"{prefix}-{DERIVED_SUFFIXES[name]}"


def _var(attr: str, cls: type | None = None) -> str:
    return {f.name: f.metadata["env"] for f in dataclasses.fields(cls or Settings)}[attr]


def values_from_env(cls: type, env: Mapping[str, str] | None = None) -> dict:
    """The fields of settings dataclass ``cls`` that ``env`` (default ``os.environ``) sets, parsed."""
    env = os.environ if env is None else env
    values = {}
    for f in dataclasses.fields(cls):
        var = f.metadata["env"]
        raw = env.get(var)
        if raw is None and var == "AWS_REGION":
            raw = env.get("AWS_DEFAULT_REGION")
        if raw is None or raw == "":
            continue
        values[f.name] = _parse(f, var, raw.strip())
    return values


def _parse(f: dataclasses.Field, var: str, raw: str):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    kind = kind.removesuffix(" | None")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r}: expected a {'whole number' if kind == 'int' else 'number'}") from None
    return raw


def table_rows(cls: type, *, note: str = "") -> list[tuple[str, str, str]]:
    """(variable, default, meaning) rows of settings dataclass ``cls``; ``note`` prefixes each meaning."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default
        if f.metadata.get("profile"):
            shown = "profile"
        elif default is None:
            shown = "unset"
        elif default == "":
            shown = "derived" if f.name in DERIVED_SUFFIXES else "empty"
        else:
            shown = f"`{default}`"
        rows.append((f.metadata["env"], shown, note + f.metadata["doc"]))
    return rows


def markdown_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{var}` | {default} | {doc} |" for var, default, doc in rows]
    return "\n".join(lines)


def write_readme_table(rows: list[tuple[str, str, str]], path: str = "README.md") -> None:
    """Replace the table between the README's CONFIG-TABLE markers with ``rows`` (`python -m infra readme`
    assembles them: these settings, then the deploy-only ones)."""
    with open(path) as f:
        text = f.read()
    start, end = text.index("<!-- CONFIG-TABLE -->"), text.index("<!-- /CONFIG-TABLE -->")
    intro = text[start:end].split("| variable")[0]
    with open(path, "w") as f:
        f.write(text[:start] + intro + markdown_table(rows) + "\n" + text[end:])
