"""Every endpoint through the real Lambda handlers, with API Gateway v2 events and fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from uuid import UUID, uuid4

import pytest
from deepmem.api.app import use_run_service
from deepmem.domain.models import BatchRecord, ChunkQuestions, TrainerKind
from deepmem.domain.status import RunStatus
from deepmem.services.runs import RunService

from tests.api_support import ADMIN_ID, api_event, call, load_function
from tests.fakes.memory_store import MemoryRunStore
from tests.fakes.workflow import FakeWorkflow

P = "/v1/api/deep-memory"
BLOCKED = "Cannot start new generation: an unfinished training run exists"


@pytest.fixture(scope="module")
def fn() -> dict[str, ModuleType]:
    return {name: load_function(name) for name in ("runs", "proceed", "delete", "settings")}


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()


@pytest.fixture
def workflow() -> FakeWorkflow:
    return FakeWorkflow()


@pytest.fixture
def service(store: MemoryRunStore, workflow: FakeWorkflow) -> Iterator[RunService]:
    with use_run_service(RunService(store, workflow, dataset="/data/kb")) as service:
        yield service


def generate(fn: dict[str, ModuleType]) -> UUID:
    answer = call(fn["runs"], api_event("POST", f"{P}/generate"))
    assert answer.status == 202, answer
    return UUID(answer.body["training_run_id"])


def to_status(store: MemoryRunStore, run_id: UUID, *path: RunStatus) -> None:
    for target in path:
        current = store.get_run(run_id).status
        assert store.transition(run_id, current, target, error_message="boom") is not None


# POST /generate


def test_generate_starts_a_run_and_its_execution(fn, service, store, workflow) -> None:
    answer = call(fn["runs"], api_event("POST", f"{P}/generate", {"user_id": str(uuid4())}))

    assert answer.status == 202
    assert set(answer.body) == {"job_id", "training_run_id", "message"}
    run = store.get_run(UUID(answer.body["training_run_id"]))
    assert run.status is RunStatus.GENERATING
    assert run.user_id == ADMIN_ID  # from the authorizer, never from the body
    assert answer.body["job_id"] == f"{run.id}-generating-1"
    assert workflow.started == [f"{run.id}-generating-1"]


def test_repeated_generate_is_409_naming_the_run_just_started(fn, service, workflow) -> None:
    first = generate(fn)

    again = call(fn["runs"], api_event("POST", f"{P}/generate"))

    assert again.status == 409
    assert again.body == {
        "detail": f"{BLOCKED} (run {first}, generating): wait for it, or cancel it: "
        f"`deepmem cancel {first}` (POST {P}/runs/{first}/cancel)",
        "blocking_run_id": str(first),
        "blocking_run_status": "generating",
    }
    assert len(workflow.started) == 1


@pytest.mark.parametrize(
    "path",
    [
        (RunStatus.GENERATED,),
        (RunStatus.GENERATING_FAILED,),
        (RunStatus.GENERATED, RunStatus.TRAINING),
        (RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.TRAINING_FAILED),
    ],
)
def test_every_unfinished_run_blocks_generation(fn, service, store, path) -> None:
    run_id = generate(fn)
    to_status(store, run_id, *path)

    answer = call(fn["runs"], api_event("POST", f"{P}/generate"))

    assert answer.status == 409
    assert answer.body["blocking_run_id"] == str(run_id)
    assert answer.body["blocking_run_status"] == path[-1].value


def test_a_completed_run_does_not_block(fn, service, store) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.COMPLETED)

    assert call(fn["runs"], api_event("POST", f"{P}/generate")).status == 202


def test_generate_when_the_execution_cannot_start_leaves_a_failed_run(
    fn, service, store, workflow
) -> None:
    workflow.fail_starts = True

    answer = call(fn["runs"], api_event("POST", f"{P}/generate"))

    assert answer.status == 503
    assert "could not be started" in answer.body["detail"]
    (run,) = store.list_runs()
    assert run.status is RunStatus.GENERATING_FAILED  # not stuck in `generating`
    assert run.error_message and "could not start" in run.error_message


def test_generate_without_a_verified_caller_is_401(fn, service, store) -> None:
    answer = call(fn["runs"], api_event("POST", f"{P}/generate", user_id=None))

    assert answer.status == 401
    assert answer.body["detail"]
    assert store.list_runs() == []


# POST /train


def test_train_a_generated_run(fn, service, store, workflow) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED)

    answer = call(fn["runs"], api_event("POST", f"{P}/train", {"training_run_id": str(run_id)}))

    assert answer.status == 202
    assert answer.body["job_id"] == f"{run_id}-training-1"
    assert answer.body["training_run_id"] == str(run_id)
    assert store.get_run(run_id).status is RunStatus.TRAINING
    assert f"{run_id}-training-1" in workflow.started


def test_repeated_train_is_409_and_starts_nothing(fn, service, store, workflow) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED)
    event = api_event("POST", f"{P}/train", {"training_run_id": str(run_id)})
    assert call(fn["runs"], event).status == 202

    again = call(fn["runs"], event)

    assert again.status == 409
    assert again.body["status"] == "training"
    assert len(workflow.started) == 2  # generating-1 and training-1, nothing more


@pytest.mark.parametrize(
    "path",
    [(), (RunStatus.GENERATING_FAILED,), (RunStatus.GENERATED, RunStatus.TRAINING)],
)
def test_train_from_anything_but_generated_is_409(fn, service, store, path) -> None:
    run_id = generate(fn)
    to_status(store, run_id, *path)

    answer = call(fn["runs"], api_event("POST", f"{P}/train", {"training_run_id": str(run_id)}))

    assert answer.status == 409
    assert answer.body["training_run_id"] == str(run_id)


def test_train_when_the_execution_cannot_start_leaves_a_failed_run(
    fn, service, store, workflow
) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED)
    workflow.fail_starts = True

    answer = call(fn["runs"], api_event("POST", f"{P}/train", {"training_run_id": str(run_id)}))

    assert answer.status == 503
    run = store.get_run(run_id)
    assert run.status is RunStatus.TRAINING_FAILED  # proceed-able, not stuck in `training`
    assert run.error_message and "could not start" in run.error_message


def test_train_an_unknown_run_is_404(fn, service) -> None:
    answer = call(fn["runs"], api_event("POST", f"{P}/train", {"training_run_id": str(uuid4())}))

    assert answer.status == 404
    assert "not found" in answer.body["detail"]


@pytest.mark.parametrize(
    "body",
    [None, {}, {"training_run_id": "not-a-uuid"}, {"training_run_id": 7}, ["x"]],
)
def test_train_with_a_bad_body_is_422(fn, service, body) -> None:
    answer = call(fn["runs"], api_event("POST", f"{P}/train", body))

    assert answer.status == 422
    assert isinstance(answer.body["detail"], list) and answer.body["detail"]


def test_malformed_json_is_422(fn, service) -> None:
    answer = call(fn["runs"], api_event("POST", f"{P}/train", raw_body="{not json"))

    assert answer.status == 422
    assert "detail" in answer.body


# POST /proceed


def test_proceed_a_generation_failure_resumes_generation(fn, service, store, workflow) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATING_FAILED)

    answer = call(
        fn["proceed"], api_event("POST", f"{P}/proceed", {"training_run_id": str(run_id)})
    )

    assert answer.status == 202
    assert answer.body["job_id"] == f"{run_id}-generating-2"
    run = store.get_run(run_id)
    assert (run.status, run.attempt, run.error_message) == (RunStatus.GENERATING, 2, None)
    assert workflow.started == [f"{run_id}-generating-1", f"{run_id}-generating-2"]


def test_proceed_a_training_failure_resubmits_training(fn, service, store, workflow) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.TRAINING_FAILED)

    answer = call(
        fn["proceed"], api_event("POST", f"{P}/proceed", {"training_run_id": str(run_id)})
    )

    assert answer.status == 202
    assert answer.body["job_id"] == f"{run_id}-training-2"
    run = store.get_run(run_id)
    assert (run.status, run.attempt, run.error_message) == (RunStatus.TRAINING, 2, None)


def test_repeated_proceed_is_409_and_starts_one_execution(fn, service, store, workflow) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATING_FAILED)
    event = api_event("POST", f"{P}/proceed", {"training_run_id": str(run_id)})

    assert call(fn["proceed"], event).status == 202
    again = call(fn["proceed"], event)

    assert again.status == 409
    assert again.body["status"] == "generating"
    assert workflow.started == [f"{run_id}-generating-1", f"{run_id}-generating-2"]


@pytest.mark.parametrize(
    "path",
    [
        (),
        (RunStatus.GENERATED,),
        (RunStatus.GENERATED, RunStatus.TRAINING),
        (RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.COMPLETED),
    ],
)
def test_proceed_from_a_status_that_is_not_failed_is_409(fn, service, store, path) -> None:
    run_id = generate(fn)
    to_status(store, run_id, *path)

    answer = call(
        fn["proceed"], api_event("POST", f"{P}/proceed", {"training_run_id": str(run_id)})
    )

    assert answer.status == 409
    assert "only a failed run can proceed" in answer.body["detail"]


def test_proceed_an_unknown_run_is_404(fn, service) -> None:
    body = {"training_run_id": str(uuid4())}
    assert call(fn["proceed"], api_event("POST", f"{P}/proceed", body)).status == 404


def test_proceed_when_the_execution_cannot_start_fails_the_run_again(
    fn, service, store, workflow
) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATING_FAILED)
    workflow.fail_starts = True

    answer = call(
        fn["proceed"], api_event("POST", f"{P}/proceed", {"training_run_id": str(run_id)})
    )

    assert answer.status == 503
    run = store.get_run(run_id)
    assert (run.status, run.attempt) == (RunStatus.GENERATING_FAILED, 2)


# DELETE /runs/{id}


@pytest.mark.parametrize(
    "path",
    [
        (RunStatus.GENERATING_FAILED,),
        (RunStatus.GENERATED,),
        (RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.TRAINING_FAILED),
    ],
)
def test_delete_a_failed_or_generated_run_frees_generation(fn, service, store, path) -> None:
    run_id = generate(fn)
    store.record_batch(
        BatchRecord(
            run_id=run_id,
            attempt=1,
            chunks=[ChunkQuestions(chunk_id="c1", questions=["q1", "q2"])],
        )
    )
    to_status(store, run_id, *path)

    answer = call(fn["delete"], api_event("DELETE", f"{P}/runs/{run_id}"))

    assert answer.status == 200
    assert answer.body == {"training_run_id": str(run_id), "deleted_pairs": 2}
    assert call(fn["runs"], api_event("POST", f"{P}/generate")).status == 202


@pytest.mark.parametrize(
    "path",
    [
        (),
        (RunStatus.GENERATED, RunStatus.TRAINING),
        (RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.COMPLETED),
    ],
)
def test_delete_an_active_or_completed_run_is_409(fn, service, store, path) -> None:
    run_id = generate(fn)
    to_status(store, run_id, *path)

    answer = call(fn["delete"], api_event("DELETE", f"{P}/runs/{run_id}"))

    assert answer.status == 409
    assert store.get_run(run_id).status is (path[-1] if path else RunStatus.GENERATING)


def test_delete_an_unknown_run_is_404(fn, service) -> None:
    assert call(fn["delete"], api_event("DELETE", f"{P}/runs/{uuid4()}")).status == 404


# POST /runs/{id}/cancel


def test_cancel_a_generating_run(fn, service, store, workflow) -> None:
    run_id = generate(fn)

    answer = call(fn["runs"], api_event("POST", f"{P}/runs/{run_id}/cancel"))

    assert answer.status == 202
    assert answer.body["job_id"] == f"{run_id}-generating-1"
    run = store.get_run(run_id)
    assert (run.status, run.error_message) == (RunStatus.GENERATING_FAILED, "cancelled")
    assert [(s.name, s.cause) for s in workflow.stops] == [(f"{run_id}-generating-1", "cancelled")]


def test_cancel_a_training_run(fn, service, store, workflow) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED)
    call(fn["runs"], api_event("POST", f"{P}/train", {"training_run_id": str(run_id)}))

    answer = call(fn["runs"], api_event("POST", f"{P}/runs/{run_id}/cancel"))

    assert answer.status == 202
    run = store.get_run(run_id)
    assert (run.status, run.error_message) == (RunStatus.TRAINING_FAILED, "cancelled")


@pytest.mark.parametrize("path", [(RunStatus.GENERATED,), (RunStatus.GENERATING_FAILED,)])
def test_cancel_a_run_that_is_not_active_is_409(fn, service, store, workflow, path) -> None:
    run_id = generate(fn)
    to_status(store, run_id, *path)

    answer = call(fn["runs"], api_event("POST", f"{P}/runs/{run_id}/cancel"))

    assert answer.status == 409
    assert workflow.stops == []


def test_cancel_an_unknown_run_is_404(fn, service) -> None:
    assert call(fn["runs"], api_event("POST", f"{P}/runs/{uuid4()}/cancel")).status == 404


# GET /runs, /runs/{id}, /runs/{id}/pairs


def test_runs_are_listed_newest_first_in_pages(fn, service, store) -> None:
    ids = []
    for _ in range(3):
        run_id = generate(fn)
        to_status(store, run_id, RunStatus.GENERATED, RunStatus.TRAINING, RunStatus.COMPLETED)
        ids.append(str(run_id))

    first = call(fn["runs"], api_event("GET", f"{P}/runs?limit=2"))
    second = call(fn["runs"], api_event("GET", f"{P}/runs?limit=2&offset=2"))

    assert first.status == second.status == 200
    assert [r["id"] for r in first.body["runs"]] == ids[::-1][:2]
    assert first.body["next_offset"] == 2
    assert [r["id"] for r in second.body["runs"]] == ids[:1]
    assert second.body["next_offset"] is None
    run = first.body["runs"][0]
    for name in (
        "status",
        "processed_chunks",
        "total_chunks",
        "pair_count",
        "error_message",
        "attempt",
        "created_at",
        "updated_at",
    ):
        assert name in run


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "offset=-1", "limit=100000"])
def test_bad_paging_is_422(fn, service, query) -> None:
    assert call(fn["runs"], api_event("GET", f"{P}/runs?{query}")).status == 422


def test_get_one_run(fn, service, store) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATING_FAILED)

    answer = call(fn["runs"], api_event("GET", f"{P}/runs/{run_id}"))

    assert answer.status == 200
    assert answer.body["id"] == str(run_id)
    assert answer.body["status"] == "generating_failed"
    assert answer.body["error_message"] == "boom"
    assert answer.body["attempt"] == 1


def test_get_an_unknown_run_is_404_and_a_malformed_id_422(fn, service) -> None:
    assert call(fn["runs"], api_event("GET", f"{P}/runs/{uuid4()}")).status == 404
    assert call(fn["runs"], api_event("GET", f"{P}/runs/nope")).status == 422


def test_pairs_are_paged_in_insertion_order(fn, service, store) -> None:
    run_id = generate(fn)
    store.record_batch(
        BatchRecord(
            run_id=run_id,
            attempt=1,
            chunks=[
                ChunkQuestions(chunk_id="c1", questions=["q1", "q2"]),
                ChunkQuestions(chunk_id="c2", questions=["q3"]),
            ],
        )
    )

    first = call(fn["runs"], api_event("GET", f"{P}/runs/{run_id}/pairs?limit=2"))
    rest = call(fn["runs"], api_event("GET", f"{P}/runs/{run_id}/pairs?limit=2&offset=2"))

    assert first.status == 200
    assert [(p["chunk_id"], p["question"]) for p in first.body["pairs"]] == [
        ("c1", "q1"),
        ("c1", "q2"),
    ]
    assert first.body["next_offset"] == 2
    assert [p["question"] for p in rest.body["pairs"]] == ["q3"]
    assert rest.body["next_offset"] is None


def test_pairs_of_an_unknown_run_is_404(fn, service) -> None:
    assert call(fn["runs"], api_event("GET", f"{P}/runs/{uuid4()}/pairs")).status == 404


# GET/PUT /settings


def test_settings_show_what_blocks(fn, service, store) -> None:
    empty = call(fn["settings"], api_event("GET", f"{P}/settings"))
    assert empty.status == 200
    assert empty.body["has_blocking_run"] is False
    assert empty.body["blocking_run_id"] is None
    assert empty.body["is_cloud"] is False
    assert empty.body["effective_trainer"] == "feedback_adapter"
    assert empty.body["questions_per_chunk"] == 3

    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATING_FAILED)
    blocked = call(fn["settings"], api_event("GET", f"{P}/settings"))

    assert blocked.body["has_blocking_run"] is True
    assert blocked.body["blocking_run_id"] == str(run_id)
    assert blocked.body["blocking_run_status"] == "generating_failed"


def test_a_hub_dataset_trains_with_deep_memory_unless_forced(fn, store, workflow) -> None:
    with use_run_service(RunService(store, workflow, dataset="hub://org/kb")):
        auto = call(fn["settings"], api_event("GET", f"{P}/settings"))
        forced = call(
            fn["settings"], api_event("PUT", f"{P}/settings", {"trainer": "query_adapter"})
        )

    assert (auto.body["is_cloud"], auto.body["effective_trainer"]) == (True, "deep_memory")
    assert forced.status == 200
    assert forced.body["effective_trainer"] == "query_adapter"
    assert store.get_settings().trainer is TrainerKind.QUERY_ADAPTER


def test_either_adapter_can_be_chosen_and_an_unknown_trainer_is_422(fn, service, store) -> None:
    linear = call(fn["settings"], api_event("PUT", f"{P}/settings", {"trainer": "query_adapter"}))
    assert (linear.status, linear.body["effective_trainer"]) == (200, "query_adapter")
    unknown = call(fn["settings"], api_event("PUT", f"{P}/settings", {"trainer": "mlp_adapter"}))

    assert unknown.status == 422
    assert "trainer" in json.dumps(unknown.body)
    assert store.get_settings().trainer is TrainerKind.QUERY_ADAPTER
    back = call(fn["settings"], api_event("PUT", f"{P}/settings", {"trainer": "feedback_adapter"}))
    assert (back.status, back.body["effective_trainer"]) == (200, "feedback_adapter")
    assert store.get_settings().trainer is TrainerKind.FEEDBACK_ADAPTER


def test_deep_memory_on_a_local_dataset_is_409(fn, service, store) -> None:
    answer = call(fn["settings"], api_event("PUT", f"{P}/settings", {"trainer": "deep_memory"}))

    assert answer.status == 409
    assert "hub://" in answer.body["detail"]
    assert store.get_settings().trainer is TrainerKind.AUTO


def test_settings_under_which_the_largest_run_cannot_finish_are_422(fn, service, store) -> None:
    slow = {"lanes": 1, "concurrency": 1, "max_chunks_per_run": 10_000_000}
    answer = call(fn["settings"], api_event("PUT", f"{P}/settings", slow))

    assert answer.status == 422
    assert "days" in answer.body["detail"] and "max_chunks_per_run" in answer.body["detail"]
    assert answer.body["estimate"]["finishable"] is False
    assert answer.body["estimate"]["total_chunks"] == 10_000_000
    assert store.get_settings().max_chunks_per_run is None  # nothing written
    fine = call(fn["settings"], api_event("PUT", f"{P}/settings", {**slow, "concurrency": 64}))
    assert fine.status == 200


def test_a_null_cap_removes_the_cap(fn, service, store) -> None:
    call(fn["settings"], api_event("PUT", f"{P}/settings", {"max_chunks_per_run": 100}))

    answer = call(fn["settings"], api_event("PUT", f"{P}/settings", {"max_chunks_per_run": None}))

    assert answer.status == 200
    assert answer.body["max_chunks_per_run"] is None
    assert store.get_settings().max_chunks_per_run is None


def test_update_settings(fn, service, store) -> None:
    answer = call(
        fn["settings"],
        api_event(
            "PUT",
            f"{P}/settings",
            {"batch_size": 20, "lanes": 4, "llm_model": "gpt-4.1-mini", "user_id": "ignored"},
        ),
    )

    assert answer.status == 200
    assert (answer.body["batch_size"], answer.body["lanes"]) == (20, 4)
    assert store.get_settings().llm_model == "gpt-4.1-mini"
    assert store.get_settings().questions_per_chunk == 3  # untouched


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"batch_size": 0},
        {"questions_per_chunk": 11},
        {"concurrency": 1000},
        {"lanes": 0},
        {"max_chunks_per_run": 0},
        {"llm_model": ""},
        {"llm_model": "has space"},
        {"trainer": "magic"},
        {"trainer": None},
        {"batch_size": None},
        {"llm_model": "gpt\u0085mini"},
        {"unknown_setting": 1},
    ],
)
def test_invalid_settings_are_422(fn, service, store, body) -> None:
    answer = call(fn["settings"], api_event("PUT", f"{P}/settings", body))

    assert answer.status == 422
    assert answer.body["detail"]
    assert store.get_settings().batch_size == 50


@pytest.mark.parametrize("path", [(), (RunStatus.GENERATED, RunStatus.TRAINING)])
def test_settings_are_locked_while_a_run_is_active(fn, service, store, path) -> None:
    run_id = generate(fn)
    to_status(store, run_id, *path)

    answer = call(fn["settings"], api_event("PUT", f"{P}/settings", {"batch_size": 10}))

    assert answer.status == 409
    assert answer.body["blocking_run_id"] == str(run_id)
    assert answer.body["blocking_run_status"] == store.get_run(run_id).status.value
    assert store.get_settings().batch_size == 50


def test_settings_can_change_while_a_run_awaits_review(fn, service, store) -> None:
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED)

    answer = call(fn["settings"], api_event("PUT", f"{P}/settings", {"batch_size": 10}))

    assert answer.status == 200


# Routing


def test_each_function_serves_only_its_routes(fn, service) -> None:
    assert call(fn["runs"], api_event("GET", f"{P}/settings")).status == 404
    assert call(fn["settings"], api_event("POST", f"{P}/generate")).status == 404
    unknown = call(fn["runs"], api_event("GET", "/elsewhere"))
    assert (unknown.status, unknown.body) == (404, {"detail": "Not found"})


# what is used, and the refusals before any run exists


def _service_with(store: MemoryRunStore, workflow: FakeWorkflow, **env: str) -> RunService:
    from deepmem.config import Config
    from deepmem.wiring import generator_choice

    config = Config.model_validate({"DEEPMEM_DATASET": "/data/kb", **env})
    return RunService(
        store,
        workflow,
        dataset="/data/kb",
        generator_choice=generator_choice(config),
        dataset_present=lambda path: path != "/data/kb" or env.get("present", "yes") == "yes",
    )


def test_generate_without_a_generator_is_409_before_any_run(fn, store, workflow) -> None:
    with use_run_service(_service_with(store, workflow)):
        answer = call(fn["runs"], api_event("POST", f"{P}/generate"))
        settings = call(fn["settings"], api_event("GET", f"{P}/settings"))

    assert answer.status == 409
    assert "DEEPMEM_GENERATOR=offline" in answer.body["detail"]
    assert store.list_runs() == [] and workflow.started == []
    assert settings.body["generator"] is None
    assert "OPENAI_API_KEY" in settings.body["generator_problem"]
    assert settings.body["embedding_model_in_use"] == "text-embedding-3-small"
    assert settings.body["embedding_model_source"] == "settings"


def test_generate_without_a_dataset_is_409_before_any_run(fn, store, workflow) -> None:
    service = _service_with(store, workflow, DEEPMEM_GENERATOR="offline", present="no")
    with use_run_service(service):
        answer = call(fn["runs"], api_event("POST", f"{P}/generate"))

    assert answer.status == 409
    assert "no dataset at '/data/kb'" in answer.body["detail"]
    assert store.list_runs() == [] and workflow.started == []


def test_settings_and_runs_say_which_generator_is_used(fn, store, workflow) -> None:
    service = _service_with(
        store, workflow, OPENAI_API_KEY="k", OPENAI_BASE_URL="http://127.0.0.1:9/v1"
    )
    with use_run_service(service):
        settings = call(fn["settings"], api_event("GET", f"{P}/settings"))
        run_id = generate(fn)
        run = call(fn["runs"], api_event("GET", f"{P}/runs/{run_id}"))

    assert settings.body["generator"] == {
        "kind": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "http://127.0.0.1:9/v1",
    }
    assert settings.body["generator_problem"] is None
    # Recorded by the plan (no plan ran here): the fields are there, null until then.
    assert {"generator", "llm_model", "embedding_model", "rejected_chunks"} <= set(run.body)
    assert run.body["rejected_chunks"] == 0 and run.body["generator"] is None


def test_proceed_with_another_generator_is_409_with_the_way_out(fn, store, workflow) -> None:
    from deepmem.domain.provenance import RunSource

    run = store.create_run("/data/kb", None)
    store.set_run_source(
        run.id,
        RunSource(dataset_fingerprint="f", generator="openai", llm_model="gpt-4o-mini"),
        attempt=run.attempt,
    )
    to_status(store, run.id, RunStatus.GENERATING_FAILED)
    with use_run_service(_service_with(store, workflow, DEEPMEM_GENERATOR="offline")):
        answer = call(
            fn["proceed"], api_event("POST", f"{P}/proceed", {"training_run_id": str(run.id)})
        )

    assert answer.status == 409
    assert answer.body["blocking_run_id"] == str(run.id)
    assert f"deepmem delete {run.id}" in answer.body["detail"]
    assert f"DELETE {P}/runs/{run.id}" in answer.body["detail"]
    assert store.get_run(run.id).status is RunStatus.GENERATING_FAILED


def test_train_over_what_deep_memory_takes_is_422_and_starts_nothing(fn, store, workflow) -> None:
    run = store.create_run("hub://org/kb", None)
    store.set_total_chunks(run.id, 2, attempt=1)
    questions = [f"what does part {i} say?" for i in range(3)]
    store.record_batch(
        BatchRecord(
            run_id=run.id,
            attempt=1,
            chunks=[ChunkQuestions(chunk_id=c, questions=questions) for c in ("a", "b")],
        )
    )
    to_status(store, run.id, RunStatus.GENERATED)  # 6 pairs
    service = RunService(store, workflow, dataset="hub://org/kb", deep_memory_max_pairs=5)
    with use_run_service(service):
        answer = call(fn["runs"], api_event("POST", f"{P}/train", {"training_run_id": str(run.id)}))
        assert answer.status == 422
        assert "at most 5 pairs" in answer.body["detail"] and "has 6" in answer.body["detail"]
        assert "query_adapter" in answer.body["detail"]
        assert store.get_run(run.id).status is RunStatus.GENERATED
        assert workflow.started == []

        # The query adapter takes any number: forced by the setting, the same run trains.
        settings = store.get_settings().model_copy(update={"trainer": TrainerKind.QUERY_ADAPTER})
        store.update_settings(settings)
        answer = call(fn["runs"], api_event("POST", f"{P}/train", {"training_run_id": str(run.id)}))
        assert answer.status == 202


def test_get_one_run_returns_the_guards_numbers_and_verdict(fn, service, store) -> None:
    import numpy as np
    from deepmem.adapters.trainers import guard

    rng = np.random.default_rng(0)
    corpus = guard.identity_map(rng.normal(size=(50, 6)).astype(np.float32))
    record = guard.evaluate(
        corpus[:30],
        [[i] for i in range(30)],
        corpus,
        guard.identity_map,
        previous=None,
        config=guard.GuardConfig(resamples=100),
    )
    run_id = generate(fn)
    to_status(store, run_id, RunStatus.GENERATED, RunStatus.TRAINING)
    store.set_metrics(run_id, {"applied": record["applied"], "guard": record}, attempt=1)

    body = call(fn["runs"], api_event("GET", f"{P}/runs/{run_id}")).body

    shown = body["metrics"]["guard"]
    assert body["metrics"]["applied"] is False and shown["applied"] is False  # a tie
    assert "does not beat the base" in shown["reason"]
    for side in ("before", "after"):
        assert set(shown[side]) == {"recall@1", "recall@5", "recall@10", "ndcg@10"}
    assert shown["before"] == shown["after"] == record["before"]
