"""The onnxruntime runtime (default): numpy/PIL preprocessing, an ORT CPU session, no torch.

Session options, chosen by measurement (1 core of this 2-core host, efficientnet_lite0,
onnxruntime 1.32, images/s best of 3, RSS after load / peak):

| options | batch 1 | batch 10 | RSS |
|---|---|---|---|
| graph opt ALL, arena on | 70-81 | 73-79 | 134 / 285 MB |
| graph opt ALL, arena off | 66-74 | 52-54 | 126 / 140 MB |
| graph opt EXTENDED (no NCHWc layouts) | 31 | 21-26 | 106 MB |

So: full graph optimisation (the NCHWc layout transform more than doubles speed),
and one image per ``run`` with the memory arena off: as fast as any batch and the
lowest peak (a batch of 10 grows the arena to ~285 MB for nothing). Spinning is off:
with one intra-op thread there is no pool to spin, and with more, spinning threads
would burn the cores that other local workers share. Threads: one per worker
(``IMGREC_TORCH_THREADS``); the host runs one worker per core.

The session is created by ``open`` in the process that infers, after any fork: an ORT
session's thread pool and allocator must not cross a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from app_tier.artifact import MODEL_FILE, Manifest, verify
from app_tier.classifier import Classifier, ModelUnavailable, Prediction, Runtime, top1
from app_tier.preprocess import to_input

log = logging.getLogger(__name__)

INFER_CHUNK = 1  # images per session.run: see the table above


def session_options(threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = False
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are noise here
    return opts


class OrtClassifier(Classifier):
    """A verified ONNX artifact; the session is made per process by ``open`` (or the first ``infer``)."""

    runtime = Runtime.ONNX
    device = "cpu"

    def __init__(self, directory: str | Path, manifest: Manifest):
        self.directory = Path(directory)
        self.manifest = manifest
        self.name = manifest.model
        self.categories = list(manifest.categories)
        self.input_size = manifest.input_size
        self._mean = np.asarray(manifest.mean, dtype=np.float32)
        self._std = np.asarray(manifest.std, dtype=np.float32)
        self._session = None
        self._session_pid: int | None = None
        self._threads = 1
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OrtClassifier({self.name!r}, {self.directory})"

    def open(self, threads: int) -> None:
        """Create this process's session (after any fork); later calls in the same process are free."""
        self._threads = threads
        self._ensure_session()

    def _ensure_session(self):
        pid = os.getpid()
        if self._session_pid != pid:
            with self._lock:
                if self._session_pid != pid:
                    import onnxruntime as ort

                    started = time.monotonic()
                    try:
                        self._session = ort.InferenceSession(str(self.directory / MODEL_FILE),
                                                             session_options(self._threads),
                                                             providers=["CPUExecutionProvider"])
                    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
                        raise ModelUnavailable(f"onnxruntime cannot load {self.directory / MODEL_FILE}: {err}") from None
                    self._session_pid = pid
                    log.info("onnxruntime session for %s ready in %.2f s (pid %d, %d threads)", self.name,
                             time.monotonic() - started, pid, self._threads)
        return self._session

    # ------------------------------------------------------------ stages
    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        size = self.input_size
        if not images:
            return np.empty((0, 3, size, size), dtype=np.float32)
        return np.stack([to_input(img, self.manifest.resize, size, self._mean, self._std) for img in images])

    def stack(self, samples: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(list(samples))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] == 0:
            return np.empty((0, len(self.categories)), dtype=np.float32)
        session = self._ensure_session()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out = [session.run([self.manifest.output_name], {self.manifest.input_name: batch[i:i + INFER_CHUNK]})[0]
               for i in range(0, batch.shape[0], INFER_CHUNK)]
        return np.concatenate(out)

    def infer(self, batch: np.ndarray) -> list[Prediction]:
        return top1(self.logits(batch), self.categories)

    def warm_up(self) -> None:
        """One tiny run in this process (first-call allocations); only after ``open`` in the serving process."""
        self.infer(np.zeros((1, 3, self.input_size, self.input_size), dtype=np.float32))


def load_onnx_classifier(directory: str | Path, model: str) -> OrtClassifier:
    """Verify the artifact (sha256, model name) and wrap it; no session yet (fork-safe)."""
    return OrtClassifier(directory, verify(directory, model))
