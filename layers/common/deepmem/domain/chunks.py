"""Chunks of the knowledge base and the lanes generation splits them into."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Chunk(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Lane(BaseModel):
    """A contiguous index range [start, stop) of the dataset that one Map worker walks."""

    model_config = ConfigDict(frozen=True)

    lane: int = Field(ge=0)
    start: int = Field(ge=0)
    stop: int = Field(ge=0)
    cursor: int = Field(ge=0, description="next index of the lane to look at")
    calls: int = Field(default=0, ge=0, description="batch calls of this lane this execution")

    @model_validator(mode="after")
    def _ordered(self) -> Lane:
        if not self.start <= self.cursor <= self.stop:
            raise ValueError("a lane needs start <= cursor <= stop")
        return self

    @property
    def done(self) -> bool:
        return self.cursor >= self.stop


def split_into_lanes(total: int, lanes: int) -> list[Lane]:
    """Split [0, total) into at most `lanes` contiguous, near-equal, non-empty ranges."""
    if total <= 0:
        return []
    count = max(1, min(lanes, total))
    size, extra = divmod(total, count)
    result: list[Lane] = []
    start = 0
    for i in range(count):
        stop = start + size + (1 if i < extra else 0)
        result.append(Lane(lane=i, start=start, stop=stop, cursor=start))
        start = stop
    return result
