"""Start and stop our real processes (worker, web tier, controller) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from infra.config import Settings
from tests.conftest import child_env

ROOT = Path(__file__).resolve().parent.parent


def start_module(module: str, settings: Settings, *args: str, log_path: Path | None = None,
                 **env_extra: str) -> subprocess.Popen:
    """``python -m <module> <args>`` with ``settings`` in its environment; output to ``log_path``."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=child_env(settings, **env_extra),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int:
    """Ask politely, then kill; returns the exit code. Kills the whole process group at the end."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (forked children) must not outlive the test
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_http(url: str, timeout: float = 30.0) -> None:
    def up():
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False

    wait_for(up, timeout, what=url)


def log_text(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text(errors="replace") if getattr(proc, "log_path", None) else ""
