"""Which trainer trains a run, and how its job ids say which trainer made them."""

from __future__ import annotations

from deepmem.domain.datasets import is_cloud_dataset
from deepmem.domain.errors import TrainingError
from deepmem.domain.models import Settings, TrainerKind

#: Deep Memory's queries are uploaded within one submit (`adapters/trainers/deep_memory_upload`):
#: a run of more pairs is refused before it trains (README, "How large a run the defaults handle").
DEEP_MEMORY_MAX_PAIRS = 500_000

#: The query adapter's job ids: `adapter-<run id>-<attempt>`; any other id is Deep Memory's.
ADAPTER_JOB_PREFIX = "adapter-"


def choose_trainer(setting: TrainerKind, dataset: str) -> TrainerKind:
    """`hub://` → Deep Memory, anything else → the query adapter; the setting may force the
    adapter anywhere, and Deep Memory only where it exists."""
    cloud = is_cloud_dataset(dataset)
    if setting is TrainerKind.QUERY_ADAPTER:
        return TrainerKind.QUERY_ADAPTER
    if setting is TrainerKind.DEEP_MEMORY and not cloud:
        raise TrainingError(
            f"the trainer setting is deep_memory but dataset {dataset!r} is not a hub:// "
            "dataset: Deep Memory exists only on Activeloop's managed service"
        )
    return TrainerKind.DEEP_MEMORY if cloud else TrainerKind.QUERY_ADAPTER


def effective_trainer(settings: Settings, dataset: str) -> TrainerKind | None:
    """The trainer the next training will use (the train task's own choice), or None when the
    setting cannot be honoured on this dataset (Deep Memory exists only for `hub://`)."""
    try:
        return choose_trainer(settings.trainer, dataset)
    except TrainingError:
        return None


def adapter_job_id(run_id: object, attempt: int) -> str:
    return f"{ADAPTER_JOB_PREFIX}{run_id}-{attempt}"


def kind_of_job(job_id: str) -> TrainerKind:
    if job_id.startswith(ADAPTER_JOB_PREFIX):
        return TrainerKind.QUERY_ADAPTER
    return TrainerKind.DEEP_MEMORY


def deep_memory_refusal(pairs: int, limit: int) -> str | None:
    """Why Deep Memory will not train a run of `pairs` pairs, or None when it will."""
    if pairs <= limit:
        return None
    return (
        f"Deep Memory takes at most {limit:,} pairs in one training here (its queries are "
        f"uploaded within one submit, DEEPMEM_DEEP_MEMORY_MAX_PAIRS); this run has {pairs:,}: "
        "set the trainer to query_adapter, which trains any number of pairs across invocations"
    )
