"""Helpers every test module may import (test modules never import each other).

``wait_until`` is how a test waits for something to happen: poll a condition with a
deadline instead of sleeping a fixed time and hoping it happened. The rest put
requests on the queues and read results off them, as the web tier would.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from infra.clients import CONTAINER_CREDENTIALS_URI_VAR
from infra.config import Settings
from infra.local.credentials import without_credentials
from infra.messages import ImageRequest, ImageResult
from infra.observe import queue_url
from tests.images import jpeg_bytes

T = TypeVar("T")


class WaitTimeout(TimeoutError, AssertionError):
    """A waited-for condition never held: a test failure that names what was awaited."""


def describe(condition: Callable) -> str:
    """The condition's own source line for a lambda, else its name: what the failure message quotes."""
    name = getattr(condition, "__name__", repr(condition))
    if name != "<lambda>":
        return name
    try:
        source = inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return name
    return source[source.index("lambda"):] if "lambda" in source else source


@contextmanager
def strict_aws(settings: Settings, **values) -> Iterator[None]:
    """The strict local AWS tuned for this test's resources only (its ``settings.prefix`` is the scope), for the
    block: ``with strict_aws(settings, sqs_count_lag_s=60): ...``. Faults injected for the scope end with it."""
    from infra.local.strict.client import scoped

    with scoped(settings.endpoint_url, settings.prefix, **values):
        yield


def aws_client(url: str, service: str, config=None, **credentials: str):
    """A boto3 client for the moto server at ``url`` (test keys unless ``credentials`` are given)."""
    import boto3

    keys = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", config=config, **keys)


def assert_aws_only_where_emulated(check: Callable[..., bool], strict: bool, *args) -> None:
    """The strict-AWS contract: ``check(*args)`` (True when the server behaved as AWS documents) holds on the strict
    server and fails on plain moto, so each emulation is shown to be what moto alone would not have caught."""
    from botocore.exceptions import ClientError

    why = ""
    try:
        behaved = check(*args)
    except (AssertionError, TimeoutError, ClientError) as err:
        behaved, why = False, f" ({type(err).__name__}: {err})"
    assert behaved is strict, f"{check.__name__}: {'strict' if strict else 'plain moto'} gave {behaved}{why}"


def error_code(call) -> str | None:
    """The AWS error code ``call()`` fails with, or None when it succeeds."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"]
    return None


def wait_listed(ec2, instance_ids: list[str], timeout: float = 20.0) -> list[str]:
    """Wait until EC2 lists these new instances (AWS, and the strict local AWS, are eventually consistent:
    a fresh instance is NotFound for a moment); botocore's ``instance_exists`` waiter retries NotFound."""
    if instance_ids:
        ec2.get_waiter("instance_exists").wait(InstanceIds=list(instance_ids),
                                               WaiterConfig={"Delay": 0.2, "MaxAttempts": int(timeout / 0.2)})
    return list(instance_ids)


@contextmanager
def flask_app(settings: Settings) -> Iterator:
    """The real app from ``create_app(settings)`` without its response dispatcher thread; closed at the end."""
    from web_tier import create_app, get_state

    app = create_app(settings, start_dispatcher=False)
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        get_state(app).close()


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.2, what: str | None = None) -> T:
    """Call ``condition`` until it returns something truthy and return that; fail after ``timeout`` s.

    The failure says what was awaited (``what``, or the condition's source) and the last value seen.
    Exceptions from ``condition`` propagate: a condition that cannot be evaluated is a failure too.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    raise WaitTimeout(f"waited {time.monotonic() - started:.1f} s (limit {timeout:g} s) for "
                      f"{what or describe(condition)}; last value {value!r:.200}")


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a child process (worker, web tier, controller) that uses ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGREC_")}
    if CONTAINER_CREDENTIALS_URI_VAR in extra:  # a role's credentials only: environment keys would win in boto3
        env = without_credentials(env)
    env.update(settings.to_env())
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


# ---------------------------------------------------------------- a real browser (selenium)

def chromium_paths() -> tuple[str | None, str | None]:
    """Debian's chromium and chromedriver, or None where they are not installed (the browser tests skip)."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@contextmanager
