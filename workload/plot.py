"""One PNG timeline of a run: what the client saw, what the queues held, how the fleet moved."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from workload.model import RunResult, WorkloadError  # noqa: E402
from workload.report import percentile  # noqa: E402


def client_curves(result: RunResult, step_s: float) -> tuple[list[float], list[int], list[int]]:
    """(times, requests in flight, requests completed) from the exact per-request start/end times."""
    sent = [r for r in result.records if r.end_s > r.start_s]
    last = max([r.end_s for r in sent] + [s.t_s for s in result.samples] + [result.wall_s, step_s])
    times = [i * step_s for i in range(int(last / step_s) + 2)]
    starts, ends = sorted(r.start_s for r in sent), sorted(r.end_s for r in sent)
    in_flight, completed = [], []
    i = j = 0
    for t in times:
        while i < len(starts) and starts[i] <= t:
            i += 1
        while j < len(ends) and ends[j] <= t:
            j += 1
        in_flight.append(i - j)
        completed.append(j)
    return times, in_flight, completed


def title_of(result: RunResult) -> str:
    lat = [r.latency_s for r in result.records if r.ok]
    p95 = f", p95 {percentile(lat, 95):.2f} s" if lat else ""
    judged = f", {result.correct} correct" if result.config.prediction_file is not None else ""
    threads = min(result.config.concurrency, max(1, result.total))
    mode = f"Poisson {result.config.rate:g}/s" if result.config.rate else f"burst, {threads} threads"
    return (f"imgrec workload ({mode}): {result.total} requests, {result.succeeded} ok, {result.failed} failed"
            f"{judged}\n{result.wall_s:.1f} s total, {result.throughput:.2f} req/s{p95}")


def plot_timeline(result: RunResult, path: Path | str) -> Path:
    path = Path(path)
    step = 0.1 if result.wall_s < 60 else 0.5
    times, in_flight, completed = client_curves(result, step)
    samples = result.samples
    panels = 3 if samples else 1
    fig, axes = plt.subplots(panels, 1, figsize=(10, 3.2 * panels + 0.8), sharex=True, squeeze=False)
    axes = axes[:, 0]

    ax = axes[0]
    ax.step(times, in_flight, where="post", color="tab:blue", label="requests in flight (client)")
    ax.set_ylabel("in flight")
    ax.set_ylim(bottom=0, top=max(in_flight + [1]) * 1.1)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax2 = ax.twinx()
    ax2.step(times, completed, where="post", color="tab:green", label="requests completed (cumulative)")
    ax2.set_ylabel("completed")
    ax2.set_ylim(0, max(1, result.total) * 1.05)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    _legend_above(ax, handles)
    ax.set_title("Client", loc="left", fontsize="medium")

    if samples:
        _queue_panel(axes[1], samples)
        _fleet_panel(axes[2], result)
    last_answer = max((r.end_s for r in result.records), default=0.0)
    for a in axes:
        a.grid(True, alpha=0.3)
        a.axvline(last_answer, color="grey", linestyle=":", linewidth=1)
    axes[-1].set_xlabel("seconds since the run started (dotted line: last answer)")
    fig.suptitle(title_of(result), fontsize="medium")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as err:
        raise WorkloadError(f"cannot write timeline {path}: {err.strerror}") from None
    finally:
        plt.close(fig)
    return path


def _legend_above(ax, handles=None) -> None:
    """Legend in the panel's title row, right-aligned, so it never covers the data."""
    handles = handles or ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="lower right", bbox_to_anchor=(1.0, 1.0),
              ncol=len(handles), fontsize="small", frameon=False, borderaxespad=0.2, handlelength=1.5)


def _series(samples, get):
    pts = [(s.t_s, get(s)) for s in samples]
    pts = [(t, v) for t, v in pts if v is not None]
    return [t for t, _ in pts], [v for _, v in pts]


def _queue_panel(ax, samples) -> None:
    for label, get, colour in (
        ("request queue: waiting", lambda s: s.req_visible, "tab:orange"),
        ("request queue: being processed", lambda s: s.req_in_flight, "tab:red"),
        ("response queue: waiting", lambda s: s.resp_visible, "tab:purple"),
    ):
        ax.step(*_series(samples, get), where="post", color=colour, label=label)
    ax.set_ylabel("messages")
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    _legend_above(ax)
    ax.set_title("SQS queues", loc="left", fontsize="medium")


def _fleet_panel(ax, result: RunResult) -> None:
    samples = result.samples
    for label, states, colour in (
        ("running", ("running",), "tab:green"),
        ("pending", ("pending",), "tab:cyan"),
        ("stopping / shutting down", ("stopping", "shutting-down"), "tab:grey"),
    ):
        ax.step(*_series(samples, lambda s, st=states: s.count(*st)), where="post", color=colour, label=label)
    fleet = result.fleet
    if fleet is not None:
        ax.axhline(fleet.min_instances, color="black", linestyle="--", linewidth=0.8,
                   label=f"min ({fleet.min_instances})")
        if fleet.peak_t_s is not None and fleet.peak > 0:
            ax.plot([fleet.peak_t_s], [fleet.peak], "v", color="tab:green",
                    label=f"peak {fleet.peak} at {fleet.peak_t_s:.1f} s")
    ax.set_ylabel("app-tier instances")
    highest = max([s.count("running", "pending") or 0 for s in samples] + [fleet.min_instances if fleet else 1])
    ax.set_ylim(bottom=0, top=highest + 1)
    ax.yaxis.get_major_locator().set_params(integer=True)
    _legend_above(ax)
    ax.set_title("App tier (EC2 instances by state)", loc="left", fontsize="medium")
