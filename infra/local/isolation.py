"""What keeps one local instance apart from another, and what this machine allows of it.

With root (CAP_SYS_ADMIN) each instance's init runs in its own mount and PID
namespace: the instance's ``/etc/imgrec``, ``/etc/systemd/system``, ``/opt/imgrec``,
``/var/lib/imgrec`` and ``/var/log`` are bind mounts of folders under
``<data dir>/instances/<id>/root``, visible to that instance only and gone with its
last process; its init is PID 1, so when it exits the kernel ends everything the
instance started. The boot script and units run unchanged.

Without them (no root, or ``IMGREC_LOCAL_ISOLATION=off``) the same five paths are
rewritten, in the user data and in the unit files, to that folder: the script runs
on the host's view with its paths moved, which the runner says once at start.

Standard library only: the init imports this before anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

# The instance paths our boot script and units use; each is private to one instance.
PRIVATE_PATHS = ("/etc/imgrec", "/etc/systemd/system", "/opt/imgrec", "/var/lib/imgrec", "/var/log")
# The local "AMI": what an instance's /opt/imgrec holds when baked.
AMI_SRC = "/opt/imgrec/src"
AMI_VENV = "/opt/imgrec/venv"
# The model artifact baked into the local AMI: the checkout's cache, what `make install` builds.
AMI_MODELS_REL = ".data/models"
AMI_MODELS = f"{AMI_SRC}/{AMI_MODELS_REL}"
INSTANCE_MODELS = "/var/lib/imgrec/models"  # where an instance's model unit installs artifacts
BAKED_MARK = ".baked"
SERVICE_USER = "imgrec"
SERVICE_UID = 64_123  # the image's `imgrec` user, in the instance's own /etc/passwd


class IsolationError(OSError):
    pass


@dataclass(frozen=True)
class Features:
    """Which isolation features the runner uses; ``off`` maps each missing one to the reason."""

    namespaces: bool
    memory_cgroup: bool
    run_as_user: bool
    off: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        on = [name for name, used in (("mount+pid namespaces", self.namespaces),
                                      ("memory cgroup", self.memory_cgroup), ("User=", self.run_as_user)) if used]
        text = f"local instances: {', '.join(on) or 'no isolation'}"
        if self.off:
            text += "; OFF: " + "; ".join(f"{k} ({v})" for k, v in self.off.items())
        return text


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc().unshare(flags), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source} on {target}")


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """This process gets ``sig`` when its parent dies: an instance never outlives the runner that owns it."""
    _libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def become_subreaper() -> None:
    """Orphans of this process's descendants come back to it (the init's job without a PID namespace)."""
    _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def namespaces_work() -> tuple[bool, str]:
    """Try, in a throw-away child, what the init will do: a new mount and PID namespace."""
    if os.geteuid() != 0:
        return False, "not root"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            unshare(CLONE_NEWNS | CLONE_NEWPID)
            mount("none", "/", None, MS_REC | MS_PRIVATE)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return False, "unshare(CLONE_NEWNS|CLONE_NEWPID) refused here (a container without CAP_SYS_ADMIN?)"
    return True, ""


def reachable_by_others(path: Path) -> bool:
    """Whether an unprivileged user can execute ``path``: every folder on its real path is o+x."""
    real = Path(os.path.realpath(path))
    for part in [*reversed(real.parents), real]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


# ---------------------------------------------------------------- an instance's file system

def instance_root(instance_dir: Path) -> Path:
    return instance_dir / "root"


def prepare_root(instance_dir: Path, *, src: Path | None, venv: Path | None, private_mounts: bool) -> Path:
    """The instance's private folders; with ``src``/``venv`` its /opt/imgrec is the baked local AMI.

    With ``private_mounts`` the instance gets its own /etc/passwd and /etc/group: the host's plus the
    image's ``imgrec`` service user (bind-mounted over the host's inside the instance only).
    """
    root = instance_root(instance_dir)
    for path in PRIVATE_PATHS:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    opt = root / "opt/imgrec"
    if src is not None and venv is not None:
        (opt / BAKED_MARK).write_text("local AMI: this checkout and its venv\n")
        for name, target in (("src", src), ("venv", venv)):
            link = opt / name
            if private_mounts:  # a mount point; the init binds the real folder here
                link.mkdir(exist_ok=True)
            elif not link.is_symlink():
                link.symlink_to(target)
        _carry_models(root, src, private_mounts)
    if private_mounts:
        for name, line in (("passwd", f"{SERVICE_USER}:x:{SERVICE_UID}:{SERVICE_UID}:imgrec:/opt/imgrec:"
                                      "/usr/sbin/nologin"),
                           ("group", f"{SERVICE_USER}:x:{SERVICE_UID}:")):
            host = Path("/etc", name).read_text()
            if not re.search(rf"^{SERVICE_USER}:", host, re.M):
                host = host.rstrip("\n") + "\n" + line + "\n"
            (instance_dir / name).write_text(host)
    return root


def _carry_models(root: Path, src: Path, private_mounts: bool) -> None:
    """The baked image carries its model artifacts where an instance keeps them (``/var/lib/imgrec/models/<model>``),
    so the boot script's model unit finds the one the stack names there and downloads nothing. Each is a link
    to the image's read-only copy; a different artifact is installed over the link, never into the image."""
    models = root / INSTANCE_MODELS.lstrip("/")
    models.mkdir(parents=True, exist_ok=True)
    for built in sorted((Path(src) / AMI_MODELS_REL).glob("*/")):
        link = models / built.name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(f"{AMI_MODELS}/{built.name}" if private_mounts else os.path.realpath(built))


