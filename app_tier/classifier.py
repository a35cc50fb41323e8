"""What the worker needs from a model, whatever runs it: preprocess, stack, infer, class names.

Two runtimes implement it: ``OrtClassifier`` (onnxruntime, the default: no torch in
the worker process) and ``TorchClassifier`` (the reference, and the CUDA path on GPU
hosts). This module imports neither torch nor onnxruntime, so the worker can import
it and pay only for the runtime it uses.

``preprocess`` and ``infer`` are separate calls so the worker can prepare the next
batch on another thread while this one runs: PIL, torch and onnxruntime all release
the GIL for their heavy work.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np
from PIL import Image


class Runtime(StrEnum):
    ONNX = "onnx"
    TORCH = "torch"


class Prediction(NamedTuple):
    label: str
    score: float


class ModelUnavailable(RuntimeError):
    """The model is unknown or its weights/artifact cannot be found, fetched or trusted; the message says which file."""


class Classifier:
    """One model, its input transform and class names; ``classify`` is the whole job.

    ``open`` prepares the calling process to infer (threads, device, session): call it in
    the process that infers, after any fork.
    """

    name: str
    runtime: Runtime
    device: str = "cpu"
    categories: list[str]
    input_size: int

    def open(self, threads: int) -> None:
        raise NotImplementedError

    def preprocess(self, images: Sequence[Image.Image]) -> Any:
        """Resize, crop and normalise as the model was trained: an N x 3 x H x W batch."""
        raise NotImplementedError

    def stack(self, samples: Sequence[Any]) -> Any:
        """Single preprocessed images (``preprocess([img])[0]``) -> one batch."""
        raise NotImplementedError

    def infer(self, batch: Any) -> list[Prediction]:
        raise NotImplementedError

    def warm_up(self) -> None:
        """First-call allocations before the first real image; a no-op where it would not be fork-safe."""

    def classify(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Label each image (same order)."""
        return self.infer(self.preprocess(list(images)))


def top1(logits: np.ndarray, categories: Sequence[str]) -> list[Prediction]:
    """Softmax top-1 of each row (pure); scores rounded as the result messages carry them."""
    if logits.shape[0] == 0:
        return []
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    idx = probs.argmax(axis=1)
    return [Prediction(categories[i], round(float(probs[row, i]), 6)) for row, i in enumerate(idx.tolist())]
