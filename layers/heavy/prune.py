"""Remove from a pip --target folder every distribution another folder already has.

    python prune.py <heavy layer python/> <common layer python/>

Distributions are matched by normalised name and removed file by file from their RECORD, so
nothing of them is left. boto3, botocore and s3transfer are kept: the common layer leaves them
to the runtime, and aiobotocore (under deeplake) needs the botocore it pins.
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

KEEP = {"boto3", "botocore", "s3transfer"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for dist_info in folder.glob("*.dist-info"):
        name = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        found[normalise(name)] = dist_info
    return found


def remove(folder: Path, dist_info: Path) -> int:
    removed = 0
    record = dist_info / "RECORD"
    if record.exists():
        with record.open(newline="") as handle:
            for row in csv.reader(handle):
                path = (folder / row[0]).resolve()
                if path.is_file() and folder.resolve() in path.parents:
                    removed += path.stat().st_size
                    path.unlink()
    shutil.rmtree(dist_info, ignore_errors=True)
    return removed


def prune_empty(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def main(target: str, reference: str) -> int:
    heavy, common = Path(target), Path(reference)
    shared = (set(distributions(heavy)) & set(distributions(common))) - KEEP
    freed = sum(remove(heavy, distributions(heavy)[name]) for name in sorted(shared))
    prune_empty(heavy)
    print(f"pruned {len(shared)} distributions shared with the common layer ({freed >> 20} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
