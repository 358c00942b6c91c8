"""The lines of the center: which dialled number (DID) is which line, from dialplans/dids.yaml.

A call keeps the knowledge of where it came from: 120 itself, 121 (waterworks), or one of the
district offices' and health centers' numbers.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class LineKind(StrEnum):
    MAIN = "main"
    WATERWORKS = "waterworks"
    DISTRICT_OFFICE = "district_office"
    HEALTH_CENTER = "health_center"


class Did(BaseModel):
    """One dialled number and the line it belongs to."""

    model_config = ConfigDict(frozen=True)

    number: str = Field(pattern=r"^\+?[0-9*#]+$")
    line: LineKind
    district: str | None = None
    name: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _district_lines_name_a_district(self) -> Did:
        needs_district = self.line in (LineKind.DISTRICT_OFFICE, LineKind.HEALTH_CENTER)
        if needs_district and not self.district:
            raise ValueError(f"DID {self.number}: a {self.line} line must name its district")
        return self


class DidTable(BaseModel):
    dids: list[Did]

    @model_validator(mode="after")
    def _numbers_are_unique(self) -> DidTable:
        seen: set[str] = set()
        for did in self.dids:
            if did.number in seen:
                raise ValueError(f"DID {did.number} is listed twice")
            seen.add(did.number)
        return self

    @classmethod
    def load(cls, path: Path) -> DidTable:
        with path.open(encoding="utf-8") as source:
            return cls.model_validate(yaml.safe_load(source))

    def lookup(self, number: str) -> Did | None:
        for did in self.dids:
            if did.number == number:
                return did
        return None
