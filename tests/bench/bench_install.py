"""Install one role's requirement set into a fresh venv from PyPI and print its size on disk.

Issue 13's target: the worker set (requirements/worker.txt, what an app instance installs)
<= 400 MB (`du -sh`). Prints the total, the largest installed distributions and whether any
package an app instance must not carry (torch, test and dev tools) slipped in.

    python -m tests.bench.bench_install [--role worker|web|local|model|torch|dev] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_MB = {"worker": 400}
FORBIDDEN = ("torch", "torchvision", "nvidia", "triton", "pytest", "selenium", "matplotlib", "hypothesis", "ruff",
             "moto")
# The local stack's set is never on an instance, so it may carry moto and matplotlib; torch and test tools, never.
FORBIDDEN_BY_ROLE = {"local": tuple(f for f in FORBIDDEN if f not in ("moto", "matplotlib")), "torch": (), "dev": ()}


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def du_h(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="worker", choices=("worker", "web", "local", "model", "torch", "dev"))
    parser.add_argument("--keep", default=None, help="make the venv here and keep it")
    args = parser.parse_args(argv)
    req = ROOT / "requirements" / f"{args.role}.txt"
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix=f"imgrec-{args.role}-venv-"))
    venv = base / "venv"
    try:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", "-r", str(req)], check=True)
        took = time.monotonic() - started
        site = next((venv / "lib").glob("python3*/site-packages"))
        freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
        names = [line.split("==")[0].lower() for line in freeze.split()]
        forbidden = FORBIDDEN_BY_ROLE.get(args.role, FORBIDDEN)
        bad = [n for n in names if any(n == f or n.startswith(f + "-") for f in forbidden)]
        sizes = sorted(((du_mb(p), p.name) for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")),
                       reverse=True)
        total = du_mb(venv)
        print(f"requirement set: {req.relative_to(ROOT)} ({args.role}), Python {sys.version.split()[0]}")
        print(f"installed in {took:.0f} s: {len(names)} distributions: {', '.join(sorted(names))}")
        print(f"du -sh {venv.name}: {du_h(venv)} ({total:.0f} MB; site-packages {du_mb(site):.0f} MB)")
        print("largest: " + ", ".join(f"{name} {mb:.0f} MB" for mb, name in sizes[:6]))
        print(f"forbidden packages present: {', '.join(bad) if bad else 'none'}")
        target = TARGET_MB.get(args.role)
        if target:
            print(f"target <= {target} MB: {'met' if total <= target else 'MISSED'}")
        return 0 if not bad else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
