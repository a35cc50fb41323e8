"""The model artifact on AWS: deploy uploads the locally built ``model.onnx`` + ``manifest.json``
to a private, encrypted, versioned bucket of the stack, under a key that names the file's sha256:

    s3://<prefix>-model-bucket/models/<model>/<sha256>/model.onnx
    s3://<prefix>-model-bucket/models/<model>/<sha256>/manifest.json

App instances get ``IMGREC_MODEL_URI=s3://<bucket>/models/<model>/<sha256>/``; at boot
``imgrec-model.service`` runs ``python -m app_tier.artifact fetch $IMGREC_MODEL_URI``, which
verifies the file against the manifest before the worker may start. The app role may read
exactly these two keys (``infra/deploy/iam.py``); nothing may write them but whoever deploys.
A new build has a new sha256, hence new keys, a new URI and a new launch-template version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from infra.config import ARTIFACT_MANIFEST_FILE, ARTIFACT_MODEL_FILE, Settings, file_sha256
from infra.deploy.errors import DeployError
from infra.provision import delete_bucket, ensure_bucket
from infra.report import Report

log = logging.getLogger(__name__)

KEY_ROOT = "models"
SHA_METADATA = "sha256"  # object metadata: the sha256 of the body, so a second deploy can skip the upload
BUILD_HINT = "build it with `python -m app_tier.build_model` (`make install` does)"


@dataclass(frozen=True)
class LocalArtifact:
    """A verified artifact on the deploying machine."""

    directory: Path
    model: str
    sha256: str

    def path(self, name: str) -> Path:
        return self.directory / name


def model_bucket_name(settings: Settings) -> str:
    return f"{settings.prefix}-model-bucket"


def artifact_prefix(model: str, sha256: str) -> str:
    return f"{KEY_ROOT}/{model}/{sha256}/"


def artifact_keys(model: str, sha256: str) -> tuple[str, str]:
    prefix = artifact_prefix(model, sha256)
    return prefix + ARTIFACT_MODEL_FILE, prefix + ARTIFACT_MANIFEST_FILE


def model_uri(settings: Settings, model: str, sha256: str) -> str:
    return f"s3://{model_bucket_name(settings)}/{artifact_prefix(model, sha256)}"


def uri_keys(uri: str) -> tuple[str, tuple[str, str]]:
    """(bucket, (model key, manifest key)) of an ``IMGREC_MODEL_URI``."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, (prefix + ARTIFACT_MODEL_FILE, prefix + ARTIFACT_MANIFEST_FILE)


def local_artifact(settings: Settings) -> LocalArtifact:
    """The artifact under ``<models dir>/<model>/``, refused unless its file matches its manifest."""
    directory = Path(settings.artifact_dir)  # where the local stack's artifact is built and read
    manifest_path, model_path = directory / ARTIFACT_MANIFEST_FILE, directory / ARTIFACT_MODEL_FILE
    if not manifest_path.is_file() or not model_path.is_file():
        raise DeployError(f"no model artifact for {settings.model} at {directory} "
                          f"({ARTIFACT_MODEL_FILE} + {ARTIFACT_MANIFEST_FILE}): {BUILD_HINT}")
    try:
        manifest = json.loads(manifest_path.read_text())
        model, expected = manifest["model"], manifest["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise DeployError(f"manifest {manifest_path} is not a model manifest ({err}): {BUILD_HINT}") from None
    if model != settings.model:
        raise DeployError(f"manifest {manifest_path} is for model {model!r}, not IMGREC_MODEL={settings.model!r}")
    actual = file_sha256(model_path)
    if actual != expected:
        raise DeployError(f"model file {model_path} has sha256 {actual}, but manifest {manifest_path} says "
                          f"{expected}: refusing to upload a corrupt or mismatched model; {BUILD_HINT}")
    return LocalArtifact(directory, model, actual)


def _uploaded_sha(s3, bucket: str, key: str) -> str | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(SHA_METADATA)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return None
        log.error("head_object s3://%s/%s failed", bucket, key)
        raise


def upload_artifact(s3, settings: Settings, artifact: LocalArtifact, report: Report) -> str:
    """Put the artifact in the model bucket (made private, encrypted, versioned); returns its URI."""
    bucket = model_bucket_name(settings)
    ensure_bucket(s3, settings, bucket, versioned=True, report=report)
    for name, key in zip((ARTIFACT_MODEL_FILE, ARTIFACT_MANIFEST_FILE),
                         artifact_keys(artifact.model, artifact.sha256), strict=True):
        path = artifact.path(name)
        sha = file_sha256(path)
        if _uploaded_sha(s3, bucket, key) == sha:
            report.add(f"s3://{bucket}/{key}", "unchanged")
            continue
        try:
            with open(path, "rb") as body:
                s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256",
                              Metadata={SHA_METADATA: sha})
        except ClientError:
            log.error("put_object s3://%s/%s from %s failed", bucket, key, path)
            raise
        report.add(f"s3://{bucket}/{key}", f"uploaded ({path.stat().st_size} bytes, sha256 {sha[:12]})")
    return model_uri(settings, artifact.model, artifact.sha256)


def delete_model_bucket(s3, settings: Settings, report: Report) -> None:
    delete_bucket(s3, settings, model_bucket_name(settings), report)
