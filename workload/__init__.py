"""Load generator for imgrec (``python -m workload``): course-compatible flags and summary,
latency percentiles, a per-request CSV and a timeline of the fleet."""

from workload.model import RequestRecord, RunResult, Sample, WorkloadConfig, WorkloadError
from workload.report import summary_text
from workload.runner import run_workload

__all__ = ["RequestRecord", "RunResult", "Sample", "WorkloadConfig", "WorkloadError", "run_workload", "summary_text"]
