"""The deployed Lambda functions (`functions/<name>/app.py`) loaded as modules, for running
them in process: the local workflow, the CLI and the tests. They are not a package (each is
its own Lambda, every file is `app.py`), so each gets a module name of its own."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from deepmem.domain.errors import DeepmemError
from deepmem.local.paths import repo_root


class FunctionNotFoundError(DeepmemError):
    pass


def functions_dir() -> Path:
    """`functions/` of the checkout this package runs from (or DEEPMEM_FUNCTIONS_DIR)."""
    override = os.environ.get("DEEPMEM_FUNCTIONS_DIR")
    return Path(override) if override else repo_root() / "functions"


def load_function(name: str, directory: Path | None = None) -> ModuleType:
    """`functions/<name>/app.py`, loaded once per process, as Lambda loads it once per
    container (module-level state such as a cached service lives as long)."""
    module_name = f"deepmem_function_{name}"
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    path = (directory or functions_dir()) / name / "app.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FunctionNotFoundError(f"no function handler at {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered first, as an import would: pydantic resolves postponed annotations through
    # sys.modules.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def task_handlers(generation: Any, training: Any) -> dict[str, Any]:
    """The state machine's task functions as the local workflow calls them: the real handler
    code of `functions/`, over the given generation and training services (a caller that wraps
    the generator or trainer, as the demo and the browser tier do)."""
    generate_batch = load_function("generate_batch")
    train = load_function("train")
    record_failure = load_function("record_failure")
    return {
        "GenerateBatchFunction": lambda event, context: generate_batch.handle(
            event, generation, context
        ),
        "TrainFunction": lambda event, context: train.handle(event, training),
        "RecordFailureFunction": record_failure.handler,
    }
