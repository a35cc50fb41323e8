"""How the local init starts a unit's process: fork + exec as systemd does, and systemd's words for its end.

Standard library only, as the init is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal

from infra.local import isolation

# systemd's exit statuses for a unit that fails before exec (systemd.exec(5), "Process exit codes").
EXIT_CHDIR, EXIT_EXEC, EXIT_GROUP, EXIT_USER = 200, 203, 216, 217
EXIT_NAMES = {EXIT_CHDIR: "CHDIR", EXIT_EXEC: "EXEC", EXIT_GROUP: "GROUP", EXIT_USER: "USER"}
MAX_FD = 4096  # descriptors above stdio closed in the child
PR_SET_NO_NEW_PRIVS = 38  # linux/prctl.h


def describe_exit(status: int) -> tuple[int | None, int | None, str]:
    """(exit code, killing signal, systemd's wording) for a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return None, sig, f"code=killed, status={sig}/{signal.Signals(sig).name.removeprefix('SIG')}"
    code = os.WEXITSTATUS(status)
    return code, None, f"code=exited, status={code}/{'SUCCESS' if code == 0 else EXIT_NAMES.get(code, 'FAILURE')}"


def no_new_privileges() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS, 1): what systemd's NoNewPrivileges=yes sets before exec (setuid binaries and
    file capabilities no longer raise privileges). Raises OSError where the call fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def spawn(console: int, argv: list[str], env: dict[str, str], *, cwd: str, user: pwd.struct_passwd | None,
          no_new_privs: bool = False) -> int:
    """fork + exec, as systemd does; a failure between them exits with systemd's status for that step
    (200/CHDIR, 203/EXEC, 216/GROUP, 217/USER; NoNewPrivileges= failing counts as 203), which the init then
    sees like any exit.

    Not subprocess.Popen: it reaps finished children of its own behind a waitpid(-1) loop.
    """
    pid = os.fork()
    if pid:
        return pid
    step = EXIT_EXEC
    try:
        os.setsid()  # its own process group: KillMode=control-group reaches what it forks
        isolation.set_parent_death_signal()  # the instance's init gone means the instance is gone
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(console, 1)
        os.dup2(console, 2)
        os.closerange(3, MAX_FD)
        step = EXIT_CHDIR
        os.chdir(cwd)
        if user is not None:
            step = EXIT_GROUP
            os.setgroups([])
            os.setgid(user.pw_gid)
            step = EXIT_USER
            os.setuid(user.pw_uid)
        step = EXIT_EXEC
        if no_new_privs:
            no_new_privileges()
        os.execvpe(argv[0], argv, env)
    except BaseException as err:  # noqa: BLE001 - the child must never return into the init's loop
        with contextlib.suppress(OSError):
            os.write(2, f"init: {argv[0]}: failed at step {EXIT_NAMES.get(step, step)}: {err}\n".encode())
    os._exit(step)
