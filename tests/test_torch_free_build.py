"""The default model's artifact built without torch equals the torch build; without torch, what needs it says so.

`make run` builds ``efficientnet_lite0``'s ONNX artifact from the offline weights with
``onnx.helper`` (``app_tier/lite0_onnx.py``), never importing torch. Its bytes differ from
``torch.onnx``'s (torch folds the batch norms with a square root that is not IEEE-exact on
AVX-512, and pads with separate ``Pad`` nodes), so equality is checked where it matters:
the same layers with the same weights (within a few float32 ulps) and the same logits
(within 1e-4) and labels as the torch export and the torch runtime itself, here on generated
images (the suite reads no ../shared); ``tests/bench/bench_fresh_run.py`` checks the 200 shared
ImageNet photos the same way.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app_tier.artifact import MANIFEST_FILE, MODEL_FILE, Manifest, verify
from app_tier.build_model import HELPER, TORCH, build
from app_tier.checkpoint import MAGIC_NUMBER, PROTOCOL_VERSION, CheckpointError, read_state_dict
from app_tier.models import CLASSES_FILE, imagenet_categories, lite0_weights_path
from app_tier.preprocess import decode_image
from infra.local.moto_server import free_port
from tests.images import jpeg_bytes
from tests.procs import ROOT

MODEL = "efficientnet_lite0"
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """The artifact both ways, from the same weights."""
    base = tmp_path_factory.mktemp("builds")
    for exporter in (HELPER, TORCH):
        build(MODEL, base / exporter, exporter)
    return {exporter: base / exporter for exporter in (HELPER, TORCH)}


@pytest.fixture(scope="module")
def sessions(builds):
    from app_tier.onnx_classifier import load_onnx_classifier

    out = {}
    for exporter, directory in builds.items():
        clf = load_onnx_classifier(directory, MODEL)
        clf.open(1)
        out[exporter] = clf
    return out


@pytest.fixture(scope="module")
def torch_eager():
    from app_tier.models import load_classifier

    return load_classifier(MODEL, device="cpu", threads=1, freeze=False)


def compare(sessions, torch_eager, images) -> dict[str, float]:
    """Largest |logit difference| of the helper build against the torch export and the torch runtime; labels equal."""
    helper, exported = sessions[HELPER], sessions[TORCH]
    batch = helper.preprocess(images)
    ours, theirs = helper.logits(batch), exported.logits(batch)
    reference = torch_eager.logits(torch_eager.preprocess(images)).numpy()
    assert ours.argmax(1).tolist() == theirs.argmax(1).tolist() == reference.argmax(1).tolist()
    return {"torch export": float(np.abs(ours - theirs).max()), "torch runtime": float(np.abs(ours - reference).max())}


def test_checkpoint_reader_gives_torch_loads_tensors_exactly():
    import torch

    path = lite0_weights_path()
    ours = read_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs) and len(ours) == 296
    for name, tensor in theirs.items():
        ref = tensor.numpy()
        assert ours[name].dtype == ref.dtype and ours[name].shape == ref.shape, name
        assert ours[name].tobytes() == ref.tobytes(), name


def legacy_checkpoint(obj_pickle: bytes) -> bytes:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}))
    return header + obj_pickle + pickle.dumps([], protocol=2)


def test_checkpoint_reader_refuses_code_other_formats_and_truncation(tmp_path):
    evil = tmp_path / "evil.pth"  # a pickle that would run a shell command on load
    evil.write_bytes(legacy_checkpoint(b"cos\nsystem\n(S'echo pwned'\ntR."))
    with pytest.raises(CheckpointError, match=r"refusing to load os\.system"):
        read_state_dict(evil)
    other = tmp_path / "zip.pth"
    other.write_bytes(b"PK\x03\x04" + bytes(64))
    with pytest.raises(CheckpointError, match="not a legacy torch checkpoint"):
        read_state_dict(other)
    data = Path(lite0_weights_path()).read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(cut)


def test_the_torch_free_graph_has_the_torch_exports_layers_and_weights(builds):
    import onnx
    from onnx import numpy_helper

    def convs(directory: Path) -> list[tuple[dict, np.ndarray, np.ndarray]]:
        model = onnx.load(directory / MODEL_FILE)
        init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        out = []
        for node in model.graph.node:
            if node.op_type == "Conv":
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name != "pads"}
                out.append((attrs, init[node.input[1]], init[node.input[2]]))
        return out

    ours, theirs = convs(builds[HELPER]), convs(builds[TORCH])
    assert len(ours) == len(theirs) == 49
    for i, ((a_attrs, a_w, a_b), (b_attrs, b_w, b_b)) in enumerate(zip(ours, theirs, strict=True)):
        assert a_attrs["strides"] == b_attrs["strides"] and a_attrs["group"] == b_attrs["group"], i
        assert a_w.shape == b_w.shape and a_b.shape == b_b.shape, i
        # same folding arithmetic; torch's float32 sqrt may differ from IEEE's by an ulp, hence a few ulps here
        np.testing.assert_allclose(a_w, b_w, rtol=1e-6, atol=1e-7, err_msg=f"conv {i}")
        np.testing.assert_allclose(a_b, b_b, rtol=1e-6, atol=1e-6, err_msg=f"conv {i}")
    mine, reference = verify(builds[HELPER], MODEL), verify(builds[TORCH], MODEL)
    assert mine.built_with["exporter"] == "onnx.helper" and reference.built_with["exporter"] == "torchscript"
    same = {f for f in Manifest.__dataclass_fields__ if f not in ("sha256", "size", "built_with")}
    assert {f: getattr(mine, f) for f in same} == {f: getattr(reference, f) for f in same}


def test_the_torch_free_artifact_gives_the_torch_paths_logits_within_1e_4(sessions, torch_eager):
    images = [decode_image(jpeg_bytes(seed, size=(500, 375))) for seed in range(16)]
    worst = compare(sessions, torch_eager, images)
    assert max(worst.values()) <= LOGIT_TOLERANCE, worst


def test_rebuilding_gives_the_same_bytes(builds, tmp_path):
    build(MODEL, tmp_path / "again", HELPER)
    for name in (MODEL_FILE, MANIFEST_FILE):
        assert (tmp_path / "again" / name).read_bytes() == (builds[HELPER] / name).read_bytes()


def test_class_names_file_is_torchvisions_list():
    from torchvision.models import ResNet18_Weights

    assert imagenet_categories() == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert CLASSES_FILE.read_text().count("\n") == 1000


# ------------------------------------------------------------------ without torch, as `make run` installs

NO_TORCH_SITE = textwrap.dedent('''
    """Test-only: hide torch as if it were not installed (a venv made by `make run`)."""
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "efficientnet_lite_pytorch"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoTorch())
''')

CHECK_NO_TORCH = textwrap.dedent("""
    import sys
    from app_tier.build_model import build
    manifest = build("efficientnet_lite0", sys.argv[1])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "triton"))
    print("LOADED", loaded, manifest.sha256)
