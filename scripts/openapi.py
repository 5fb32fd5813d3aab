"""Write the HTTP API's OpenAPI spec, generated from the resolver, to openapi.json.

uv run python scripts/openapi.py           # rewrite openapi.json
uv run python scripts/openapi.py --check   # exit 1 when openapi.json is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepmem.api.app import openapi_json

SPEC = Path(__file__).resolve().parents[1] / "openapi.json"


def render() -> str:
    return openapi_json() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the spec is stale")
    args = parser.parse_args(argv)
    spec = render()
    if args.check:
        if not SPEC.exists() or SPEC.read_text() != spec:
            print(f"{SPEC.name} is out of date: run `uv run python scripts/openapi.py`")
            return 1
        return 0
    SPEC.write_text(spec)
    print(f"wrote {SPEC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
