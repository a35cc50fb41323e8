"""Start-up shared by every long-running process (worker, instance runner, controller, web tier)."""

from __future__ import annotations

import logging
import sys

from infra.config import ConfigError, Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMAT_WITH_PID = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
EXIT_BAD_CONFIG = 2


def settings_and_logging(*, with_pid: bool = False) -> Settings:
    """Settings from the environment and logging at their level; a bad setting exits 2 with one line."""
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT_WITH_PID if with_pid else LOG_FORMAT)
    return settings
