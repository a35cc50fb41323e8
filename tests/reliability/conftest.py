"""Fixtures for the reliability suite, and the summary printed at the end of the run."""

from __future__ import annotations

import time

import pytest

from tests.reliability.stack import ProcStack
from tests.reliability.tally import TALLY

_STARTED = time.monotonic()


@pytest.fixture(scope="module")
def proc_stack(tmp_path_factory):
    """The tiers as separate processes behind a fault proxy; stopped (and killed if need be) at the end."""
    stack = ProcStack(tmp_path_factory.mktemp("procstack"))
    try:
        yield stack.start()
    finally:
        stack.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = TALLY.lines()
    if TALLY.sent == 0 and not TALLY.faults and not TALLY.bad_inputs:
        return
    terminalreporter.section("imgrec reliability summary")
    for line in lines:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"wall time of the run: {time.monotonic() - _STARTED:.0f} s")
