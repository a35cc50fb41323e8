"""The local "AMI" and the launch template that boots from it.

Locally the image an app-tier instance boots is this checkout (``/opt/imgrec/src``)
plus a prepared venv (``/opt/imgrec/venv``, by default the one the runner runs in),
marked baked (``/opt/imgrec/.baked``) so the boot script skips the install, as on an
image made by ``python -m infra bake``. An un-baked instance (``baked=False``) gets an
empty /opt/imgrec and runs the real install path.

A baked image also carries the model artifact, where an instance keeps it
(``/var/lib/imgrec/models/<model>``, ``infra.local.isolation``): the boot script's model
unit finds it there with the checksum the stack names and skips the download.

The user data is the stack's own (its launch template, from ``infra.cfn``), so the
controller launches exactly what EC2 would boot.

The instance's PATH starts with a few shims: ``systemctl`` (the local init),
``apt-get`` (checks the image has what the install asks for; the host's packages are
never changed) and, without namespaces, ``useradd``/``chown``/``chgrp`` that skip the
``imgrec`` user, which only exists inside namespaced instances.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from infra.local.isolation import AMI_MODELS_REL
from infra.userdata import ONNX_RUNTIME, TORCH_RUNTIME

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]

# What `apt-get install` of the install script asks for, and how the local image shows it has it.
APT_PROVIDES = {
    "python3": "python3 -c pass", "python3-venv": "python3 -c 'import venv, ensurepip'",
    "python3-pip": "python3 -c 'import ensurepip'", "git": "git --version",
}


class AmiError(RuntimeError):
    """The local image lacks what its workers need; the message names it and the command that adds it."""


@dataclass(frozen=True)
class LocalAmi:
    src: Path
    venv: Path
    baked: bool = True

    @property
    def models_dir(self) -> Path:
        """Where the image's model artifacts are (the checkout's cache, what `make install` builds)."""
        return self.src / AMI_MODELS_REL

    def ensure_model(self, model: str, runtime: str = ONNX_RUNTIME) -> None:
        """Bake what the workers load into the AMI before any instance boots from it: the model artifact
        (the checkout's cache, built if missing) or, for the torch runtime, torch in the venv. The app tier's
        own code decides, in a child process (the emulator imports no tier).

        ``AmiError`` says what is missing and which command adds it (torch is not in `make run`'s sets)."""
        if runtime != TORCH_RUNTIME and (self.models_dir / model / "manifest.json").is_file():
            return
        check = ([sys.executable, "-c", "import sys; from app_tier.models import require_torch; "
                  "require_torch(sys.argv[1])", f"IMGREC_RUNTIME=torch (model {model})"] if runtime == TORCH_RUNTIME
                 else [sys.executable, "-m", "app_tier.artifact", "ensure", "--model", model,
                       "--dest", str(self.models_dir / model)])
        done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1].split(": ", 1)[-1]
            raise AmiError(f"the local app-tier image cannot run model {model} ({runtime} runtime): {why}")

    @classmethod
    def this_checkout(cls, *, baked: bool = True) -> LocalAmi:
        return cls(ROOT, Path(os.path.realpath(sys.prefix)), baked)


def write_shims(bin_dir: Path, *, python: str, namespaces: bool) -> None:
    """The instance's own commands, first in its PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shims = {
        "systemctl": f"#!/bin/sh\nexec '{python}' -S '{ROOT}/infra/local/systemctl.py' \"$@\"\n",
        "apt-get": _apt_get(),
        "useradd": ("#!/bin/sh\n# the local image has its service user; useradd would change the host\n"
                    "for u; do :; done\nid \"$u\" >/dev/null 2>&1 && exit 0\n"
                    "echo \"local instance: useradd $u skipped (no namespaces: units run as the runner's user)\" >&2\n"
                    "exit 0\n"),
    }
    if not namespaces:
        for cmd in ("chown", "chgrp"):
            shims[cmd] = (f"#!/bin/sh\ncase \"$1\" in imgrec*|*:imgrec) echo \"local instance: {cmd} $1 skipped "
                          f"(no imgrec user without namespaces)\" >&2; exit 0;; esac\nexec /bin/{cmd} \"$@\"\n")
    for name, text in shims.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)


def _apt_get() -> str:
    checks = "\n".join(f"    {pkg}) {cmd} >/dev/null 2>&1 || missing=\"$missing {pkg}\";;"
                       for pkg, cmd in APT_PROVIDES.items())
    return ("#!/bin/bash\n# local image: packages are checked, never installed (that would change the host)\n"
            "[ \"$1\" = install ] || exit 0\nmissing=\nasked=\nfor pkg in \"${@:2}\"; do\n  case \"$pkg\" in\n"
            f"    -*) continue;;\n{checks}\n    *) missing=\"$missing $pkg\";;\n  esac\n  asked=\"$asked $pkg\"\ndone\n"
            "if [ -n \"$missing\" ]; then echo \"local image lacks:$missing (apt-get is not run on the host)\" >&2; "
            "exit 100; fi\necho \"local image:$asked present (apt-get is not run on the host)\"\n")
