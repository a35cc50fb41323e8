"""Boot scripts as pure text: the runtime per instance type, the requirement set per role, the units
per role, and the scripts' shell syntax. (Deployed scripts are read back from moto in test_deploy.py.)"""

from __future__ import annotations

import subprocess

import pytest

from infra.config import Settings
from infra.userdata import (
    ENV_FILE,
    UNIT_DIR,
    Requirements,
    Role,
    Source,
    Unit,
    app_settings,
    app_user_data,
    bake_script,
    is_gpu_type,
    pip_extra,
    requirement_sets,
    units,
    web_user_data,
    worker_runtime,
)

URI = "s3://x-model-bucket/models/efficientnet_lite0/" + "a" * 64 + "/"
SOURCE = Source("https://example.org/imgrec.git", "main")


@pytest.mark.parametrize(("itype", "gpu"), [
    ("g4dn.xlarge", True), ("g5.2xlarge", True), ("g6e.xlarge", True), ("gr6.4xlarge", True), ("p3.2xlarge", True),
    ("p4d.24xlarge", True), ("p5.48xlarge", True),
    ("t3.micro", False), ("c5.large", False), ("m6i.large", False), ("inf2.xlarge", False), ("trn1.2xlarge", False),
    ("c7gn.large", False), ("m7g.medium", False),
])
def test_gpu_families_are_the_nvidia_ones(itype, gpu):
    assert is_gpu_type(itype) is gpu
    s = Settings(instance_type=itype)
    assert worker_runtime(s) == ("torch" if gpu else "onnx")
    assert worker_runtime(s.replace(runtime="torch")) == "torch"  # asked for explicitly


@pytest.mark.parametrize(("role", "runtime", "itype", "sets", "extra"), [
    (Role.APP, "onnx", "t3.micro", (Requirements.WORKER,), ""),
    (Role.APP, "torch", "g4dn.xlarge", (Requirements.WORKER, Requirements.MODEL, Requirements.TORCH), ""),
    (Role.APP, "torch", "c5.large", (Requirements.WORKER, Requirements.MODEL, Requirements.TORCH), "--extra-index-url"),
    (Role.WEB, "onnx", "t3.small", (Requirements.WEB,), ""),
])
def test_requirement_sets_per_role_and_runtime(role, runtime, itype, sets, extra):
    assert requirement_sets(role, runtime) == sets
    assert Requirements.DEV not in requirement_sets(role, runtime)
    assert pip_extra(itype, runtime if role is Role.APP else "onnx").startswith(extra)


@pytest.mark.parametrize(("role", "changes", "controller", "expected"), [
    (Role.APP, {"model_uri": URI}, True, (Unit.MODEL, Unit.WORKER)),
    (Role.APP, {}, True, (Unit.WORKER,)),  # local: the worker builds or finds its artifact itself
    (Role.APP, {"model_uri": URI, "runtime": "torch"}, True, (Unit.WORKER,)),
    (Role.WEB, {}, True, (Unit.WEB, Unit.CONTROLLER)),
    (Role.WEB, {}, False, (Unit.WEB,)),
])
def test_units_per_role(role, changes, controller, expected):
    assert units(role, Settings(**changes), controller=controller) == expected


def test_scripts_are_valid_bash_and_fit_in_user_data():
    s = Settings(model_uri=URI)
    scripts = [app_user_data(s, SOURCE), app_user_data(s), bake_script(s, SOURCE),
               web_user_data(s, SOURCE, instance_type="t3.small", controller=True),
               web_user_data(s, None, instance_type="t3.small", controller=False),
               app_user_data(s.replace(instance_type="g5.xlarge"), SOURCE)]
    for script in scripts:
        subprocess.run(["bash", "-n"], input=script.encode(), check=True)
        assert "@@" not in script and len(script.encode()) < 16 * 1024


def test_app_settings_are_the_same_whoever_launches():
    s = Settings(model_uri=URI, launch_template="x-app-lt", instance_type="g4dn.xlarge", endpoint_url=None)
    inst = app_settings(s)
    assert inst.launch_template == "" and inst.runtime == "torch" and inst.instance_id == ""
    assert app_settings(inst) == inst  # idempotent: the controller's settings are already per-instance
    assert app_user_data(s) == app_user_data(s.replace(launch_template=""))


def test_a_refused_artifact_stops_the_boot_before_the_worker(tmp_path):
    """Run the start loop of a real app script with a systemctl that fails the model unit, as systemd
    does when ``python -m app_tier.artifact fetch`` exits 3: the worker is never started."""
    script = app_user_data(Settings(model_uri=URI))
    start = script[script.index("for unit in "):]
    log = tmp_path / "systemctl.log"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/bash\necho "$@" >> {log}\n[ "$3" != imgrec-model.service ]\n')
    (fake / "journalctl").write_text("#!/bin/bash\necho 'model artifact for efficientnet_lite0 refused: model file "
                                     "... has sha256 b..., but manifest ... says a...'\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + start], capture_output=True, text=True,
                          env={"PATH": f"{fake}:/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "refusing to start the worker: the model artifact was refused" in proc.stderr
    assert "has sha256 b..., but manifest ... says a..." in proc.stdout
    assert log.read_text().splitlines() == ["enable --now imgrec-model.service"]


def test_env_file_and_units_are_written_where_the_units_read_them():
    script = app_user_data(Settings(model_uri=URI))
    assert f"cat > {ENV_FILE} <<'IMGREC_EOF'" in script
    for name in ("imgrec-model.service", "imgrec-worker.service"):
        assert f"cat > {UNIT_DIR}/{name} <<'IMGREC_EOF'" in script
    assert script.count(f"EnvironmentFile={ENV_FILE}") == 2
