"""The one composition root: the only module that knows which adapter implements which port.

Each builder imports its adapter lazily, so an API function never imports DeepLake, OpenAI or
numpy on a cold start. Handlers cache what they build for the life of a warm container.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from deepmem.config import Config, load_config, refuse_in_lambda, revealed
from deepmem.domain.datasets import is_cloud_dataset
from deepmem.domain.errors import ConfigurationError, GeneratorNotConfiguredError

if TYPE_CHECKING:
    from deepmem.adapters.dataset.corpus import Corpus, CorpusSearch
    from deepmem.adapters.generators.offline import OfflineQuestionGenerator
    from deepmem.domain.models import Settings, TrainerKind, TrainingRun
    from deepmem.domain.provenance import GeneratorChoice
    from deepmem.ports import ChunkSource, Embedder, QuestionGenerator, RunStore, Trainer, Workflow
    from deepmem.services.generation import GenerationService
    from deepmem.services.runs import RunService
    from deepmem.services.training import TrainerFactory, TrainingService

#: Wraps a part the composition root built (the demo injects its faults this way).
GeneratorWrapper = Callable[["QuestionGenerator"], "QuestionGenerator"]
TrainerWrapper = Callable[["Trainer"], "Trainer"]

__all__ = [
    "Config",
    "ConfigurationError",
    "adapter_maths",
    "build_corpus_search",
    "build_generation_service",
    "build_local_workflow",
    "build_run_service",
    "build_run_store",
    "build_training_service",
    "build_workflow",
    "chunk_source_for",
    "dataset_present",
    "embedder_for_model",
    "forget_run_stores",
    "generator_choice",
    "generator_for",
    "load_config",
    "load_corpus",
    "offline_embedder",
    "offline_generator",
    "recorded_embedding_model",
    "shared_run_store",
    "trainer_factory",
]


def build_run_store(config: Config) -> RunStore:
    """DATABASE_URL → PostgreSQL (psycopg); else SUPABASE_URL → Supabase (rpc over PostgREST)."""
    if config.database_url:
        from deepmem.adapters.store.postgres import PostgresStore, connect_pool

        return PostgresStore(connect_pool(config.database_url))
    if config.supabase_url:
        from deepmem.adapters.secrets import value_or_secret
        from deepmem.adapters.store.supabase import SupabaseStore, connect_supabase

        key = value_or_secret(
            revealed(config.supabase_service_key), config.supabase_service_key_secret
        )
        if not key:
            raise ConfigurationError(
                "SUPABASE_URL is set but neither SUPABASE_SERVICE_KEY nor "
                "SUPABASE_SERVICE_KEY_SECRET is"
            )
        return SupabaseStore(connect_supabase(config.supabase_url, key))
    raise ConfigurationError(
        "no database configured: set DATABASE_URL or SUPABASE_URL (the `deepmem` CLI starts "
        "an embedded PostgreSQL and sets DATABASE_URL itself)"
    )


_stores: dict[tuple[str | None, str | None], RunStore] = {}


def shared_run_store(config: Config) -> RunStore:
    """One store (one connection pool) per database for the life of the process: a warm
    Lambda container, the CLI, the local workflow's in-process handlers."""
    key = (config.database_url, config.supabase_url)
    if key not in _stores:
        _stores[key] = build_run_store(config)
    return _stores[key]


def forget_run_stores() -> None:
    """Drop the cached stores (their owner closed them)."""
    _stores.clear()


def activeloop_token(config: Config, dataset: str) -> str | None:
    """The Activeloop token a `hub://` dataset needs; None for any other path."""
    if not is_cloud_dataset(dataset):
        return None
    from deepmem.adapters.secrets import value_or_secret

    return value_or_secret(revealed(config.activeloop_token), config.activeloop_token_secret)


def chunk_source_for(config: Config) -> Callable[[str], ChunkSource]:
    from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource

    sources: dict[str, ChunkSource] = {}

    def source(dataset: str) -> ChunkSource:
        if dataset not in sources:
            token = activeloop_token(config, dataset)
            sources[dataset] = DeepLakeChunkSource(dataset, token=token)
        return sources[dataset]

    return source


def generator_choice(config: Config) -> Callable[[Settings], GeneratorChoice]:
    """The generator the configuration chooses, said once for the API, the CLI and the run:
    DEEPMEM_GENERATOR=offline, else the `llm_model` setting over an OpenAI-compatible endpoint,
    which needs a key (or a secret naming one) or a base URL. Without them generation is
    refused (GeneratorNotConfiguredError), never silently offline."""
    from deepmem.domain.provenance import GeneratorChoice, GeneratorKind

    def choice(settings: Settings) -> GeneratorChoice:
        if config.generator == GeneratorKind.OFFLINE:
            return GeneratorChoice(kind=GeneratorKind.OFFLINE)
        if not (
            revealed(config.openai_api_key)
            or config.openai_api_key_secret
            or config.openai_base_url
        ):
            raise GeneratorNotConfiguredError(
                f"the LLM generator (llm_model {settings.llm_model!r}) needs OPENAI_API_KEY "
                "(or OPENAI_API_KEY_SECRET, or OPENAI_BASE_URL for a local endpoint), and none "
                "is set; to generate without an LLM (questions formed from each chunk's own "
                "words), choose the offline generator explicitly: DEEPMEM_GENERATOR=offline"
            )
        return GeneratorChoice(
            kind=GeneratorKind.OPENAI,
            model=settings.llm_model,
            endpoint=config.openai_base_url or "https://api.openai.com/v1",
        )

    return choice


