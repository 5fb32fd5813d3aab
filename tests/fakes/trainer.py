"""A scripted Trainer: each `check` of a job answers the next JobStatus of its script."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from deepmem.domain.models import TrainingPair, TrainingRun
from deepmem.ports import JobState, JobStatus

COMPLETED = JobStatus(
    JobState.COMPLETED,
    metrics={"recall_before": {"recall@10": 0.5}, "recall_after": {"recall@10": 0.6}},
)


class ScriptedTrainer:
    def __init__(self, script: Sequence[JobStatus] = (), job_prefix: str = "job") -> None:
        self.script = list(script) or [JobStatus(JobState.PENDING), COMPLETED]
        self.job_prefix = job_prefix
        self.submitted: list[tuple[TrainingRun, list[TrainingPair]]] = []
        self.polls: dict[str, int] = {}
        self.known: dict[str, list[JobStatus]] = {}

    def submit(self, run: TrainingRun, pairs: Iterable[TrainingPair]) -> str:
        self.submitted.append((run, list(pairs)))
        job_id = f"{self.job_prefix}-{run.id}-{len(self.submitted)}"
        self.known[job_id] = list(self.script)
        return job_id

    def check(self, job_id: str) -> JobStatus:
        script = self.known.get(job_id)
        if script is None:
            return JobStatus(JobState.FAILED, error=f"job {job_id} is unknown")
        poll = self.polls.get(job_id, 0)
        self.polls[job_id] = poll + 1
        return script[min(poll, len(script) - 1)]
