"""The training phase of one run on the local workflow, alone in its process, so that the
process's peak RSS is the training's: the deployed ASL (submit → wait → check loop), the real
train handler and TrainingService, the query adapter as a streamed job with the cheap
HashingEmbedder, a time budget per invocation of `seconds` (scaled down from 600 s) and shards
of `shard` pairs (default 10,000, as deployed).

    python -m tests.integration.training_scale_worker URL RUN DATASET ARTIFACTS SECONDS [SHARD]

Prints one JSON line: the execution's end, the train invocations, the peak RSS in MiB.
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any
from uuid import UUID

from deepmem.adapters.store.postgres import PostgresStore, connect_pool
from deepmem.adapters.trainers.adapter_job import StreamConfig
from deepmem.adapters.trainers.artifacts import LocalArtifactStore
from deepmem.adapters.trainers.query_adapter import QueryAdapterTrainer
from deepmem.domain.status import Phase
from deepmem.local.functions import load_function
from deepmem.local.workflow import LocalWorkflow
from deepmem.services.runs import RunService
from deepmem.services.training import TrainingService

from tests.fakes.embedder import HashingEmbedder


def peak_rss_mib() -> float:
    """This process's own peak RSS: Linux's VmHWM, which starts afresh at exec. Not
    `ru_maxrss`, which on Linux keeps the forking parent's peak across exec (a pytest process
    that has run the rest of the suite first would be measured instead)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(
    url: str, run: str, dataset: str, artifacts: str, seconds: str, shard: str = "10000"
) -> None:
    run_id = UUID(run)
    store = PostgresStore(connect_pool(url, max_size=4))
    trainer = QueryAdapterTrainer(
        dataset,
        HashingEmbedder(16),
        LocalArtifactStore(artifacts),
        pairs=lambda after, limit: store.pairs_after(run_id, after=after, limit=limit),
        stream_above=1_000,
        seconds_per_call=float(seconds),
        stream_config=StreamConfig(shard_pairs=int(shard), max_epochs=2, patience=2),
    )
    service = TrainingService(store, lambda *_: trainer)
    train = load_function("train")
    record = load_function("record_failure")
    actions: list[str] = []

    def train_task(event: dict[str, Any], context: Any) -> Any:
        actions.append(event["action"])
        return train.handle(event, service)

    handlers = {
        "GenerateBatchFunction": lambda event, context: None,
        "TrainFunction": train_task,
        "RecordFailureFunction": lambda event, context: record.handle(event, store, None),
    }
    with LocalWorkflow(handlers) as workflow:
        runs = RunService(store, workflow, dataset)
        started = runs.start_training(run_id).run
        execution = workflow.wait(run_id, Phase.TRAINING, started.attempt, timeout=1800)
    store.close()
    peak = peak_rss_mib()
    print(json.dumps({"state": execution.state.value, "actions": actions, "peak_rss_mib": peak}))


if __name__ == "__main__":
    main(*sys.argv[1:7])
