"""Which trainer trains a run, and how its job ids say which trainer made them."""

from __future__ import annotations

from deepmem.domain.datasets import is_cloud_dataset
from deepmem.domain.errors import TrainingError
from deepmem.domain.models import Settings, TrainerKind

#: Deep Memory's queries are uploaded within one submit (`adapters/trainers/deep_memory_upload`):
#: a run of more pairs is refused before it trains (README, "How large a run the defaults handle").
DEEP_MEMORY_MAX_PAIRS = 500_000

#: The adapters trained here (not by a managed service), and their job ids' prefixes:
#: `adapter-<run id>-<attempt>` (linear), `feedback-<run id>-<attempt>`; any other id is
#: Deep Memory's.
JOB_PREFIXES: dict[TrainerKind, str] = {
    TrainerKind.QUERY_ADAPTER: "adapter-",
    TrainerKind.FEEDBACK_ADAPTER: "feedback-",
}
ADAPTER_KINDS = frozenset(JOB_PREFIXES)
ADAPTER_JOB_PREFIX = JOB_PREFIXES[TrainerKind.QUERY_ADAPTER]
#: What `auto` trains on a dataset that is not `hub://` (measured: bench/README.md).
LOCAL_DEFAULT = TrainerKind.FEEDBACK_ADAPTER


def choose_trainer(setting: TrainerKind, dataset: str) -> TrainerKind:
    """`hub://` → Deep Memory, anything else → the feedback adapter; the setting may force
    either adapter anywhere, and Deep Memory only where it exists."""
    cloud = is_cloud_dataset(dataset)
    if setting in ADAPTER_KINDS:
        return setting
    if setting is TrainerKind.DEEP_MEMORY and not cloud:
        raise TrainingError(
            f"the trainer setting is deep_memory but dataset {dataset!r} is not a hub:// "
            "dataset: Deep Memory exists only on Activeloop's managed service"
        )
    return TrainerKind.DEEP_MEMORY if cloud else LOCAL_DEFAULT


def effective_trainer(settings: Settings, dataset: str) -> TrainerKind | None:
    """The trainer the next training will use (the train task's own choice), or None when the
    setting cannot be honoured on this dataset (Deep Memory exists only for `hub://`)."""
    try:
        return choose_trainer(settings.trainer, dataset)
    except TrainingError:
        return None


def adapter_job_id(
    run_id: object, attempt: int, kind: TrainerKind = TrainerKind.QUERY_ADAPTER
) -> str:
    return f"{JOB_PREFIXES[kind]}{run_id}-{attempt}"


def kind_of_job(job_id: str) -> TrainerKind:
    for kind, prefix in JOB_PREFIXES.items():
        if job_id.startswith(prefix):
            return kind
    return TrainerKind.DEEP_MEMORY


def deep_memory_refusal(pairs: int, limit: int) -> str | None:
    """Why Deep Memory will not train a run of `pairs` pairs, or None when it will."""
    if pairs <= limit:
        return None
    return (
        f"Deep Memory takes at most {limit:,} pairs in one training here (its queries are "
        f"uploaded within one submit, DEEPMEM_DEEP_MEMORY_MAX_PAIRS); this run has {pairs:,}: "
        "set the trainer to query_adapter or feedback_adapter, which train any number of pairs "
        "across invocations"
    )


def run_of_adapter_job(job_id: str) -> str:
    """The run id inside an adapter's job id (`<prefix><run id>-<attempt>`)."""
    return job_id.removeprefix(JOB_PREFIXES[kind_of_job(job_id)]).rsplit("-", 1)[0]
