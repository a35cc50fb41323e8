"""`make run` and `make test`'s install from a fresh clone: time to a healthy stack, venv size, no torch.

Issue 22's targets, measured as a new user meets them: clone the repository (its committed
HEAD), time `make run` from the command to the first `/healthz` 200 (venv, install and the
torch-free artifact build included), then check that venv: its size (<= 700 MB), that
`import torch` fails in it, and that nothing torch or test-only was installed. The stack is
stopped as Ctrl-C does. The artifact it built is then checked against the torch path on the
shared ImageNet sample (top-1 identical on every image, logits within 1e-4; this process needs
torch, as after `make test`). With ``--test-install``, `make install-test` then adds the test
sets to the same clone (timed and sized), and `make run` must then have nothing to install.

    .venv/bin/python -m tests.bench.bench_fresh_run [--test-install] [--keep DIR] [--dataset DIR]

Free ports are used (AWS_ENDPOINT_URL, IMGREC_WEB_PORT), so a running `make run` is left alone.
Figures depend on pip's cache (a first download of the run sets adds its transfer time).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "imagenet-sample-200"
VENV_TARGET_MB = 700
HEALTHY_TARGET_S = 90
LOGIT_TOLERANCE = 1e-4
FORBIDDEN = ("torch", "torchvision", "triton", "nvidia-", "pytest", "hypothesis", "selenium", "ruff")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def du_mb(path: Path) -> float:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def clean_env(clone: Path, endpoint_port: int, web_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMGREC_", "AWS_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_ARGS")}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if "/.venv/" not in p)
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{endpoint_port}", IMGREC_WEB_PORT=str(web_port))
    return env


def installed(venv: Path) -> list[str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze",
                          "--disable-pip-version-check"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split("==")[0].lower() for line in out.split())


def classify(web: str, image: tuple[str, bytes], timeout: float) -> str | None:
    """POST / (the course API) one image and wait for its label; None while the stack cannot answer yet."""
    import requests

    try:
        resp = requests.post(f"{web}/", files={"myfile": image}, timeout=timeout)
    except requests.RequestException:
        return None
    return resp.text if resp.status_code == 200 else None


def run_make_run(clone: Path, env: dict[str, str], web_port: int, timeout: float,
                 image: tuple[str, bytes]) -> dict:
    """`make run` in its own session; times to the run stamp (install done), to /healthz 200 and to the first
    image classified by the stack's own instance (so the torch-less venv really serves); then Ctrl-C."""
    log = clone / "make-run.log"
    url = f"http://127.0.0.1:{web_port}/healthz"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    installed_at = healthy_at = classified_at = label = None
    try:
        while time.monotonic() - started < timeout and proc.poll() is None:
            if installed_at is None and list((clone / ".venv").glob(".installed-*")):
                installed_at = time.monotonic() - started
            if healthy(url):
                healthy_at = time.monotonic() - started
                break
            time.sleep(0.25)
        while healthy_at is not None and time.monotonic() - started < timeout and proc.poll() is None:
            label = classify(f"http://127.0.0.1:{web_port}", image, timeout=60)
            if label is not None:
                classified_at = time.monotonic() - started
                break
            time.sleep(0.5)
    finally:
        stop_started = time.monotonic()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stopped_s = time.monotonic() - stop_started
    leftover = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return {"install_s": installed_at, "healthy_s": healthy_at, "classified_s": classified_at, "label": label,
            "stop_s": stopped_s, "code": proc.returncode, "leftover": leftover, "log": log}


