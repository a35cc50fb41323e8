"""A host-wide limit on concurrent inferences, for many local "instances" on one host.

Locally every app-tier instance is a process on the same few cores; 19 of them
inferring at once time-slice each other and thrash the caches (measured: 2.3x the
CPU per image). The gate has one slot per core, each an ``flock`` on a file: the
kernel frees a slot when its holder dies, so a SIGKILLed worker can never leak
one (a semaphore would). On AWS each instance has its own cores: no gate.
"""

from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path


class HostGate:
    def __init__(self, directory: Path | str, slots: int):
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self.directory = Path(directory)
        self.slots = slots
        self.directory.mkdir(parents=True, exist_ok=True)
        self._paths = [self.directory / f"slot-{i}.lock" for i in range(slots)]
        for path in self._paths:
            path.touch(exist_ok=True)
        self._fds: list[int] = []
        self._pid = 0
        self._held: int | None = None

    def _open(self) -> list[int]:
        # flock belongs to the open file description, which a fork shares: each process opens its own.
        if self._pid != os.getpid():
            self._fds = [os.open(p, os.O_RDWR) for p in self._paths]
            self._pid = os.getpid()
        return self._fds

    def __enter__(self) -> HostGate:
        fds = self._open()
        for fd in random.sample(fds, len(fds)):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._held = fd
                return self
            except BlockingIOError:
                continue
        fd = random.choice(fds)  # all busy: queue on one; random keeps the queues even
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._held = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held = None
