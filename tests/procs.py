"""Start and stop our real processes (worker, web tier, controller) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from infra.config import Settings
from infra.local.moto_server import free_port
from tests.helpers import child_env, wait_until

# The name the process helpers and older tests use; one implementation (tests/helpers.py).
wait_for = wait_until

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


def worker_pids(parent) -> list[int]:
    """The live (not zombie) child processes of ``parent`` (a runner: its instances' inits)."""
    try:
        return sorted(p.pid for p in psutil.Process(parent.pid).children() if p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return []


def web_settings(moto_server, data_dir: Path, **overrides) -> Settings:
    """Settings for a web tier of its own: a fresh name prefix and a free port."""
    prefix = f"w{uuid.uuid4().hex[:10]}"
    return Settings.from_env({}, endpoint_url=moto_server.url, prefix=prefix, app_instance_prefix=f"{prefix}-app",
                             web_instance_name=f"{prefix}-web", data_dir=str(data_dir), receive_wait_s=1,
                             max_attempts=3, web_port=free_port(), **overrides)


@contextmanager
def running_web(settings: Settings, log_path: Path, **env_extra: str):
    """`python -m web_tier` until the block ends; fails with its log if it does not come up."""
    proc = start_module("web_tier", settings, log_path=log_path, **env_extra)
    base = f"http://{settings.web_host}:{settings.web_port}"

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"web tier exited with {proc.returncode}:\n{log_text(proc)}")
        try:
            return requests.get(base + "/", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 30, what="web tier")
        proc.base = base
        yield proc
    finally:
        stop_process(proc)
