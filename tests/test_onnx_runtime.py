"""The ONNX artifact and runtime: deterministic build, refused when corrupt, torch-free worker, same labels as torch."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app_tier import artifact
from app_tier.artifact import MANIFEST_FILE, MODEL_FILE, ArtifactError, sha256_of
from app_tier.onnx_classifier import load_onnx_classifier
from app_tier.preprocess import IMAGENET_MEAN, IMAGENET_STD, decode_image, to_input
from infra.config import DEFAULT_MODEL
from tests.helpers import child_env, collect, enqueue, upload
from tests.images import jpeg_bytes, make_image
from tests.procs import ROOT

MODEL = DEFAULT_MODEL


@pytest.fixture(scope="module")
def torch_clf():
    from app_tier.models import load_classifier

    return load_classifier(MODEL, device="cpu", threads=1)


@pytest.fixture(scope="module")
def ort_clf(model_dir):
    clf = load_onnx_classifier(Path(model_dir) / MODEL, MODEL)
    clf.open(1)
    return clf


@pytest.fixture
def copy_of(model_dir, tmp_path) -> Path:
    dest = tmp_path / MODEL
    shutil.copytree(Path(model_dir) / MODEL, dest)
    return dest


@pytest.mark.parametrize(("resize", "size"), [(256, (320, 240)), (256, (97, 400)), (232, (500, 375)),
                                              (256, (256, 300)), (256, (224, 224)), (256, (1000, 50))])
def test_numpy_preprocessing_equals_torchvision_preset(resize, size):
    from torchvision import transforms as T

    reference = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224),
                           T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    img = make_image(5, size)
    ours = to_input(img, resize, 224)
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
    assert np.abs(ours - reference(img).numpy()).max() <= 1e-4


def test_onnx_labels_and_logits_match_the_torch_path(torch_clf, ort_clf):
    images = [decode_image(jpeg_bytes(s, size=(500, 375))) for s in range(12)]
    assert [p.label for p in ort_clf.classify(images)] == [p.label for p in torch_clf.classify(images)]
    theirs = torch_clf.logits(torch_clf.preprocess(images)).numpy()
    assert np.abs(ort_clf.logits(ort_clf.preprocess(images)) - theirs).max() < 1e-3
    assert ort_clf.categories == torch_clf.categories and len(ort_clf.categories) == 1000
    assert ort_clf.classify([]) == []


def test_building_twice_gives_the_same_artifact(tmp_path, model_dir):
    from app_tier.build_model import build

    first, second = build(MODEL, tmp_path / "a"), build(MODEL, tmp_path / "b")
    assert first == second
    for name in (MODEL_FILE, MANIFEST_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first.sha256 == artifact.verify(Path(model_dir) / MODEL, MODEL).sha256  # and the cached one


def test_corrupt_model_file_is_refused_naming_the_file_and_both_checksums(copy_of):
    want = artifact.verify(copy_of, MODEL).sha256
    data = bytearray((copy_of / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy_of / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as info:
        load_onnx_classifier(copy_of, MODEL)
    message = str(info.value)
    assert str(copy_of / MODEL_FILE) in message and want in message and sha256_of(copy_of / MODEL_FILE) in message


def test_manifest_for_another_model_is_refused(copy_of):
    manifest = json.loads((copy_of / MANIFEST_FILE).read_text())
    manifest["model"] = "resnet18"
    (copy_of / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"is for model 'resnet18', not 'efficientnet_lite0'"):
        artifact.verify(copy_of, MODEL)


def test_worker_with_a_corrupt_artifact_refuses_to_start(stack, copy_of):
    (copy_of / MODEL_FILE).write_bytes(b"not a model")
    proc = subprocess.run([sys.executable, "-m", "app_tier", "--until-empty"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=child_env(stack, IMGREC_MODEL_DIR=str(copy_of.parent)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot load its model" in proc.stderr and str(copy_of / MODEL_FILE) in proc.stderr
    assert sha256_of(copy_of / MODEL_FILE) in proc.stderr


def test_install_from_s3_verifies_and_refuses_a_swapped_file(stack, clients, model_dir, tmp_path):
    bucket, source = stack.out_bucket, Path(model_dir) / MODEL
    for name in (MODEL_FILE, MANIFEST_FILE):
        clients.s3.upload_file(str(source / name), bucket, f"models/{MODEL}/{name}")
    dest = tmp_path / "models" / MODEL
    manifest = artifact.install(f"s3://{bucket}/models/{MODEL}/", dest, MODEL, s3=clients.s3)
    assert manifest.sha256 == sha256_of(dest / MODEL_FILE)

    clients.s3.put_object(Bucket=bucket, Key=f"models/{MODEL}/{MODEL_FILE}", Body=b"tampered")
    with pytest.raises(ArtifactError) as info:
        artifact.install(f"s3://{bucket}/models/{MODEL}/", dest, MODEL, s3=clients.s3)
    assert manifest.sha256 in str(info.value) and f"s3://{bucket}/models/{MODEL}/" in str(info.value)
    assert artifact.verify(dest, MODEL) == manifest  # the good copy in place was not touched
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no staging left behind

    cli = subprocess.run([sys.executable, "-m", "app_tier.artifact", "fetch", f"s3://{bucket}/models/{MODEL}/",
                          "--dest", str(tmp_path / "cli")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=child_env(stack))
    assert cli.returncode == 3 and "refused" in cli.stderr and manifest.sha256 in cli.stderr, cli.stderr


TORCH_FREE_WORKER = textwrap.dedent("""
    import json, sys
    from app_tier.__main__ import main
    code = main(["--until-empty"])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "triton"))
    print("LOADED", json.dumps(loaded))
    sys.exit(code)
