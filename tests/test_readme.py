"""The README stays true: its configuration table is the one the code generates, and its quick start
names Makefile targets that exist, do what it says, and the addresses they really use."""

import re
from pathlib import Path

from infra.__main__ import settings_table
from infra.config import DEFAULT_WEB_HOST, DEFAULT_WEB_PORT, LOCAL_ENDPOINT, markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def makefile_recipes(text: str) -> dict[str, str]:
    """target -> its recipe (the tab-indented lines under the rule); every target of a multi-target rule."""
    recipes: dict[str, str] = {}
    targets: list[str] = []
    for line in text.splitlines():
        rule = re.match(r"^([A-Za-z0-9_. -]+):(?!=)", line)
        if rule and not line.startswith("\t"):
            targets = rule.group(1).split()
            for t in targets:
                recipes.setdefault(t, "")
        elif line.startswith("\t"):
            for t in targets:
                recipes[t] += line.strip() + "\n"
        elif line.strip() and not line.startswith("#"):
            targets = []
    return recipes


def test_readme_configuration_table_matches_settings():
    text = README.read_text()
    block = re.search(r"<!-- CONFIG-TABLE -->.*?(\| variable .*?)\n<!-- /CONFIG-TABLE -->", text, re.S)
    assert block, "README lacks the generated configuration table"
    assert block.group(1).strip() == markdown_table(settings_table()).strip(), (
        "README configuration table is stale: regenerate it with `python -m infra readme --write`")


def test_readme_quick_start_is_make_run_and_make_test():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = set(re.findall(r"\bmake ([a-z][\w-]*)", quick))
    assert {"run", "test"} <= commands, commands
    recipes = makefile_recipes((ROOT / "Makefile").read_text())
    assert commands <= set(recipes), f"the quick start names make targets the Makefile lacks: {commands - set(recipes)}"
    assert "-m infra up" in recipes["run"], recipes["run"]  # the whole local stack
    assert "-m pytest" in recipes["test"], recipes["test"]  # the whole suite
    # the addresses it promises are the ones `make run` uses
    assert f"`{LOCAL_ENDPOINT.removeprefix('http://')}`" in quick
    assert f"http://{DEFAULT_WEB_HOST}:{DEFAULT_WEB_PORT}" in quick