""")


@pytest.fixture
def no_torch_env(tmp_path) -> dict[str, str]:
    site = tmp_path / "no-torch-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TORCH_SITE)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("IMGREC_", "AWS_ENDPOINT"))}
    env.update(PYTHONPATH=f"{site}:{ROOT}", IMGREC_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr  # the hiding works
    return env


def run_py(args: list[str], env: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**env, **extra}, capture_output=True, text=True,
                          timeout=180)


def test_the_default_artifact_builds_without_torch_to_the_same_bytes(no_torch_env, builds, tmp_path):
    proc = run_py(["-c", CHECK_NO_TORCH, str(tmp_path / "built")], no_torch_env)
    assert proc.returncode == 0, proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("LOADED ")]
    assert line == f"LOADED [] {verify(builds[HELPER], MODEL).sha256}"


@pytest.mark.parametrize(("args", "extra", "code"), [
    (["-m", "app_tier.build_model", "--model", "resnet18"], {}, 1),
    (["-m", "app_tier.artifact", "ensure", "--model", "mobilenet_v3_large"], {}, 3),
    (["-m", "infra", "up"], {"IMGREC_RUNTIME": "torch"}, 2),
    (["-m", "infra", "up"], {"IMGREC_MODEL": "resnet18"}, 2),
    (["-m", "infra", "up"], {"IMGREC_INSTANCE_TYPE": "g4dn.xlarge"}, 2),  # GPU types run the torch runtime
], ids=["build-resnet18", "worker-ensure-mobilenet", "stack-torch-runtime", "stack-resnet18", "stack-gpu-type"])
def test_without_torch_what_needs_it_names_the_command_that_adds_it(no_torch_env, args, extra, code):
    port = free_port()
    proc = run_py(args, no_torch_env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", IMGREC_WEB_PORT=str(free_port()),
                  **extra)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "needs torch" in proc.stderr and "`make install-torch`" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    if args[1] == "infra":  # refused before anything started: no moto on the port
        assert "cannot start" in proc.stderr
        from infra.local.moto_server import port_in_use

        assert not port_in_use("127.0.0.1", port)
