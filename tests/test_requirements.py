"""The requirement sets: declared once under requirements/, read by make (requirements.txt), by
pyproject.toml's extras and by the instance boot script; the worker's set stays lean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.userdata import Requirements

ROOT = Path(__file__).resolve().parents[1]
# What an app instance must never install (issue 13): the worker runs onnxruntime, not torch.
NOT_ON_WORKERS = ("torch", "torchvision", "pytest", "selenium", "matplotlib", "hypothesis", "ruff", "moto",
                  "efficientnet-lite-pytorch", "onnx")


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line} is not pinned"
            out[re.sub(r"\[.*\]", "", name).lower()] = version
    return out


def test_worker_set_is_the_runtime_only():
    worker = pins(ROOT / Requirements.WORKER)
    assert {"onnxruntime", "numpy", "pillow", "boto3"} <= set(worker)
    assert not set(worker) & set(NOT_ON_WORKERS)
    assert not set(pins(ROOT / Requirements.WEB)) & set(NOT_ON_WORKERS)


def test_requirements_txt_is_every_set_and_nothing_else():
    lines = [x.strip() for x in (ROOT / "requirements.txt").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines == [f"-r {r.value}" for r in Requirements]


def test_a_package_pinned_in_two_sets_has_one_version():
    seen: dict[str, str] = {}
    for r in Requirements:
        for name, version in pins(ROOT / r).items():
            assert seen.setdefault(name, version) == version, f"{name} pinned twice differently"


def test_pyproject_extras_are_read_from_the_same_files():
    setuptools_config = pytest.importorskip("setuptools.config.pyprojecttoml")
    config = setuptools_config.read_configuration(ROOT / "pyproject.toml", expand=True)
    project = config["project"]
    extras = project.get("optional-dependencies") or project["optional_dependencies"]
    assert project["requires-python"] == ">=3.11"
    for r in Requirements:
        role = Path(r).stem
        assert sorted(extras[role]) == sorted(f"{n}=={v}" if n != "moto" else f"moto[server]=={v}"
                                              for n, v in pins(ROOT / r).items()), role
