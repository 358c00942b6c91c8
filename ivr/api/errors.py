"""Errors the API answers with, in one shape wherever they come from."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException, status


def field_errors(problems: Sequence[tuple[Sequence[str | int], str]]) -> HTTPException:
    """A 422 shaped like FastAPI's own: each problem with its field (``loc``) and reason."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=[
        {"loc": ["body", *loc], "msg": reason, "type": "value_error"}
        for loc, reason in problems])
