"""The model artifact (``model.onnx`` + ``manifest.json``): find, fetch, verify, build on first use.

A worker trusts an artifact only after its file's sha256 equals the manifest's and the
manifest names the model it was asked for: a truncated download, a stale cache or a
file swapped in S3 is refused with both checksums and the file named, never served.
This module imports no torch; building (``app_tier.build_model``: torch-free for the
default model, torch for the others) runs in a child process, so a worker that builds on
first use never has the exporter (onnx, or torch) in its memory.

    python -m app_tier.artifact fetch s3://bucket/prefix/ [--sha256 HEX] [--model M] [--dest DIR]   # at boot
    python -m app_tier.artifact verify [--model M]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app_tier.classifier import ModelUnavailable
from infra.config import ARTIFACT_MANIFEST_FILE, ARTIFACT_MODEL_FILE, file_sha256
from infra.config import artifact_dir as _artifact_dir

log = logging.getLogger(__name__)

MODEL_FILE = ARTIFACT_MODEL_FILE
MANIFEST_FILE = ARTIFACT_MANIFEST_FILE
MANIFEST_FORMAT = 1
BUILD_TIMEOUT_S = 600
_LOG_PREFIX = re.compile(r"^\S+ \S+ (ERROR|WARNING|INFO) [\w.]+: ")  # the build's log format, before its message
# At boot the artifact may not be there yet: the stack (and so the instances) exists before deploy uploads it.
ARTIFACT_WAIT_S = 540.0  # under the model unit's TimeoutStartSec
ARTIFACT_POLL_S = 5.0
MISSING_CODES = ("404", "NoSuchKey", "NotFound")


class ArtifactError(ModelUnavailable):
    """The artifact is missing, corrupt or for another model; the message names the file (and both checksums)."""


@dataclass(frozen=True)
class Manifest:
    model: str
    sha256: str
    size: int
    input_name: str
    output_name: str
    input_size: int
    resize: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    categories: tuple[str, ...]
    opset: int
    built_with: dict

    @classmethod
    def from_json(cls, text: str, path: Path) -> Manifest:
        try:
            raw = json.loads(text)
            if raw.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {MANIFEST_FORMAT}")
            return cls(model=raw["model"], sha256=raw["sha256"], size=int(raw["size"]),
                       input_name=raw["input_name"], output_name=raw["output_name"],
                       input_size=int(raw["input_size"]), resize=int(raw["resize"]),
                       interpolation=raw["interpolation"], mean=tuple(raw["mean"]), std=tuple(raw["std"]),
                       categories=tuple(raw["categories"]), opset=int(raw["opset"]),
                       built_with=dict(raw.get("built_with", {})))
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"manifest {path} is not a valid model manifest: {err}") from None

    def to_json(self) -> str:
        """Stable bytes (sorted keys, no timestamps): building twice writes the same manifest."""
        body = {"format": MANIFEST_FORMAT, "model": self.model, "sha256": self.sha256, "size": self.size,
                "input_name": self.input_name, "output_name": self.output_name, "input_size": self.input_size,
                "resize": self.resize, "interpolation": self.interpolation, "mean": list(self.mean),
                "std": list(self.std), "opset": self.opset, "built_with": self.built_with,
                "categories": list(self.categories)}
        return json.dumps(body, indent=1, sort_keys=True) + "\n"


sha256_of = file_sha256


def artifact_dir(models_dir: str | Path, model: str) -> Path:
    return Path(_artifact_dir(models_dir, model))


def verify(directory: str | Path, model: str) -> Manifest:
    """The manifest of a trustworthy artifact in ``directory``, or ``ArtifactError`` saying what is wrong."""
    directory = Path(directory)
    manifest_path, model_path = directory / MANIFEST_FILE, directory / MODEL_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"no model manifest at {manifest_path}")
    manifest = Manifest.from_json(manifest_path.read_text(), manifest_path)
    if manifest.model != model:
        raise ArtifactError(f"manifest {manifest_path} is for model {manifest.model!r}, not {model!r}")
    if not model_path.is_file():
        raise ArtifactError(f"model file {model_path} is missing (manifest {manifest_path} expects sha256 "
                            f"{manifest.sha256})")
    actual = sha256_of(model_path)
    if actual != manifest.sha256:
        raise ArtifactError(f"model file {model_path} has sha256 {actual}, but manifest {manifest_path} says "
                            f"{manifest.sha256}: refusing a corrupt or mismatched model")
    return manifest


# ------------------------------------------------------------------ fetch (boot on AWS)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def pinned_sha256(source: str | Path) -> str | None:
    """The sha256 an artifact URI names (deploy's ``.../models/<model>/<sha256>/``), or None (pure)."""
    segment = str(source).rstrip("/").rpartition("/")[2]
    return segment if _SHA256.match(segment) else None


def _split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def installed(dest: str | Path, model: str, sha256: str) -> Manifest | None:
    """The manifest of a verified artifact with checksum ``sha256`` already at ``dest`` (an image that
    carries it, an instance started again), else None."""
    try:
        manifest = verify(dest, model)
    except ArtifactError:
        return None
    return manifest if manifest.sha256 == sha256 else None


def _download(s3, bucket: str, key: str, path: Path, wait_s: float) -> None:
    """``s3.download_file``, waiting up to ``wait_s`` for an object that is not there yet."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            s3.download_file(bucket, key, str(path))
            return
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code"))
            if code not in MISSING_CODES or time.monotonic() + ARTIFACT_POLL_S > deadline:
                raise
            log.info("s3://%s/%s is not there yet (%s); waiting for it", bucket, key, code)
            time.sleep(ARTIFACT_POLL_S)


def install(source: str | Path, dest: str | Path, model: str, *, s3=None, sha256: str | None = None,
            wait_s: float = 0.0) -> Manifest:
    """Copy an artifact from ``source`` (``s3://bucket/prefix/`` or a local directory) into ``dest``, verified.

    ``source`` holds ``model.onnx`` and ``manifest.json``. A source whose last path segment is a sha256
    (deploy's ``s3://bucket/models/<model>/<sha256>/``) pins the artifact: the manifest must say that
    same sha256, so a file and manifest replaced together are refused too. Both land in a temporary
    directory beside ``dest`` and replace it only after verifying, so a failed or
    corrupt download never leaves a half-written artifact where a worker looks.
    ``s3`` is a boto3 S3 client (from ``infra.clients``), needed for s3:// sources.
    ``sha256``: the checksum the deployer named; the manifest must agree (a consistent pair swapped in
    S3 is refused too). Whether it is already at ``dest`` is the caller's question (``installed``).
    ``wait_s``: how long to wait for objects not uploaded yet.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for name in (MANIFEST_FILE, MODEL_FILE):
            if str(source).startswith("s3://"):
                if s3 is None:
                    raise ValueError("an s3:// source needs an S3 client")
                bucket, prefix = _split_s3(str(source))
                key = f"{prefix.rstrip('/')}/{name}" if prefix else name
                log.info("downloading s3://%s/%s for model %s", bucket, key, model)
                _download(s3, bucket, key, staging / name, wait_s)
            else:
                shutil.copyfile(Path(source) / name, staging / name)
        try:
            manifest = verify(staging, model)
            if sha256 and manifest.sha256 != sha256:
                raise ArtifactError(f"manifest says sha256 {manifest.sha256}, but the stack names {sha256}")
        except ArtifactError as err:
            raise ArtifactError(f"{err} (downloaded from {source})") from None
        pinned = pinned_sha256(source)
        if pinned is not None and manifest.sha256 != pinned:
            # A file and manifest swapped together agree with each other; the URI deploy wrote does not.
            raise ArtifactError(f"manifest from {source} says sha256 {manifest.sha256}, but the URI pins {pinned}: "
                                f"refusing an artifact that is not the one deployed")
        _replace_dir(staging, dest)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_dir(new: Path, dest: Path) -> None:
    old = dest.with_name(f".{dest.name}-old-{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ build on first use (local)

def ensure(models_dir: str | Path, model: str) -> tuple[Path, Manifest]:
    """A verified artifact for ``model`` under ``models_dir``, built first if there is none.

    The build runs ``python -m app_tier.build_model`` in a child (the exporter stays out of
    this process) under a file lock, so workers starting together build it once. A model
    that needs torch where there is none fails with the child's line saying which command
    adds it. A corrupt artifact is refused, not silently rebuilt: someone should look.
    """
    directory = artifact_dir(models_dir, model)
    if (directory / MANIFEST_FILE).exists():
        return directory, verify(directory, model)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{model}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / MANIFEST_FILE).exists():
            build_in_child(model, directory)
    return directory, verify(directory, model)


def build_in_child(model: str, directory: Path) -> None:
    started = time.monotonic()
    log.info("no artifact for model %s at %s: building it (python -m app_tier.build_model)", model, directory)
    cmd = [sys.executable, "-m", "app_tier.build_model", "--model", model, "--out", str(directory)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ArtifactError(f"building the artifact for {model} at {directory} failed: {err}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        reason = _LOG_PREFIX.sub("", tail[0])
        raise ArtifactError(f"no artifact for model {model} at {directory}, and building it here failed "
                            f"(exit {proc.returncode}): {reason}")
    log.info("built the artifact for model %s in %.1f s", model, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    from infra.process import settings_and_logging

    parser = argparse.ArgumentParser(prog="python -m app_tier.artifact", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("fetch", "verify", "ensure"))
    parser.add_argument("source", nargs="?", help="fetch: s3://bucket/prefix/ or a directory")
    parser.add_argument("--model", default=None, help="default IMGREC_MODEL")
    parser.add_argument("--dest", default=None, help="default <IMGREC_MODEL_DIR>/<model>")
    parser.add_argument("--sha256", default=None, help="fetch: the checksum the artifact must have")
    args = parser.parse_args(argv)
    settings = settings_and_logging()
    model = args.model or settings.model
    dest = Path(args.dest) if args.dest else artifact_dir(settings.models_dir, model)
    try:
        if args.action == "fetch":
            if not args.source:
                parser.error("fetch needs a source")
            manifest = installed(dest, model, args.sha256) if args.sha256 else None
            if manifest is None:  # not on the image yet (an S3 client only when there is something to fetch)
                s3 = None
                if args.source.startswith("s3://"):
                    from infra.clients import make_client

                    s3 = make_client("s3", settings)
                manifest = install(args.source, dest, model, s3=s3, sha256=args.sha256, wait_s=ARTIFACT_WAIT_S)
        elif args.action == "verify":
            manifest = verify(dest, model)
        else:
            dest, manifest = ensure(dest.parent, model)
    except (ModelUnavailable, OSError, ValueError) as err:
        log.error("model artifact for %s refused: %s", model, err)
        return 3
    except Exception as err:  # noqa: BLE001 - botocore errors: one clear line for the boot log
        log.error("model artifact for %s could not be fetched from %s: %s", model, args.source, err)
        return 3
    log.info("model artifact %s ok: sha256 %s, %d classes", dest, manifest.sha256, len(manifest.categories))
    return 0


if __name__ == "__main__":
    sys.exit(main())
