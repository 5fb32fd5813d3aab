"""Write `events/<name>.json`, one sample event per function and route, from the builders the
tests use (`tests/fakes/events.py`), so the samples cannot drift from what is tested.

    uv run python scripts/make_events.py          # write
    uv run python scripts/make_events.py --check  # exit 1 when a file is missing or stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.events import samples  # noqa: E402


def render(event: dict[str, object]) -> str:
    return json.dumps(event, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=ROOT / "events")
    args = parser.parse_args(argv)
    stale: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, event in samples().items():
        path = args.out / f"{name}.json"
        text = render(event)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale or missing samples:", ", ".join(stale), "(run scripts/make_events.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
