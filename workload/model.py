"""Plain data shared by the generator, monitor, report and plot: no I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

DEFAULT_CONCURRENCY = 100  # the course's multithreaded generator uses 100 threads
DEFAULT_TIMEOUT_S = 330.0  # a little over the web tier's own 300 s request timeout
DEFAULT_REST_TIMEOUT_S = 600.0
DEFAULT_MONITOR_INTERVAL_S = 1.0
DEFAULT_MONITOR_PNG = "workload-timeline.png"


class WorkloadError(Exception):
    """Bad input or an unusable target; the message is one line meant for the user."""


class Outcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    HTTP = "http"
    BAD_BODY = "bad_body"
    APP_ERROR = "app_error"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Target:
    """One request to send: which image, and what the answer should be."""

    index: int
    path: Path
    name: str  # file name as uploaded
    stem: str  # name without its image extension: the key of the answer and of the ground truth
    expected: str | None


@dataclass
class RequestRecord:
    index: int
    name: str
    status: Outcome
    start_s: float  # seconds since the run started
    end_s: float
    http_status: int | None = None
    label: str | None = None
    expected: str | None = None
    scheduled_s: float | None = None  # open-loop arrival time; None in a burst
    error: str = ""

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def ok(self) -> bool:
        return self.status is Outcome.OK

    @property
    def correct(self) -> bool | None:
        """None when the request failed or the image has no ground truth."""
        if not self.ok or self.expected is None:
            return None
        return self.label == self.expected

    @property
    def error_kind(self) -> str:
        if self.status is Outcome.OK:
            return ""
        if self.status is Outcome.HTTP:
            return f"http_{self.http_status}"
        return self.status.value


@dataclass(frozen=True)
class Sample:
    """One monitor reading; ``None`` fields mean that read failed this second."""

    t_s: float
    client_in_flight: int
    client_completed: int
    req_visible: int | None = None
    req_in_flight: int | None = None
    resp_visible: int | None = None
    instances: dict[str, int] | None = None  # InstanceState value -> count

    def count(self, *states: str) -> int | None:
        if self.instances is None:
            return None
        return sum(self.instances.get(s, 0) for s in states)


@dataclass(frozen=True)
class FleetSummary:
    min_instances: int
    peak: int
    peak_t_s: float | None
    back_at_min_t_s: float | None  # None: never went above min, or never came back
    rested_t_s: float | None  # when queue and fleet were both back at rest; None: the cap ran out


@dataclass
class WorkloadConfig:
    url: str
    image_folder: Path | str
    num_request: int | None = None  # None: every image in the folder once
    prediction_file: Path | str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None  # requests/s, Poisson arrivals; None: send as a burst
    repeat: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    csv_path: Path | str | None = None
    monitor: bool = False
    monitor_png: Path | str | None = None
    monitor_interval_s: float = DEFAULT_MONITOR_INTERVAL_S
    rest_timeout_s: float = DEFAULT_REST_TIMEOUT_S
    seed: int | None = None
    progress: bool = True
    settings: object | None = None  # infra.config.Settings for --monitor; None: Settings.from_env()


@dataclass
class RunResult:
    config: WorkloadConfig
    records: list[RequestRecord]
    wall_s: float
    started_at: float  # epoch seconds
    skipped_files: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    fleet: FleetSummary | None = None
    interrupted: bool = False
    png_path: Path | None = None
    csv_path: Path | None = None

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def succeeded(self) -> int:
        return sum(r.ok for r in self.records)

    @property
    def failed(self) -> int:
        return self.total - self.succeeded

    @property
    def correct(self) -> int:
        return sum(r.correct is True for r in self.records)

    @property
    def wrong(self) -> int:
        return sum(r.correct is False for r in self.records)

    @property
    def unjudged(self) -> int:
        """Successful answers for images the prediction file does not list."""
        return sum(r.ok and r.expected is None for r in self.records)

    @property
    def throughput(self) -> float:
        return self.succeeded / self.wall_s if self.wall_s > 0 else 0.0