def ensure_mount_points() -> None:
    """Empty host folders the instances' private mounts sit on (root only; left in place, empty)."""
    for path in PRIVATE_PATHS:
        Path(path).mkdir(parents=True, exist_ok=True)


def enter_private_mounts(instance_dir: Path, *, src: Path | None, venv: Path | None, hide: Path | None) -> None:
    """In a fresh mount namespace (already unshared): bind the instance's folders over the host's.

    ``src`` and ``venv`` are bound read-only at /opt/imgrec/src and /opt/imgrec/venv (a
    baked instance); ``hide`` (the data dir, when it lies inside the checkout) gets an empty
    tmpfs so one instance cannot read another's files through /opt/imgrec/src.
    """
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    root = instance_root(instance_dir)
    for path in PRIVATE_PATHS:
        mount(str(root / path.lstrip("/")), path, None, MS_BIND)
    for name in ("passwd", "group"):
        if (instance_dir / name).exists():
            mount(str(instance_dir / name), f"/etc/{name}", None, MS_BIND)
    for source, target in ((src, AMI_SRC), (venv, AMI_VENV)):
        if source is not None and Path(target).is_dir():
            mount(str(source), target, None, MS_BIND | MS_REC)
            mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    if src is not None and hide is not None:
        try:
            inside = Path(AMI_SRC) / Path(os.path.realpath(hide)).relative_to(os.path.realpath(src))
        except ValueError:
            inside = None
        if inside is not None and inside.is_dir():
            mount("tmpfs", str(inside), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
            _show_models(src, inside)


def _show_models(src: Path, hidden: Path) -> None:
    """The AMI's model artifact stays visible (read-only) when the data dir that holds it was hidden."""
    host = Path(os.path.realpath(src)) / AMI_MODELS_REL
    target = Path(AMI_MODELS)
    try:
        target.relative_to(hidden)
    except ValueError:
        return  # not under the hidden folder: the checkout's own copy shows through the read-only bind
    if host.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        mount(str(host), str(target), None, MS_BIND)
        mount("none", str(target), None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def mount_proc() -> None:
    """/proc of the new PID namespace, so the instance sees its own processes (PID 1 is its init)."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


# ---------------------------------------------------------------- without namespaces

def children_of(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(entry.name))
    return out


def finish_children() -> None:
    """Without a PID namespace: SIGKILL what is left below us (we are its subreaper), as the kernel
    does for a PID namespace whose init exits."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        kids = children_of(os.getpid())
        if not kids:
            return
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        time.sleep(0.02)



_PATH_RE = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(p) for p in PRIVATE_PATHS) + r")(?=[/\s'\";:)]|$)")


def rewrite_paths(text: str, root: Path) -> str:
    """Move the five instance paths under ``root`` (the fallback for hosts without mount namespaces)."""
    return _PATH_RE.sub(lambda m: f"{root}{m.group(1)}", text)
