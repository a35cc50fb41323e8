"""The stack's name and the names of the resources in it, defined once: the template names its resources
with these; deploy's plan and destroy, the local stack and the tests find them by these."""

from __future__ import annotations

from infra.config import Settings
from infra.tags import Role


def stack_name(prefix: str) -> str:
    """One stack per prefix; its resources carry the prefix too (the course's names)."""
    return prefix


def launch_template_name(settings: Settings) -> str:
    """The app tier's launch template, as the controller finds it (``IMGREC_LAUNCH_TEMPLATE``)."""
    return settings.launch_template or f"{settings.prefix}-app-lt"


def web_launch_template_name(prefix: str) -> str:
    return f"{prefix}-web-lt"


def role_name(prefix: str, role: Role) -> str:
    """An instance role; its instance profile has the same name."""
    return f"{prefix}-{role}-role"


def policy_name(prefix: str, role: Role) -> str:
    return f"{role_name(prefix, role)}-policy"


def security_group_name(prefix: str, role: Role) -> str:
    return f"{prefix}-{role}-sg"


def web_group_name(prefix: str) -> str:
    return f"{prefix}-web"


def dashboard_name(prefix: str) -> str:
    return f"{prefix}-dashboard"
