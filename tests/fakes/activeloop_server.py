"""A loopback HTTP server that plays Activeloop's Deep Memory job endpoints.

- `GET /api/deepmemory/v1/jobs/{id}/status`: each poll answers the next step of the job's
  script (the last step repeats), in the JSON shape deeplake 3.9's client parses
  (`id`, `dataset_id`, `organization_id`, `status`, `progress`).
- `GET /api/deepmemory/v1/{org}/{dataset}/jobs`: the dataset's jobs with their current status.
- `POST /api/deepmemory/v1/train`: registers a job (script given by `next_script`) and answers
  `{"job_id": ...}` like the library's `start_taining` expects.

With `storage_root` set it also plays what deeplake 3.9's own `VectorStore(hub://...)` and
`deep_memory.train()` call, so the real library runs against it: the user profile, the
Deep Memory feature flag, dataset credentials (answering a *local* path under `storage_root`
for `hub://<org>/<name>`, which the library then opens as a local dataset), dataset creation
and usage events.
Requests without `Authorization: Bearer <token>` get 401. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_STATUS = re.compile(r"^/api/deepmemory/v1/jobs/([^/]+)/status$")
_JOBS = re.compile(r"^/api/deepmemory/v1/(.+)/jobs$")
_FEATURE = re.compile(r"^/api/organizations/([^/]+)/features/deepmemory$")
_CREDS = re.compile(r"^/api/org/([^/]+)/ds/([^/]+)/creds$")


def job_step(status: str, **progress: Any) -> dict[str, Any]:
    return {"status": status, "progress": progress or None}


def training_script(error: str | None = None) -> list[dict[str, Any]]:
    """queued -> training -> completed (or failed with `error`)."""
    steps = [
        job_step("pending"),
        job_step(
            "training",
            eta=120.5,
            epoch=1,
            error=None,
            **{"best_recall@10": "80.1% (+1.2)%", "base_val_recall@10": 0.789},
        ),
    ]
    if error is None:
        steps.append(
            job_step(
                "completed",
                eta=None,
                epoch=8,
                error=None,
                **{"best_recall@10": "85.5% (+2.6)%", "base_val_recall@10": 0.829},
            )
        )
    else:
        steps.append(job_step("failed", eta=None, error=error, dataset="query"))
    return steps


@dataclass
class Job:
    id: str
    dataset_id: str
    script: list[dict[str, Any]]
    polls: int = 0

    def current(self) -> dict[str, Any]:
        return self.script[min(self.polls, len(self.script) - 1)]


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: Any = None


@dataclass
class FakeActiveloop:
    token: str = "test-token"
    jobs: dict[str, Job] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    next_script: list[dict[str, Any]] = field(default_factory=training_script)
    fail_with: int | None = None  # answer every request with this status code
    storage_root: str | None = None  # where hub://<org>/<name> datasets live (a local folder)
    organization: str = "org"
    deep_memory_available: bool = True
    stall_paths: tuple[str, ...] = ()  # GETs under these prefixes hang until `release`
    release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_job(
        self, script: list[dict[str, Any]], dataset_id: str = "org/ds", job_id: str | None = None
    ) -> str:
        job = Job(id=job_id or uuid.uuid4().hex[:24], dataset_id=dataset_id, script=script)
        self.jobs[job.id] = job
        return job.id

    def start(self) -> FakeActiveloop:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body: Any = None) -> bool:
                auth = self.headers.get("Authorization")
                with fake._lock:
                    fake.requests.append(Recorded(self.command, self.path, auth, body))
                if fake.fail_with is not None:
                    self._send(fake.fail_with, {"description": "injected failure"})
                    return False
                if auth != f"Bearer {fake.token}":
                    self._send(401, {"description": "invalid token"})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._record():
                    return
                path = self.path.split("?")[0]
                if path.startswith(fake.stall_paths or ("\0",)):
                    fake.release.wait(30)  # a backend that accepted the call and went silent
                if path == "/api/user/profile":
                    org = fake.organization
                    self._send(200, {"_id": org, "name": org, "organizations": [org]})
                elif _FEATURE.match(path):
                    self._send(200, {"available": fake.deep_memory_available})
                elif (match := _CREDS.match(path)) and fake.storage_root is not None:
                    local = f"{fake.storage_root}/{match.group(2)}"
                    self._send(200, {"path": local, "creds": {}, "mode": "w", "repository": None})
                elif match := _STATUS.match(self.path):
                    with fake._lock:
                        job = fake.jobs.get(match.group(1))
                        if job is None:
                            self._send(404, {"description": "job not found"})
                            return
                        step = job.current()
                        job.polls += 1
                    self._send(200, _job_json(job, step))
                elif match := _JOBS.match(self.path):
                    with fake._lock:
                        found = [
                            _job_json(j, j.current())
                            for j in fake.jobs.values()
                            if j.dataset_id == match.group(1)
                        ]
                    self._send(200, found)
                else:
                    self._send(404, {"description": f"no route {self.path}"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                if not self._record(body):
                    return
                if self.path in ("/api/dataset/create", "/api/event"):
                    self._send(200, {})
                elif self.path == "/api/deepmemory/v1/train":
                    corpus = str((body or {}).get("corpus_dataset", ""))
                    job_id = fake.add_job(list(fake.next_script), corpus.removeprefix("hub://"))
                    self._send(200, {"job_id": job_id})
                else:
                    self._send(404, {"description": f"no route {self.path}"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeActiveloop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _job_json(job: Job, step: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": job.id,
        "dataset_id": job.dataset_id,
        "organization_id": job.dataset_id.split("/")[0],
        "status": step["status"],
        "progress": step["progress"],
    }
