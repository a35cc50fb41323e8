"""The local stack's own lines: a reader gone must not cut its teardown short.

`make run | tee run.log`, then Ctrl-C: the terminal's SIGINT ends tee as well, and every line the
stack prints while stopping hits a closed pipe. Before the fix the first such line raised
BrokenPipeError inside the stop path and moto was left listening on 4566.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lines_to_a_closed_pipe_do_not_stop_what_follows(tmp_path):
    marker = tmp_path / "teardown-finished"
    code = ("from pathlib import Path\nfrom infra.local.stack import say\n"
            "say('stopping…')\nsay('  moto stopped')\nsay('an error line', err=True)\n"
            f"Path({str(marker)!r}).write_text('done')\nsay('local stack stopped')\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (tee) is gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(write_end)
    assert marker.read_text() == "done", proc.stderr
    assert proc.returncode == 0, proc.stderr  # no exit-time flush error (Python's 120) either
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr
    assert "an error line" in proc.stderr  # stderr still reaches the terminal