def check_artifact(artifact: Path, dataset: Path, tmp: Path) -> dict:
    """The clone's artifact against the torch runtime and the torch export, on every image of ``dataset``."""
    import numpy as np

    from app_tier.build_model import TORCH, build
    from app_tier.models import load_classifier
    from app_tier.onnx_classifier import load_onnx_classifier
    from app_tier.preprocess import decode_image

    model = artifact.name
    ours = load_onnx_classifier(artifact, model)
    ours.open(1)
    build(model, tmp / "torch-export", TORCH)
    exported = load_onnx_classifier(tmp / "torch-export", model)
    exported.open(1)
    reference = load_classifier(model, device="cpu", threads=1, freeze=False)
    rows = list(csv.DictReader((dataset / "labels.csv").open()))
    same = correct = 0
    worst_runtime = worst_export = 0.0
    for start in range(0, len(rows), 20):
        chunk = rows[start:start + 20]
        images = [decode_image((dataset / r["file"]).read_bytes()) for r in chunk]
        a = ours.logits(ours.preprocess(images))
        b = exported.logits(exported.preprocess(images))
        c = reference.logits(reference.preprocess(images)).numpy()
        worst_export = max(worst_export, float(np.abs(a - b).max()))
        worst_runtime = max(worst_runtime, float(np.abs(a - c).max()))
        same += int((a.argmax(1) == c.argmax(1)).sum())
        correct += sum(int(i == int(r["class_index"])) for i, r in zip(a.argmax(1), chunk, strict=True))
    return {"images": len(rows), "same_top1": same, "correct": correct, "worst_runtime": worst_runtime,
            "worst_export": worst_export, "sha256": ours.manifest.sha256,
            "built_with": ours.manifest.built_with}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(ROOT), help="what to clone (default: this checkout's HEAD)")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for /healthz")
    parser.add_argument("--test-install", action="store_true", help="then time `make install-test` in the clone")
    parser.add_argument("--keep", default=None, help="clone here and keep it")
    args = parser.parse_args(argv)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="imgrec-fresh-"))
    clone = base / "imgrec"
    ok = True
    try:
        head = subprocess.run(["git", "-C", args.repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        subprocess.run(["git", "clone", "--quiet", args.repo, str(clone)], check=True)
        endpoint_port, web_port = free_port(), free_port()
        env = clean_env(clone, endpoint_port, web_port)
        print(f"fresh clone of {args.repo} at {head} in {clone}; Python {sys.version.split()[0]}; "
              f"moto on :{endpoint_port}, web on :{web_port}")
        dataset = Path(args.dataset)
        sample = sorted(dataset.glob("*.JPEG"))[:1]
        if sample:
            image = (sample[0].name, sample[0].read_bytes())
        else:
            from tests.images import jpeg_bytes

            image = ("generated.jpg", jpeg_bytes(1))
        r = run_make_run(clone, env, web_port, args.timeout, image)
        venv = clone / ".venv"
        if r["healthy_s"] is None:
            print(f"`make run` never answered /healthz (exit {r['code']}); its output ends:\n"
                  + r["log"].read_text(errors="replace")[-3000:])
            return 1
        size = du_mb(venv)
        names = installed(venv)
        bad = [n for n in names if any(n == f or (f.endswith("-") and n.startswith(f)) for f in FORBIDDEN)]
        torch_probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True,
                                     text=True)
        torch_fails = torch_probe.returncode != 0 and "No module named 'torch'" in torch_probe.stderr
        install = f"{r['install_s']:.1f} s" if r["install_s"] is not None else "not seen"
        print(f"make run: install (venv + run sets + artifact) {install}; first /healthz 200 "
              f"{r['healthy_s']:.1f} s after the command (target <= {HEALTHY_TARGET_S} s: "
              f"{'met' if r['healthy_s'] <= HEALTHY_TARGET_S else 'MISSED'})")
        print(f"make run: first image classified {r['classified_s']:.1f} s after the command ({r['label']!r})"
              if r["classified_s"] is not None else "make run: no image classified before the timeout")
        ok &= r["classified_s"] is not None
        print(f"make run: venv {size:.0f} MB, {len(names)} distributions (target <= {VENV_TARGET_MB} MB: "
              f"{'met' if size <= VENV_TARGET_MB else 'MISSED'}); torch or test tools installed: "
              f"{', '.join(bad) or 'none'}; `import torch` in it: "
              f"{'fails (ModuleNotFoundError)' if torch_fails else 'WORKS'}")
        print(f"make run: Ctrl-C stopped it in {r['stop_s']:.1f} s (exit {r['code']}), processes left: "
              f"{len(r['leftover'])}")
        ok &= r["healthy_s"] <= HEALTHY_TARGET_S and size <= VENV_TARGET_MB and torch_fails and not bad
        ok &= not r["leftover"]

        artifact = clone / ".data" / "models" / "efficientnet_lite0"
        if (dataset / "labels.csv").is_file():
            a = check_artifact(artifact, dataset, base)
            print(f"artifact {a['sha256'][:16]} ({a['built_with'].get('exporter')}): top-1 equal to the torch "
                  f"runtime on {a['same_top1']}/{a['images']} images, {a['correct']} correct; max |logit diff| "
                  f"{a['worst_runtime']:.2e} vs the torch runtime, {a['worst_export']:.2e} vs torch.onnx's export "
                  f"(tolerance {LOGIT_TOLERANCE:g})")
            ok &= a["same_top1"] == a["images"] and max(a["worst_runtime"], a["worst_export"]) <= LOGIT_TOLERANCE
        else:
            print(f"no dataset at {dataset}: artifact check skipped")

        if args.test_install:
            started = time.monotonic()
            proc = subprocess.run(["make", "install-test"], cwd=clone, env=env, capture_output=True, text=True)
            took = time.monotonic() - started
            after = subprocess.run(["make", "-n", "run"], cwd=clone, env=env, capture_output=True, text=True)
            rest = [line for line in after.stdout.splitlines() if line.strip()]
            print(f"make install-test (after make run): {took:.0f} s, exit {proc.returncode}; venv now "
                  f"{du_mb(venv):.0f} MB; `make run` then runs only: {rest}")
            ok &= proc.returncode == 0 and rest == [".venv/bin/python -m infra up"]
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
