"""The audit log: every change made through the API, with who, when and what.

Routes that change something call ``record_change`` after the change succeeded; the entries are
read back at ``GET /api/audit`` (admins and supervisors).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ivr.api.auth import Principal
from ivr.models import AuditEntry


async def record_change(request: Request, principal: Principal, action: str, target: str,
                        detail: dict[str, Any] | None = None) -> None:
    """Write one entry: ``action`` (e.g. "knowledge.update") on ``target`` (e.g. an entry id),
    with ``detail`` (what changed, never a password)."""
    async with request.app.state.sessions() as session, session.begin():
        session.add(AuditEntry(username=principal.username, role=principal.role,
                               action=action, target=target, detail=detail or {}))
