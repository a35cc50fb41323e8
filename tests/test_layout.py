"""The layering rules, read from the source: tiers import the contract, never each other or the emulator/deployer.

Every import is found with ``ast`` (function-level imports included), so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("app_tier", "web_tier", "controller", "workload")
# infra/__main__.py is the command line that dispatches to `up`, `moto`, `deploy`: the one place allowed to.
CONTRACT_EXEMPT = {"infra/__main__.py"}
# The README's configuration table lists the deploy-only and strict-local-AWS settings too: the table generator in
# infra/config.py imports their declarations (plain data) and nothing else of the deployer or the emulator.
CONTRACT_ALLOWED = {("infra/config.py", "infra.deploy.settings"), ("infra/config.py", "infra.deploy.settings.DeploySettings"),
                    ("infra/config.py", "infra.deploy.settings.DEPLOY_ONLY_NOTE"),
                    ("infra/config.py", "infra.local.strict.settings"),
                    ("infra/config.py", "infra.local.strict.settings.StrictSettings"),
                    ("infra/config.py", "infra.local.strict.settings.NOTE")}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def violations(files: list[Path], forbidden: tuple[str, ...], allowed: set[tuple[str, str]] = frozenset()) -> list[str]:
    bad = []
    for path in files:
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
        for module in imported_modules(path):
            if (rel, module) in allowed:
                continue
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.name if not path.is_relative_to(ROOT) else path.relative_to(ROOT)} imports {module}")
    return bad


@pytest.mark.parametrize("tier", TIERS)
def test_tiers_import_neither_local_emulation_nor_deployment(tier):
    assert violations(sources(tier), ("infra.local", "infra.deploy")) == []


@pytest.mark.parametrize("tier", TIERS)
def test_tiers_do_not_import_each_other(tier):
    others = tuple(t for t in TIERS if t != tier)
    assert violations(sources(tier), others) == []


def test_runtime_contract_imports_no_tier_no_emulator_no_deployer():
    top = [p for p in (ROOT / "infra").glob("*.py") if str(p.relative_to(ROOT)) not in CONTRACT_EXEMPT]
    assert top, "infra/ has no top-level modules?"
    assert violations(top, ("infra.local", "infra.deploy", *TIERS), CONTRACT_ALLOWED) == []


def test_deployment_does_not_import_local_emulation():
    assert violations(sources("infra/deploy"), ("infra.local", *TIERS)) == []


def test_no_test_module_imports_another_test_module():
    """Shared helpers live in conftest.py or helper modules (tests/helpers.py, procs.py, ...); benches too."""
    names = {p.stem for p in sources("tests") if p.name.startswith("test_")}
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in sources("tests") for m in imported_modules(p)
           if m.split(".")[-1] in names and m.split(".")[-1] != p.stem]
    assert bad == []


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from infra.local.stack import main\n    import web_tier.jobs\n")
    assert imported_modules(bad) >= {"infra.local.stack", "web_tier.jobs"}
    assert violations([bad], ("infra.local",)) != []


def string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def product_sources() -> list[Path]:
    return [p for folder in ("infra", *TIERS) for p in sources(folder)]


@pytest.mark.parametrize(("contract", "names"), [
    ("infra/metrics.py", {"ImagesProcessed", "ImageErrors", "InferenceMs", "EndToEndMs", "Backlog",
                          "BacklogPerInstance", "DesiredInstances", "RunningInstances"}),
    ("infra/tags.py", {"imgrec:stack", "imgrec:role", "baked-ami"}),
])
def test_each_contract_name_is_spelled_in_one_module(contract, names):
    """Metric names and tag keys live in their contract module; everything else imports them."""
    spelled = {str(p.relative_to(ROOT)): string_literals(p) & names for p in product_sources()}
    elsewhere = {path: found for path, found in spelled.items() if found and path != contract}
    assert spelled[contract] == names
    assert elsewhere == {}
