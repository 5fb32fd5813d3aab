"""Reading a local DeepLake dataset with the network unreachable: no call out, no hang.

Each check runs in a fresh interpreter (DeepLake's import-time behaviour only shows on the
first import) with a fresh HOME (no cached PyPI answer in ~/.activeloop), no proxy settings
and a socket-level guard: name resolution and connections to anything but loopback fail at
once and are recorded. A subprocess timeout bounds the whole run, so a hang fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from deepmem.local.dataset_builder import build_dataset

from tests.fakes.embedder import HashingEmbedder

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 60

GUARDED = textwrap.dedent(
    """
    import json, socket, sys, time

    from tests.fakes.network_guard import _is_loopback, loopback_only

    attempts = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback((host, 0)):
            attempts.append(["resolve", str(host)])
            raise socket.gaierror(socket.EAI_NONAME, "network unreachable (test guard)")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    mode, path = sys.argv[1], sys.argv[2]
    started = time.monotonic()
    result = {}
    with loopback_only() as refused:
        if mode == "source":
            from deepmem.adapters.dataset.deeplake import DeepLakeChunkSource

            source = DeepLakeChunkSource(path)
            result["count"] = source.count()
            result["ids"] = [chunk.id for chunk in source.read(3, 8)]
        else:
            import deeplake  # DeepLake's own import, without deepmem's precautions

    result["elapsed"] = time.monotonic() - started
    result["attempts"] = attempts + [["connect", repr(address)] for address in refused]
    print("RESULT " + json.dumps(result))
    """
)


def _run_offline(mode: str, dataset: str, home: Path) -> dict[str, Any]:
    env = {
        key: value
        for key, value in os.environ.items()
        if "proxy" not in key.lower() and key not in ("BUGGER_OFF", "HOME")
    }
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "layers" / "common")])
    completed = subprocess.run(
        [sys.executable, "-c", GUARDED, mode, dataset],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(ln for ln in completed.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    corpus = tmp_path_factory.mktemp("offline-corpus")
    for i in range(12):
        (corpus / f"note_{i:02d}.txt").write_text(
            f"Offline note {i} says something distinct about topic {i}. " * 3, encoding="utf-8"
        )
    path = str(tmp_path_factory.mktemp("offline") / "kb")
    assert build_dataset(corpus, path, HashingEmbedder()) == 12
    return path


def test_reading_a_local_dataset_makes_no_network_call_and_does_not_hang(
    dataset: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = _run_offline("source", dataset, home)
    assert result["attempts"] == []
    assert result["count"] == 12
    assert len(result["ids"]) == 5
    assert result["elapsed"] < 30
    # No PyPI answer was cached either: the version check never ran.
    assert not (home / ".activeloop" / "pypi_version.json").exists()


def test_the_guard_sees_deeplakes_own_update_check(dataset: str, tmp_path: Path) -> None:
    """The control: a plain `import deeplake` under the same guard tries PyPI, so the test
    above would catch a network call if the adapter let one through."""
    home = tmp_path / "home"
    home.mkdir()
    result = _run_offline("plain", dataset, home)
    assert ["resolve", "pypi.org"] in result["attempts"]
