"""The local "AMI" and the launch template that boots from it.

Locally the image an app-tier instance boots is this checkout (``/opt/imgrec/src``)
plus a prepared venv (``/opt/imgrec/venv``, by default the one the runner runs in),
marked baked (``/opt/imgrec/.baked``) so the boot script skips the install, as on an
image made by ``python -m infra bake``. An un-baked instance (``baked=False``) gets an
empty /opt/imgrec and runs the real install path.

The user data is the deploy's own boot script (``infra.userdata``) for the
local settings, carried by a launch template in moto as ``deploy`` makes one on AWS,
so the controller launches exactly what EC2 would boot.

The instance's PATH starts with a few shims: ``systemctl`` (the local init),
``apt-get`` (checks the image has what the install asks for; the host's packages are
never changed) and, without namespaces, ``useradd``/``chown``/``chgrp`` that skip the
``imgrec`` user, which only exists inside namespaced instances.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from infra.config import Settings
from infra.local.isolation import AMI_MODELS, AMI_MODELS_REL
from infra.userdata import ONNX_RUNTIME, TORCH_RUNTIME, Source, app_user_data

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
LT_DESCRIPTION = "imgrec local app tier"

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

    def ensure_model(self, model: str, runtime: str = ONNX_RUNTIME) -> None:
        """Bake what the workers load into the AMI before any instance boots from it: the model artifact
        (the checkout's cache, built if missing) or, for the torch runtime, torch in the venv.

        ``AmiError`` says what is missing and which command adds it (torch is not in `make run`'s sets)."""
        from app_tier import artifact
        from app_tier.classifier import ModelUnavailable
        from app_tier.models import require_torch

        try:
            if runtime == TORCH_RUNTIME:
                require_torch(f"IMGREC_RUNTIME=torch (model {model})")
            else:
                artifact.ensure(self.src / AMI_MODELS_REL, model)
        except ModelUnavailable as err:
            raise AmiError(f"the local app-tier image cannot run model {model} ({runtime} runtime): {err}") from None

    @classmethod
    def this_checkout(cls, *, baked: bool = True) -> LocalAmi:
        return cls(ROOT, Path(os.path.realpath(sys.prefix)), baked)


def launch_template_name(settings: Settings) -> str:
    return settings.launch_template or f"{settings.prefix}-app-lt"


def local_boot_script(settings: Settings, source: Source | None = None) -> str:
    """The app-tier user data ``deploy`` would write, for these (local) settings; with ``source`` the
    instance installs the project from that repository (the un-baked path), without it the image is baked."""
    # A baked local AMI carries the model artifact (the checkout's cache); an un-baked one builds its own.
    model_dir = AMI_MODELS if source is None else ""
    return app_user_data(settings.replace(launch_template=launch_template_name(settings), model_dir=model_dir),
                         source)


def ensure_launch_template(ec2, settings: Settings, user_data: str | None = None, *, profile_arn: str = "",
                           source: Source | None = None) -> str:
    """The app tier's launch template in moto, with the boot script as its user data; returns its name.

    A template that exists gets a new default version when the user data changed.
    """
    name = launch_template_name(settings)
    text = user_data if user_data is not None else local_boot_script(settings, source)
    data = {"ImageId": settings.ami_id, "InstanceType": settings.instance_type,
            "UserData": base64.b64encode(text.encode()).decode()}
    if profile_arn:  # the app role's instance profile: what the instance's processes may do
        data["IamInstanceProfile"] = {"Arn": profile_arn}
    try:
        found = ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [name]}])
        templates = found.get("LaunchTemplates", [])
        if not templates:
            ec2.create_launch_template(LaunchTemplateName=name, VersionDescription=LT_DESCRIPTION,
                                       LaunchTemplateData=data)
            log.info("launch template %s created (%s, user data %d bytes)", name, settings.instance_type, len(text))
            return name
        lt_id = templates[0]["LaunchTemplateId"]
        current = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Default"])
        if current["LaunchTemplateVersions"][0]["LaunchTemplateData"] != data:
            version = ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData=data,
                                                         VersionDescription=LT_DESCRIPTION)
            number = version["LaunchTemplateVersion"]["VersionNumber"]
            ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(number))
            log.info("launch template %s: new default version %s", name, number)
    except ClientError:
        log.error("cannot create or update launch template %s", name)
        raise
    return name


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