def chrome(tmp_path, width: int = 1100, height: int = 900) -> Iterator:
    """Headless Chromium driven by selenium for the block; quit at the end, whatever happened."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--no-first-run", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------- requests in, results out

def upload(clients, settings, name: str, data: bytes) -> ImageRequest:
    key = f"uploads/{time.time_ns()}-{name}"
    version = clients.s3.put_object(Bucket=settings.in_bucket, Key=key, Body=data)["VersionId"]
    return ImageRequest.new(key, version, name)


def enqueue(clients, settings, requests: list[ImageRequest | str]) -> None:
    url = queue_url(clients.sqs, settings.req_queue)
    for r in requests:
        clients.sqs.send_message(QueueUrl=url, MessageBody=r if isinstance(r, str) else r.to_json())


def collect(clients, settings, want: set[str], timeout: float) -> dict[str, list[ImageResult]]:
    """Drain the response queue until every request id in ``want`` has a result."""
    url = queue_url(clients.sqs, settings.resp_queue)
    got: dict[str, list[ImageResult]] = {}

    def poll():
        resp = clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            r = ImageResult.from_json(m["Body"])
            got.setdefault(r.request_id, []).append(r)
            clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return want <= set(got)

    wait_until(poll, timeout, interval=0, what=f"results for {len(want - set(got))} requests")
    return got


def upload_images(s3, settings: Settings, count: int, start: int = 0) -> list[ImageRequest]:
    """Real JPEGs into the input bucket; the request messages that name their versions."""
    out = []
    for i in range(start, start + count):
        name = f"burst_{i:03d}.jpg"
        version = s3.put_object(Bucket=settings.in_bucket, Key=name, Body=jpeg_bytes(i),
                                ContentType="image/jpeg").get("VersionId")
        out.append(ImageRequest.new(name, version, name))
    return out


def send_requests(sqs, settings: Settings, requests: list[ImageRequest]) -> float:
    """Enqueue in batches of 10; returns when the last went in (wall clock)."""
    url = queue_url(sqs, settings.req_queue)
    for i in range(0, len(requests), 10):
        chunk = requests[i:i + 10]
        resp = sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": r.to_json()} for n, r in enumerate(chunk)])
        assert not resp.get("Failed"), resp["Failed"]
    return time.time()


def collect_results(sqs, settings: Settings, want: set[str], timeout: float) -> dict[str, ImageResult]:
    url = queue_url(sqs, settings.resp_queue)
    got: dict[str, ImageResult] = {}
    deadline = time.monotonic() + timeout
    while not want <= set(got) and time.monotonic() < deadline:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            result = ImageResult.from_json(m["Body"])
            got[result.request_id] = result
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def stays_true(condition: Callable[[], object], duration: float, interval: float = 0.05,
               what: str | None = None) -> None:
    """Check that ``condition`` holds at every poll for ``duration`` s: for "nothing happens" claims,
    where there is no event to wait for, only a window to watch. Fails at the first poll where it does not."""
    deadline = time.monotonic() + duration
    while True:
        value = condition()
        assert value, f"{what or describe(condition)} stopped holding ({value!r:.200})"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def launch_template(ec2, settings: Settings, name: str, user_data: str, *, instance_type: str | None = None,
                    profile_arn: str | None = None) -> str:
    """A launch template of a test's own (its own user data, outside the stack's); returns its name."""
    import base64

    data = {"ImageId": settings.ami_id, "InstanceType": instance_type or settings.instance_type,
            "UserData": base64.b64encode(user_data.encode()).decode()}
    if profile_arn:
        data["IamInstanceProfile"] = {"Arn": profile_arn}
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)
    return name


def template_user_data(ec2, name: str) -> str:
    """The user data of a launch template's default version."""
    import base64

    found = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Default"])
    return base64.b64decode(found["LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"]).decode()
