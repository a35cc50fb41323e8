"""The model artifact as the stack carries it: the locally built ``model.onnx`` + ``manifest.json``, uploaded
after the stack exists to its private, encrypted, versioned model bucket, under a key that names the file's
sha256 (the ``ModelArtifactPrefix`` and ``ModelArtifactSha256`` parameters):

    s3://<ModelBucket>/models/<model>/<sha256>/model.onnx
    s3://<ModelBucket>/models/<model>/<sha256>/manifest.json

App instances fetch it at boot (``imgrec-model.service``: ``python -m app_tier.artifact fetch <uri> --sha256``),
verify it against the manifest and that checksum, and wait for it while it is not there yet; the app role may
read exactly these two keys. A new build has a new sha256: new keys, a new parameter value, a new
launch-template version. ``local_artifact`` is the one place that says where the artifact comes from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from infra.config import ARTIFACT_MANIFEST_FILE, ARTIFACT_MODEL_FILE, Settings, file_sha256
from infra.report import Report

log = logging.getLogger(__name__)

SHA_METADATA = "sha256"  # object metadata: the sha256 of the body, so a second upload can be skipped
BUILD_HINT = "build it with `python -m app_tier.build_model` (`make install` does)"


class ArtifactMissing(ValueError):
    """No usable artifact on this machine; the message says what is wrong and how to build one."""


@dataclass(frozen=True)
class LocalArtifact:
    """A verified artifact on the deploying machine."""

    directory: Path
    model: str
    sha256: str

    def path(self, name: str) -> Path:
        return self.directory / name


def key_prefix(model: str) -> str:
    """The ``ModelArtifactPrefix`` parameter: where a model's builds go in the model bucket."""
    return f"models/{model}"


def keys(model: str, sha256: str) -> tuple[str, str]:
    return tuple(f"{key_prefix(model)}/{sha256}/{name}" for name in (ARTIFACT_MODEL_FILE, ARTIFACT_MANIFEST_FILE))


def local_artifact(settings: Settings) -> LocalArtifact:
    """The artifact under ``<models dir>/<model>/``, refused unless its file matches its manifest."""
    directory = Path(settings.artifact_dir)  # where the local stack's artifact is built and read
    manifest_path, model_path = directory / ARTIFACT_MANIFEST_FILE, directory / ARTIFACT_MODEL_FILE
    if not manifest_path.is_file() or not model_path.is_file():
        raise ArtifactMissing(f"no model artifact for {settings.model} at {directory} "
                              f"({ARTIFACT_MODEL_FILE} + {ARTIFACT_MANIFEST_FILE}): {BUILD_HINT}")
    try:
        manifest = json.loads(manifest_path.read_text())
        model, expected = manifest["model"], manifest["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ArtifactMissing(f"manifest {manifest_path} is not a model manifest ({err}): {BUILD_HINT}") from None
    if model != settings.model:
        raise ArtifactMissing(f"manifest {manifest_path} is for model {model!r}, not IMGREC_MODEL={settings.model!r}")
    actual = file_sha256(model_path)
    if actual != expected:
        raise ArtifactMissing(f"model file {model_path} has sha256 {actual}, but manifest {manifest_path} says "
                              f"{expected}: refusing to upload a corrupt or mismatched model; {BUILD_HINT}")
    return LocalArtifact(directory, model, actual)


def checksum(settings: Settings) -> str:
    """The artifact's sha256 as its manifest states it, without reading the model file: for a stack whose
    instances verify the file themselves (``local_artifact`` verifies it here, before an upload)."""
    path = Path(settings.artifact_dir) / ARTIFACT_MANIFEST_FILE
    try:
        return json.loads(path.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactMissing(f"no usable model manifest at {path} ({err}): {BUILD_HINT}") from None


def _uploaded_sha(s3, bucket: str, key: str) -> str | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(SHA_METADATA)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return None
        log.error("head_object s3://%s/%s failed", bucket, key)
        raise


def upload(s3, bucket: str, artifact: LocalArtifact, report: Report) -> None:
    """Put the artifact in the stack's model bucket; a file already there (same sha256) is not sent again.
    The model file's sha256 is the one ``local_artifact`` verified; only the manifest is hashed here."""
    for name, key in zip((ARTIFACT_MODEL_FILE, ARTIFACT_MANIFEST_FILE), keys(artifact.model, artifact.sha256),
                         strict=True):
        path = artifact.path(name)
        sha = artifact.sha256 if name == ARTIFACT_MODEL_FILE else file_sha256(path)
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
