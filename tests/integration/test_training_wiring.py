"""The composition root builds the right trainer for a run's dataset."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import deeplake
import numpy as np
from deepmem import wiring
from deepmem.adapters.embedders.offline import OfflineEmbedder
from deepmem.adapters.trainers.artifacts import LocalArtifactStore
from deepmem.adapters.trainers.query_adapter import QueryAdapterTrainer
from deepmem.config import Config
from deepmem.domain.models import TrainerKind, TrainingRun
from deepmem.domain.status import RunStatus
from deepmem.services.training import TrainingService

from tests.fakes.memory_store import MemoryRunStore


def test_local_dataset_gets_the_query_adapter_with_its_own_embedding_model(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "dataset")
    ds = deeplake.empty(path, overwrite=True, verbose=False)
    with ds:
        ds.create_tensor("id", htype="text")
        ds.create_tensor("embedding", htype="embedding", dtype="float32")
        ds.info.update(embedding_model="all-MiniLM-L6-v2")
        ds.extend({"id": ["a"], "embedding": np.ones((1, 384), dtype=np.float32)})
    config = Config(DEEPMEM_HOME=tmp_path, DEEPMEM_DATASET=path)
    now = datetime.now(UTC)
    run = TrainingRun(
        id=uuid4(), dataset=path, status=RunStatus.TRAINING, created_at=now, updated_at=now
    )

    service = wiring.build_training_service(config, MemoryRunStore())
    model = service.embedding_model(path)
    trainer = service.trainers(TrainerKind.QUERY_ADAPTER, run, model)

    assert model == "all-MiniLM-L6-v2"  # the dataset's own model, not the setting's
    assert isinstance(trainer, QueryAdapterTrainer)
    assert isinstance(trainer.embedder, OfflineEmbedder)
    assert isinstance(trainer.artifacts, LocalArtifactStore)
    assert trainer.artifacts.root == tmp_path / "artifacts"
    assert isinstance(wiring.build_training_service(config, MemoryRunStore()), TrainingService)
