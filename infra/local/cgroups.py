"""An instance's memory: its instance type's RAM, enforced by the cgroup memory controller.

Each local instance's init joins its own memory cgroup before it starts anything,
so every process of that instance (boot script, units, what they fork) is charged
to it and the kernel OOM-kills inside it when the instance type's memory is used
up, as on EC2. The group is made under the runner's own cgroup (nested, so a
limit the host puts on the runner still holds): cgroup v1
(``/sys/fs/cgroup/memory/...``) or v2 (``memory.max``). Swap is capped too where
the kernel accounts it (v1 ``memory.memsw``, v2 ``memory.swap.max``).

Standard library only: the init reads ``PROCS_FILE`` through the path it is given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# RAM of EC2 instance types (MiB), from the EC2 instance-type pages; a type not listed
# gets DEFAULT_MEMORY_MIB and a warning.
INSTANCE_MEMORY_MIB = {
    "t2.nano": 512, "t2.micro": 1024, "t2.small": 2048, "t2.medium": 4096, "t2.large": 8192,
    "t3.nano": 512, "t3.micro": 1024, "t3.small": 2048, "t3.medium": 4096, "t3.large": 8192,
    "t3.xlarge": 16384, "t3.2xlarge": 32768,
    "t3a.nano": 512, "t3a.micro": 1024, "t3a.small": 2048, "t3a.medium": 4096, "t3a.large": 8192,
    "t4g.nano": 512, "t4g.micro": 1024, "t4g.small": 2048, "t4g.medium": 4096, "t4g.large": 8192,
    "m1.small": 1740, "m5.large": 8192, "m5.xlarge": 16384, "m6i.large": 8192, "m7i.large": 8192,
    "c5.large": 4096, "c5.xlarge": 8192, "c6i.large": 4096, "c7i.large": 4096,
    "r5.large": 16384, "g4dn.xlarge": 16384,
}
DEFAULT_MEMORY_MIB = 1024
V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")
PROCS_FILE = "cgroup.procs"
GROUP_PREFIX = "imgrec-runner-"
EMPTY_WAIT_S = 2.0


def memory_mib(instance_type: str) -> tuple[int, bool]:
    """(MiB of RAM, known) for an instance type."""
    if instance_type in INSTANCE_MEMORY_MIB:
        return INSTANCE_MEMORY_MIB[instance_type], True
    return DEFAULT_MEMORY_MIB, False


def _own_path(controller_line: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, controllers, path = line.split(":", 2)
        if controller_line == "v2" and num == "0" and controllers == "":
            return path
        if controller_line in controllers.split(","):
            return path
    raise FileNotFoundError("this process is in no memory cgroup")


@dataclass(frozen=True)
class Hierarchy:
    """Where this runner may make memory cgroups: cgroup v1's memory tree or a v2 tree."""

    base: Path  # the runner's own cgroup
    version: int

    @classmethod
    def detect(cls) -> tuple[Hierarchy | None, str]:
        """The hierarchy, or None and why not."""
        if os.geteuid() != 0:
            return None, "not root"
        try:
            if (V1_ROOT / "memory.limit_in_bytes").exists():
                base = V1_ROOT / _own_path("memory").lstrip("/")
                version = 1
            elif "memory" in (V2_ROOT / "cgroup.controllers").read_text().split():
                base = V2_ROOT / _own_path("v2").lstrip("/")
                version = 2
                if "memory" not in (base / "cgroup.subtree_control").read_text().split():
                    return None, f"cgroup v2 memory controller not enabled for children of {base}"
            else:
                return None, "no cgroup memory controller on this kernel"
            probe = base / f"{GROUP_PREFIX}probe-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
        except OSError as err:
            return None, f"cannot create memory cgroups ({err})"
        return cls(base, version), ""

    def runner_group(self, owner_pid: int) -> Path:
        return self.base / f"{GROUP_PREFIX}{owner_pid}"

    def sweep_stale(self) -> list[str]:
        """Remove the groups of runners that are gone (killed before they could clean up)."""
        removed = []
        for group in self.base.glob(f"{GROUP_PREFIX}*"):
            pid = group.name[len(GROUP_PREFIX):]
            if pid.isdigit() and not pid_alive(int(pid)):
                for child in sorted(group.iterdir(), reverse=True):
                    if child.is_dir():
                        InstanceGroup(child, self.version).remove()
                with contextlib.suppress(OSError):
                    group.rmdir()
                    removed.append(group.name)
        return removed


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class InstanceGroup:
    path: Path
    version: int

    @classmethod
    def create(cls, hierarchy: Hierarchy, owner_pid: int, instance_id: str, limit_bytes: int) -> InstanceGroup:
        parent = hierarchy.runner_group(owner_pid)
        parent.mkdir(exist_ok=True)
        group = cls(parent / instance_id, hierarchy.version)
        group.path.mkdir(exist_ok=True)
        if group.version == 1:
            (group.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):  # swap accounting may be off (swapaccount=0)
                (group.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        else:
            (group.path / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (group.path / "memory.swap.max").write_text("0")
        return group

    @property
    def procs_file(self) -> Path:
        return self.path / PROCS_FILE

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this group so far."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self.path / name).read_text()
        except OSError:
            return 0
        m = re.search(r"^oom_kill (\d+)", text, re.M)
        return int(m.group(1)) if m else 0

    def usage_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return 0

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except OSError:
            return []

    def remove(self, wait_s: float = EMPTY_WAIT_S) -> bool:
        """SIGKILL whatever is left in the group, then remove it; False if it could not be removed."""
        deadline = time.monotonic() + wait_s
        while True:
            left = self.pids()
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as err:
                if time.monotonic() >= deadline:
                    if wait_s > 0:
                        log.error("cannot remove memory cgroup %s (%s); processes left: %s", self.path, err, left)
                    return False
            time.sleep(0.02)


def remove_runner_group(hierarchy: Hierarchy, owner_pid: int) -> None:
    group = hierarchy.runner_group(owner_pid)
    for child in [c for c in group.glob("*") if c.is_dir()]:
        InstanceGroup(child, hierarchy.version).remove()
    with contextlib.suppress(FileNotFoundError):
        group.rmdir()