def generator_for(config: Config) -> Callable[[Settings], QuestionGenerator]:
    """The generator `generator_choice` names."""
    choose = generator_choice(config)

    def generator(settings: Settings) -> QuestionGenerator:
        from deepmem.domain.provenance import GeneratorKind

        if choose(settings).kind == GeneratorKind.OFFLINE:
            from deepmem.adapters.generators.offline import OfflineQuestionGenerator

            return OfflineQuestionGenerator()
        import openai

        from deepmem.adapters.generators.openai import OpenAIQuestionGenerator
        from deepmem.adapters.secrets import value_or_secret

        key = value_or_secret(revealed(config.openai_api_key), config.openai_api_key_secret)
        # Made per invocation: an async client belongs to the event loop it runs on.
        client = openai.AsyncOpenAI(
            api_key=key or "unused", base_url=config.openai_base_url, max_retries=0
        )
        return OpenAIQuestionGenerator(
            client,
            settings.llm_model,
            timeout=config.llm_timeout_seconds,
            max_retries=config.llm_max_retries,
        )

    return generator


def dataset_present(path: str) -> bool:
    """Whether a local dataset exists at `path` (read without importing DeepLake: the API
    functions never do). A remote dataset is taken as present: its plan reports it."""
    from pathlib import Path

    if "://" in path and not path.startswith("file://"):
        return True
    return (Path(path.removeprefix("file://")) / "dataset_meta.json").is_file()


def build_generation_service(
    config: Config, store: RunStore | None = None, wrap_generator: GeneratorWrapper | None = None
) -> GenerationService:
    from deepmem.services.generation import GenerationService

    generators = generator_for(config)
    if wrap_generator is not None:
        wrap = wrap_generator
        plain = generators

        def generators(settings: Settings) -> QuestionGenerator:
            return wrap(plain(settings))

    return GenerationService(
        store or shared_run_store(config),
        chunk_source_for(config),
        generators,
        generator_choice=generator_choice(config),
        embedding_model_of=recorded_embedding_model(config),
        max_failed_chunks=config.max_failed_chunks,
        limits=config.generation_limits,
    )


def build_run_service(
    config: Config, store: RunStore | None = None, workflow: Workflow | None = None
) -> RunService:
    from deepmem.adapters.workflow.deferred import DeferredWorkflow
    from deepmem.services.runs import RunService

    return RunService(  # the workflow is built by the first route that starts or stops one
        store=store or shared_run_store(config),
        workflow=workflow or DeferredWorkflow(lambda: build_workflow(config)),
        dataset=config.dataset_path,
        generator_choice=generator_choice(config),
        dataset_present=dataset_present,
        dataset_fingerprint=_where_deeplake(lambda d: chunk_source_for(config)(d).fingerprint()),
        embedding_model_of=_where_deeplake(recorded_embedding_model(config)),
        limits=config.generation_limits,
        deep_memory_max_pairs=config.deep_memory_max_pairs,
    )


