"""The admin page in Debian's Chromium (Playwright), against `deepmem serve`'s app (`LocalApi`
with the real local-token authorizer) on the embedded stack: the test PostgreSQL, a local
DeepLake dataset of a few stdlib docstrings, the real ASL run by the local workflow with the
real task handlers. Failures are the demo's (`FaultyGenerator`, `FaultyTrainer`); a pace holds
a run in `generating` or `training` as long as a scenario needs it.

Without /usr/bin/chromium, or without `npm ci` (axe-core, the page's vendored libraries), the
tests skip, except under CI=true, where they fail."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from deepmem.cli.demo import DemoFault, FaultyGenerator, FaultyTrainer
from deepmem.cli.runtime import Runtime
from deepmem.cli.serving import authorizer_for, local_secret
from deepmem.config import load_config
from deepmem.dashboard.site import STATIC, VENDORED
from deepmem.domain.chunks import Chunk
from deepmem.domain.models import SettingsUpdate, TrainingRun
from deepmem.domain.status import Phase, RunStatus
from deepmem.local.functions import task_handlers
from deepmem.ports import (
    UNPACED,
    GeneratedQuestions,
    JobState,
    JobStatus,
    Pacer,
    QuestionGenerator,
    Trainer,
)
from deepmem.services.runs import RunService
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from rich.console import Console

from tests.api_support import running_server
from tests.db import TestServer, test_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHUNKS = 12
ACTIVE = {RunStatus.GENERATING, RunStatus.TRAINING}

expect.set_options(timeout=30_000)


@dataclass
class Pace:
    """Holds generation (before each chunk) and training (each check) while closed."""

    generation: threading.Event = field(default_factory=threading.Event)
    training: threading.Event = field(default_factory=threading.Event)
    seconds_per_chunk: float = 0.0

    def free(self) -> None:
        self.generation.set()
        self.training.set()
        self.seconds_per_chunk = 0.0


class PacedGenerator:
    def __init__(self, inner: QuestionGenerator, pace: Pace) -> None:
        self._inner = inner
        self._pace = pace

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        while not self._pace.generation.is_set():
            await asyncio.sleep(0.02)
        if self._pace.seconds_per_chunk:
            await asyncio.sleep(self._pace.seconds_per_chunk)
        return await self._inner.generate(chunk, count, pacer)


class PacedTrainer:
    def __init__(self, inner: Trainer, pace: Pace) -> None:
        self._inner = inner
        self._pace = pace

    def submit(self, run: TrainingRun, pairs: Iterable[Any]) -> str:
        return self._inner.submit(run, pairs)

    def check(self, job_id: str) -> JobStatus:
        if not self._pace.training.is_set():
            return JobStatus(state=JobState.TRAINING)
        return self._inner.check(job_id)


def handlers(fault: DemoFault, pace: Pace) -> Any:
    """The demo's handlers (`deepmem.cli.demo.demo_handlers`), with the pace inside its faults."""

    def build(runtime: Runtime) -> Mapping[str, Any]:
        from deepmem import wiring

        generation = wiring.build_generation_service(
            runtime.config,
            runtime.store,
            wrap_generator=lambda inner: FaultyGenerator(PacedGenerator(inner, pace), fault),
        )
        training = wiring.build_training_service(
            runtime.config,
            runtime.store,
            wrap_trainer=lambda inner: FaultyTrainer(PacedTrainer(inner, pace), fault),
        )
        return task_handlers(generation, training)

    return build


@dataclass
class Stack:
    url: str
    token: str
    home: Path
    service: RunService
    fault: DemoFault
    pace: Pace

    def page_url(self, token: str | None = None) -> str:
        return f"{self.url}/#token={token or self.token}"

    def arm(self, phase: Phase, after_chunks: int = 4) -> None:
        self.fault.phase, self.fault.after_chunks = phase, after_chunks
        self.fault.generated = 0
        self.fault.armed = True

    def run(self, run_id: str) -> TrainingRun:
        from uuid import UUID

        return self.service.get_run(UUID(run_id))

    def wait_for(self, run_id: str, status: RunStatus, timeout: float = 60) -> TrainingRun:
        deadline = time.monotonic() + timeout
        while (run := self.run(run_id)).status is not status:
            assert time.monotonic() < deadline, f"run {run_id} is {run.status}, not {status}"
            time.sleep(0.1)
        return run

    def reset(self) -> None:
        """No unfinished run: active ones end (paces freed, faults off), the rest are deleted."""
        self.pace.free()
        self.fault.disarm()
        deadline = time.monotonic() + 90
        while (run := self.service.store.find_blocking_run()) is not None:
            assert time.monotonic() < deadline, f"run {run.id} stays {run.status}"
            if run.status in ACTIVE:
                time.sleep(0.1)
            else:
                self.service.delete(run.id)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    with test_server() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_server: TestServer) -> Iterator[Stack]:
    from deepmem import wiring
    from deepmem.local.dataset_builder import ensure_dataset
    from deepmem.local.stdlib_corpus import stdlib_corpus

    home = tmp_path_factory.mktemp("deepmem-home")
    name, database_url = pg_server.fresh_database()
    fault, pace = DemoFault(None, after_chunks=4), Pace()
    pace.free()
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith(("SUPABASE", "STATE_MACHINE"))]:
            env.delenv(key)
        env.setenv("DEEPMEM_HOME", str(home))
        env.setenv("DATABASE_URL", database_url)
        env.setenv("DEEPMEM_DATASET", "")
        env.setenv("DEEPMEM_GENERATOR", "offline")  # no LLM here: say so, as the demo does
        load_config.cache_clear()
        with Runtime(time_scale=0.02, handlers=handlers(fault, pace)) as runtime:
            corpus = stdlib_corpus(home / "corpus", CHUNKS)
            ensure_dataset(
                corpus, runtime.config.dataset_path, wiring.offline_embedder(), limit=CHUNKS
            )
            service = runtime.runs()
            service.update_settings(
                SettingsUpdate(questions_per_chunk=2, batch_size=2, concurrency=2, lanes=1)
            )
            authorize, token = authorizer_for(runtime.config, Console(file=io.StringIO()))
            assert token is not None
            with running_server(authorize, service=service) as server:  # type: ignore[arg-type]
                stack = Stack(server.url, token, home, service, fault, pace)
                yield stack
                stack.reset()
    load_config.cache_clear()
    pg_server.drop_database(name)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if not AXE.exists():
        missing.append(f"{AXE.relative_to(ROOT)} (npm ci)")
    if not all((STATIC / name).is_file() for name in VENDORED):
        missing.append("the page's vendored libraries (npm ci)")
    if any(missing):
        message = "the browser tier needs " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    # The page's CSP allows no inline script: bypassed only so axe-core can be injected.
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def snap(page: Page, name: str) -> None:
    """A screenshot (test artifact) and the accessibility check of the page as it is now."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert_accessible(page)


def assert_accessible(page: Page) -> None:
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => ({id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target)}))"""
    )
    assert violations == [], violations


def non_admin_token(stack: Stack) -> str:
    """Signed with the server's own key, but without the admin claim."""
    import jwt

    now = int(time.time())
    claims = {
        "sub": "00000000-0000-4000-8000-0000000000bb",
        "aud": "authenticated",
        "iss": "deepmem-local",
        "iat": now,
        "exp": now + 600,
        "role": "authenticated",
        "app_metadata": {},
    }
    return jwt.encode(claims, local_secret(stack.home), algorithm="HS256")