""")


def test_onnx_worker_never_imports_torch_and_labels_match_torch(stack, clients, torch_clf):
    settings = stack
    data = {f"o_{i:02d}.jpg": jpeg_bytes(300 + i, size=(480, 360)) for i in range(6)}
    requests = [upload(clients, settings, name, d) for name, d in data.items()]
    enqueue(clients, settings, requests)
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE_WORKER], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=child_env(settings, IMGREC_INSTANCE_ID="onnx-1", IMGREC_RUNTIME="onnx"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("LOADED ")]
    assert json.loads(line.split(" ", 1)[1]) == []
    assert "runtime onnx" in proc.stderr
    results = collect(clients, settings, {r.request_id for r in requests}, 10)
    expected = {name: p.label for name, p in zip(data, torch_clf.classify([decode_image(d) for d in data.values()]),
                                                 strict=True)}
    for r in requests:
        [res] = results[r.request_id]
        assert res.ok and res.worker == "onnx-1" and res.label == expected[r.name], res


def test_an_artifact_uri_pins_its_sha256(stack, clients, model_dir, tmp_path):
    """Deploy's URI names the artifact's sha256: a model and manifest replaced together (consistent with each
    other) under that URI are refused; the genuine pair is installed."""
    bucket, source = stack.out_bucket, Path(model_dir) / MODEL
    genuine = json.loads((source / MANIFEST_FILE).read_text())
    prefix = f"models/{MODEL}/{genuine['sha256']}"
    for name in (MODEL_FILE, MANIFEST_FILE):
        clients.s3.upload_file(str(source / name), bucket, f"{prefix}/{name}")
    assert artifact.pinned_sha256(f"s3://{bucket}/{prefix}/") == genuine["sha256"]
    assert artifact.pinned_sha256(f"s3://{bucket}/models/{MODEL}/") is None
    dest = tmp_path / "models" / MODEL
    assert artifact.install(f"s3://{bucket}/{prefix}/", dest, MODEL, s3=clients.s3).sha256 == genuine["sha256"]

    other = b"another model, self-consistent"
    forged = {**genuine, "sha256": hashlib.sha256(other).hexdigest(), "size": len(other)}
    clients.s3.put_object(Bucket=bucket, Key=f"{prefix}/{MODEL_FILE}", Body=other)
    clients.s3.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_FILE}", Body=json.dumps(forged).encode())
    with pytest.raises(ArtifactError, match="the URI pins"):
        artifact.install(f"s3://{bucket}/{prefix}/", dest, MODEL, s3=clients.s3)
    assert artifact.verify(dest, MODEL).sha256 == genuine["sha256"]  # the installed one untouched
