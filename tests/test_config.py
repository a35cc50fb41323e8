"""Configuration: defaults, derived names, and clear failures for bad values."""

import os

import pytest

from infra.__main__ import settings_table
from infra.config import ConfigError, Settings


def test_defaults_and_derived_names():
    s = Settings.from_env({})
    assert s.region == "us-east-1"
    assert s.endpoint_url is None and not s.is_local
    assert (s.in_bucket, s.out_bucket) == ("imgrec-in-bucket", "imgrec-out-bucket")
    assert (s.req_queue, s.resp_queue, s.dlq) == ("imgrec-req-queue", "imgrec-resp-queue", "imgrec-req-dlq")
    assert (s.min_instances, s.max_instances) == (1, 19)
    assert s.model == "efficientnet_lite0"
    assert s.app_instance_name(3) == "app-tier-instance-3"
    assert s.web_instance_name == "web-instance"


def test_prefix_and_explicit_names():
    s = Settings.from_env({"IMGREC_PREFIX": "1234567890", "IMGREC_OUT_BUCKET": "my-results"})
    assert s.in_bucket == "1234567890-in-bucket"
    assert s.out_bucket == "my-results"
    assert s.replace(prefix="other").in_bucket == "other-in-bucket"
    assert s.replace(prefix="other").out_bucket == "my-results"


def test_region_falls_back_to_aws_default_region():
    assert Settings.from_env({"AWS_DEFAULT_REGION": "eu-west-1"}).region == "eu-west-1"
    assert Settings.from_env({"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1"}).region == "ap-south-1"


def test_round_trip_through_environment():
    s = Settings.from_env({"IMGREC_PREFIX": "abc", "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
                           "IMGREC_MIN_INSTANCES": "0", "IMGREC_MAX_INSTANCES": "15"})
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"IMGREC_MIN_INSTANCES": "5", "IMGREC_MAX_INSTANCES": "3"}, "IMGREC_MAX_INSTANCES"),
        ({"AWS_REGION": "useast1"}, "AWS_REGION"),
        ({"AWS_REGION": "US-EAST-1"}, "AWS_REGION"),
        ({"IMGREC_REQUEST_TIMEOUT": "soon"}, "IMGREC_REQUEST_TIMEOUT"),
        ({"IMGREC_VISIBILITY_TIMEOUT": "1.5"}, "IMGREC_VISIBILITY_TIMEOUT"),
        ({"IMGREC_VISIBILITY_TIMEOUT": "0"}, "IMGREC_VISIBILITY_TIMEOUT"),
        ({"IMGREC_MIN_INSTANCES": "-1"}, "IMGREC_MIN_INSTANCES"),
        ({"IMGREC_RECEIVE_WAIT": "30"}, "IMGREC_RECEIVE_WAIT"),
        ({"IMGREC_RETRY_MODE": "aggressive"}, "IMGREC_RETRY_MODE"),
        ({"IMGREC_RUNTIME": "tensorflow"}, "IMGREC_RUNTIME"),
        ({"IMGREC_MAX_HOLD_S": "0"}, "IMGREC_MAX_HOLD_S"),
        ({"IMGREC_MAX_HOLD_S": "50000"}, "IMGREC_MAX_HOLD_S"),
        ({"IMGREC_PREFIX": "Has_Upper"}, "IMGREC_PREFIX"),
        ({"IMGREC_IN_BUCKET": "x"}, "IMGREC_IN_BUCKET"),
        ({"IMGREC_REQ_QUEUE": "bad name"}, "IMGREC_REQ_QUEUE"),
        ({"IMGREC_BATCH_SIZE": "11"}, "IMGREC_BATCH_SIZE"),
        ({"AWS_ENDPOINT_URL": "localhost:4566"}, "AWS_ENDPOINT_URL"),
        ({"IMGREC_WEB_PORT": "70000"}, "IMGREC_WEB_PORT"),
        ({"IMGREC_LOG_LEVEL": "LOUD"}, "IMGREC_LOG_LEVEL"),
    ],
)
def test_bad_values_fail_naming_the_variable(env, variable):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(variable + "=")


def test_min_zero_is_allowed():
    assert Settings.from_env({"IMGREC_MIN_INSTANCES": "0", "IMGREC_MAX_INSTANCES": "15"}).min_instances == 0


def test_table_lists_every_variable():
    names = [row[0] for row in settings_table()]
    assert "AWS_ENDPOINT_URL" in names and "IMGREC_MAX_INSTANCES" in names
    assert len(names) == len(set(names))


def test_cli_reports_bad_config(capsys, monkeypatch):
    from infra.__main__ import main

    monkeypatch.setenv("IMGREC_MIN_INSTANCES", "7")
    monkeypatch.setenv("IMGREC_MAX_INSTANCES", "2")
    assert main(["status"]) == 2
    assert "IMGREC_MAX_INSTANCES=2:" in capsys.readouterr().err


def test_runtime_and_model_dir_defaults():
    s = Settings.from_env({})
    assert s.runtime == "onnx" and s.models_dir == os.path.join(s.data_dir, "models")
    assert Settings.from_env({"IMGREC_MODEL_DIR": "/opt/models", "IMGREC_RUNTIME": "torch"}).models_dir == "/opt/models"