def _where_deeplake(read: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """`read` where DeepLake is installed (CLI, serve, workers), else None (an API function has
    no DeepLake layer; the plan checks the dataset anyway); an unreadable dataset answers None."""
    from importlib.util import find_spec

    def reader(dataset: str) -> str | None:
        if find_spec("deeplake") is None:
            return None
        from deepmem.domain.errors import DatasetError

        try:
            return read(dataset)
        except DatasetError:
            return None

    return reader


def build_workflow(config: Config) -> Workflow:
    """STATE_MACHINE_ARN → Step Functions; else, outside Lambda only, the ASL run by moto."""
    if config.state_machine_arn:
        import boto3

        from deepmem.adapters.workflow.step_functions import StepFunctionsWorkflow

        return StepFunctionsWorkflow(boto3.client("stepfunctions"), config.state_machine_arn)
    refuse_in_lambda("STATE_MACHINE_ARN", "this function starts or stops executions")
    return build_local_workflow(config)


def build_local_workflow(
    config: Config, handlers: Mapping[str, Any] | None = None, **options: Any
) -> Workflow:
    """The deployed ASL on moto's interpreter; by default with the real Lambda handlers."""
    from deepmem.local.workflow import LocalWorkflow, function_handlers

    return LocalWorkflow(handlers if handlers is not None else function_handlers(), **options)


def offline_embedder() -> Embedder:
    """The int8 ONNX all-MiniLM-L6-v2 shipped in a wheel: no network, no model download."""
    from deepmem.adapters.embedders.offline import OfflineEmbedder

    return OfflineEmbedder()


def offline_generator() -> OfflineQuestionGenerator:
    """Questions formed from a chunk's own words: no network, no model."""
    from deepmem.adapters.generators.offline import OfflineQuestionGenerator

    return OfflineQuestionGenerator()


def load_corpus(config: Config, dataset: str) -> Corpus:
    """A dataset's chunk ids and embeddings, loaded for search and evaluation."""
    from deepmem.adapters.dataset import corpus

    return corpus.load_corpus(dataset, activeloop_token(config, dataset))


def adapter_maths() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The query adapters' numpy modules (one map's training, a query model's, the maps search
    applies), for benchmarks that study the training itself rather than a run (bench/)."""
    from deepmem.adapters.trainers import adapter_maths, adapter_models, query_maps

    return adapter_maths, adapter_models, query_maps


def embedder_for_model(config: Config, model_name: str) -> Embedder:
    """The Embedder that reproduces a dataset's vectors: the offline MiniLM by its name, any
    other model through the OpenAI-compatible endpoint."""
    from deepmem.adapters.embedders.offline import MODEL_NAME, OfflineEmbedder

    if model_name in (MODEL_NAME, f"sentence-transformers/{MODEL_NAME}"):
        return OfflineEmbedder()
    import openai

    from deepmem.adapters.embedders.openai import OpenAIEmbedder
    from deepmem.adapters.secrets import value_or_secret

    key = value_or_secret(revealed(config.openai_api_key), config.openai_api_key_secret)
    client = openai.OpenAI(
        api_key=key or "unused",
        base_url=config.openai_base_url,
        timeout=config.llm_timeout_seconds,
        max_retries=config.llm_max_retries,
    )
    return OpenAIEmbedder(client, model_name)


def trainer_factory(config: Config, store: RunStore | None = None) -> TrainerFactory:
    """(kind, run, embedding model) → Trainer: Deep Memory (`hub://`) or a query adapter,
    linear or feedback (artifacts in `DEEPMEM_ARTIFACTS`); all read a run's pairs by keyset."""
    from deepmem.domain.models import TrainerKind

    def trainer(kind: TrainerKind, run: TrainingRun, embedding_model: str) -> Trainer:
        token = activeloop_token(config, run.dataset)
        embedder = embedder_for_model(config, embedding_model)
        pairs = functools.partial((store or shared_run_store(config)).pairs_after, run.id)
        if kind is TrainerKind.DEEP_MEMORY:
            from deepmem.adapters.trainers.deep_memory import DeepMemoryTrainer

            api, limit = config.activeloop_api_url, config.deep_memory_max_pairs
            return DeepMemoryTrainer(
                run.dataset, token, embedder, api_url=api, pairs=pairs, max_pairs=limit
            )
        from deepmem.adapters.trainers.artifacts import artifact_store_for
        from deepmem.adapters.trainers.query_adapter import QueryAdapterTrainer, query_model_for

        return QueryAdapterTrainer(
            run.dataset,
            embedder,
            artifact_store_for(config.artifacts_location),
            token=token,
            pairs=pairs,
            stream_above=config.adapter_stream_above,
            seconds_per_call=config.train_seconds_per_call,
            model=query_model_for(kind),
        )

    return trainer


def recorded_embedding_model(config: Config) -> Callable[[str], str | None]:
    """dataset → the embedding model its info records (the dataset builder writes it)."""

    def recorded(dataset: str) -> str | None:
        from deepmem.adapters.dataset.corpus import dataset_embedding_model

        return dataset_embedding_model(dataset, activeloop_token(config, dataset))

    return recorded


def build_training_service(
    config: Config, store: RunStore | None = None, wrap_trainer: TrainerWrapper | None = None
) -> TrainingService:
    from deepmem.services.training import TrainingService

    trainers = trainer_factory(config, store)
    if wrap_trainer is not None:
        wrap = wrap_trainer
        plain = trainers

        def trainers(kind: TrainerKind, run: TrainingRun, embedding_model: str) -> Trainer:
            return wrap(plain(kind, run, embedding_model))

    return TrainingService(
        store or shared_run_store(config), trainers, recorded_embedding_model(config)
    )


def build_corpus_search(config: Config, store: RunStore | None = None) -> CorpusSearch:
    """The configured dataset as a search corpus, its queries embedded by the model training
    uses (`TrainingService.embedding_model`), with the active adapter (the guard's last)."""
    from deepmem.adapters.dataset.corpus import CorpusSearch, load_corpus
    from deepmem.adapters.trainers.artifacts import active_query_map, artifact_store_for

    dataset = config.dataset_path
    model = build_training_service(config, store).embedding_model(dataset)
    corpus = load_corpus(dataset, activeloop_token(config, dataset))
    adapter = active_query_map(artifact_store_for(config.artifacts_location), corpus.embeddings)
    return CorpusSearch(corpus, embedder_for_model(config, model), adapter)
