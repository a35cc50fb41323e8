"""Shared fixtures: one moto server over HTTP per test session, fresh names per test, the Flask app and client."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from infra.cfn.stack import provision
from infra.clients import Clients
from infra.config import Settings
from infra.local.moto_server import MotoServer, free_port
from tests.helpers import flask_app

# Tests never touch real AWS: anything that escapes the endpoint gets these.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def moto_server():
    """A real moto server over HTTP, on a free port so a running `make run` is left alone; as strict as AWS
    where moto is kinder (infra.local.strict, short default lags; ``helpers.strict_aws`` tunes them per test)."""
    with MotoServer(port=free_port(), env={"IMGREC_STRICT_AWS": "on"}) as server:
        yield server


@pytest.fixture(params=["strict", "plain"])
def strict_or_plain(request, moto_server, plain_moto_server):
    """(url, is_strict, scope) on the strict server and on plain moto in turn: a check of an emulated behaviour must
    hold on the first and not on the second. The scope (a fresh name prefix) keeps a test's values to itself."""
    from infra.local.strict import client

    strict = request.param == "strict"
    url = (moto_server if strict else plain_moto_server).url
    scope = f"s{uuid.uuid4().hex[:10]}"
    yield url, strict, scope
    client.clear(url, scope)


@pytest.fixture(scope="session")
def plain_moto_server():
    """moto as it is (IMGREC_STRICT_AWS=off): where a test shows that plain moto would not have caught a bug."""
    with MotoServer(port=free_port(), env={"IMGREC_STRICT_AWS": "off"}) as server:
        yield server


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_dir() -> str:
    """The default model's ONNX artifact, built once into the checkout's cache (what `make install` builds)."""
    from app_tier import artifact
    from infra.config import DEFAULT_MODEL

    models = ROOT / ".data" / "models"
    artifact.ensure(models, DEFAULT_MODEL)
    return str(models)


@pytest.fixture
def settings(moto_server, tmp_path, model_dir) -> Settings:
    """Settings with a per-test name prefix, so tests don't see each other's resources."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return Settings.from_env(
        {},
        endpoint_url=moto_server.url,
        prefix=prefix,
        app_instance_prefix=f"{prefix}-app",
        web_instance_name=f"{prefix}-web",
        data_dir=str(tmp_path / "data"),
        model_dir=model_dir,
        receive_wait_s=1,
        max_attempts=3,
    )


@pytest.fixture
def clients(settings) -> Clients:
    return Clients(settings)


@pytest.fixture
def stack(settings, clients) -> Settings:
    """A provisioned set of buckets and queues; the test's settings name them."""
    provision(settings, clients)
    return settings


@pytest.fixture
def app_settings(stack) -> Settings:
    """The settings ``app`` is built from; a module overrides this fixture to change them."""
    return stack


@pytest.fixture
def app(app_settings):
    """The real Flask app from ``create_app(settings)`` on provisioned resources, without its response
    dispatcher thread (nothing to route in a request-validation test); its state is closed afterwards."""
    with flask_app(app_settings) as app:
        yield app


@pytest.fixture
def client(app):
    """Flask's test client: requests go through the whole app (routing, validation, error handlers), no sockets."""
    return app.test_client()
