"""The deploy commands' own errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class DeployError(RuntimeError):
    """Deploy cannot go on (a name is taken by something not ours, no default VPC, no model artifact, ...)."""


class NotConfirmed(DeployError):
    """The user did not say yes (or could not be asked)."""
