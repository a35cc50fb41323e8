"""``IMGREC_RUNTIME`` -> a loaded classifier; only the chosen runtime is imported.

With ``onnx`` neither torch nor torchvision is imported in this process (tested from
``sys.modules``): the artifact is verified, built first in a child process when a
local cache has none, and the session is made later by ``Classifier.open``.
"""

from __future__ import annotations

import logging
import time

from app_tier.classifier import Classifier, Runtime
from infra.config import Settings

log = logging.getLogger(__name__)


def load_worker_classifier(settings: Settings, model: str | None = None, *, build: bool = True) -> Classifier:
    """The worker's classifier for ``settings.runtime``; ``ModelUnavailable`` names what is missing or wrong.

    ``build``: with no artifact in ``IMGREC_MODEL_DIR``, build it (needs torch in the
    environment, not in this process). On AWS the boot script fetches it instead.
    """
    name = model or settings.model
    started = time.monotonic()
    if settings.runtime == Runtime.TORCH:
        from app_tier.models import load_classifier

        return load_classifier(name, threads=settings.torch_threads)
    from app_tier import artifact
    from app_tier.onnx_classifier import load_onnx_classifier

    if build:
        directory, _ = artifact.ensure(settings.models_dir, name)
    else:
        directory = artifact.artifact_dir(settings.models_dir, name)
    clf = load_onnx_classifier(directory, name)
    log.info("verified model artifact %s for %s in %.2f s (sha256 %s)", directory, name,
             time.monotonic() - started, clf.manifest.sha256[:12])
    return clf
