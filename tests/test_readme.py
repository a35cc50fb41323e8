"""The README stays true: its configuration table is the one the code generates."""

import re
from pathlib import Path

from infra.config import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_configuration_table_matches_settings():
    text = README.read_text()
    block = re.search(r"<!-- CONFIG-TABLE -->.*?(\| variable .*?)\n<!-- /CONFIG-TABLE -->", text, re.S)
    assert block, "README lacks the generated configuration table"
    assert block.group(1).strip() == markdown_table().strip(), (
        "README configuration table is stale: regenerate it with `python -m infra.config --write-readme`")


def test_readme_quick_start_is_make_run_and_make_test():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick and "make test" in quick
