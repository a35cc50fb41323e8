"""What a provision, teardown, deploy, destroy or bake run did: one line per resource."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Actions that mean "nothing changed here".
UNCHANGED_ACTIONS = ("unchanged", "absent", "kept (not ours)")


@dataclass
class Report:
    """What a run did, one (resource, action) line per resource, logged as it goes."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, resource: str, action: str) -> None:
        log.info("%s: %s", resource, action)
        self.lines.append((resource, action))

    def extend(self, other: Report) -> None:
        self.lines.extend(other.lines)

    @property
    def changed(self) -> bool:
        return any(action not in UNCHANGED_ACTIONS for _, action in self.lines)

    def __str__(self) -> str:
        width = max((len(r) for r, _ in self.lines), default=0)
        return "\n".join(f"{r:<{width}}  {a}" for r, a in self.lines)
