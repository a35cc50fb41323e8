"""The torch runtime: the reference implementation, and the CUDA path on GPU hosts.

Only ``IMGREC_RUNTIME=torch`` workers, the model build step and the tests import it.

Fork safety: a parent process may load one ``Classifier`` and fork workers from it. Loading runs no inference, so no OpenMP pool or CUDA
context exists before the fork; the model moves to its device (a GPU when there is
one) on the first ``infer`` in the process that uses it. ``warm_up`` is safe in such
a parent only on CPU: it runs one forward pass with a single thread.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from app_tier.classifier import Classifier, Prediction, Runtime

log = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchClassifier(Classifier):
    """A torch module, its input transform and class names."""

    runtime = Runtime.TORCH

    def __init__(self, name: str, model: torch.nn.Module, transform: Callable[[Image.Image], torch.Tensor],
                 categories: Sequence[str], *, device: str | None = None, input_size: int = 224):
        self.name = name
        self.device = device or default_device()
        self.categories = list(categories)
        self.input_size = input_size
        self._transform = transform
        self._model = model.eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        self.frozen = False
        self._placed_in: int | None = None  # pid whose device holds the model
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TorchClassifier({self.name!r}, device={self.device!r})"

    def open(self, threads: int) -> None:
        torch.set_num_threads(threads)

    # ------------------------------------------------------------ stages
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise as the model was trained; returns an N x 3 x H x W CPU tensor."""
        if not images:
            return torch.empty((0, 3, self.input_size, self.input_size))
        return torch.stack([self._transform(img.convert("RGB") if img.mode != "RGB" else img) for img in images])

    def stack(self, samples: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(samples))

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw model output for a preprocessed batch, on the CPU."""
        if batch.shape[0] == 0:
            return torch.empty((0, len(self.categories)))
        model = self._on_device()
        with torch.inference_mode():
            out = model(batch.to(self.device, non_blocking=True))
        return out.float().cpu()

    def infer(self, batch: torch.Tensor) -> list[Prediction]:
        out = self.logits(batch)
        if out.shape[0] == 0:
            return []
        probs = torch.softmax(out, dim=1)
        scores, idx = probs.max(dim=1)
        return [Prediction(self.categories[i], round(float(s), 6)) for s, i in zip(scores.tolist(), idx.tolist(),
                                                                                      strict=True)]

    # ------------------------------------------------------------ lifecycle
    def freeze(self) -> bool:
        """Trace and freeze the model into TorchScript (CPU only). Returns whether it did.

        Why: an eager forward pass is hundreds of small Python-level ops, each taking the
        GIL back; while the worker's fetch and post threads run botocore (pure Python),
        that convoy halved inference speed in measurement. A frozen graph runs the whole
        pass in C++ without the GIL, and folds batch norms into convolutions. Tracing
        runs one forward pass single-threaded, so it is safe before a fork.
        """
        if self.device != "cpu":
            return False
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        example = torch.zeros((1, 3, self.input_size, self.input_size))
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.compile (needs a compiler)
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(self._model, example)))
        except Exception as err:  # noqa: BLE001 - eager mode still works, only slower under load
            log.warning("could not freeze %s (%s); running it eagerly", self.name, err)
            return False
        finally:
            torch.set_num_threads(before)
        self._model = frozen
        self.frozen = True
        return True

    def warm_up(self) -> None:
        """One tiny forward pass (first-call allocations), single-threaded so a later fork stays safe."""
        if self.device != "cpu":
            log.info("warm_up skipped for %s on %s: a CUDA context must not exist before fork", self.name, self.device)
            return
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.infer(torch.zeros((1, 3, self.input_size, self.input_size)))
        finally:
            torch.set_num_threads(before)

    def _on_device(self) -> torch.nn.Module:
        pid = os.getpid()
        if self._placed_in != pid:
            with self._lock:
                if self._placed_in != pid:
                    if self.device != "cpu":
                        self._model.to(self.device)
                    self._placed_in = pid
        return self._model
