"""The agent desk's own data: the consultation record of a call the agent took, their
callbacks and their figures for today."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from ivr.db import create_engine, sessionmaker
from ivr.models import CallEvent, CallOutcome, CallRecord, Role
from tests.conftest import Server
from tests.support.users import signed_in


async def a_call_taken_by(server: Server, agent: str) -> str:
    """A finished call in SQL, answered by ``agent`` (as the controller writes it)."""
    call_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    engine = create_engine(server.settings.sql_url)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            session.add(CallRecord(id=call_id, channel_id=f"test-{call_id}", did="121",
                                   caller="0299990001", line="water", language="ko",
                                   path=["water:1", "queue:water"], queue="water:ko",
                                   agent=agent, started_at=now - timedelta(minutes=3),
                                   answered_at=now - timedelta(minutes=3),
                                   ended_at=now, outcome=CallOutcome.ANSWERED,
                                   wait_seconds=12.0))
            session.add(CallEvent(call_id=call_id, kind="answered", agent=agent))
    finally:
        await engine.dispose()
    return call_id


async def test_the_agent_writes_the_consultation_record(server: Server) -> None:
    async with signed_in(server, Role.AGENT) as agent, signed_in(server, Role.AGENT) as other:
        me = (await agent.get("/api/users/me")).json()["username"]
        call_id = await a_call_taken_by(server, me)
        record = {"category": "water", "notes": "이사 정산 안내", "resolution": "resolved",
                  "question_type": "water_bill_moving"}
        written = await agent.put(f"/api/calls/{call_id}/consultation", json=record)
        assert written.status_code == 200, written.text
        again = await agent.put(f"/api/calls/{call_id}/consultation",
                                json={**record, "notes": "이사 정산 안내, 문자 발송"})
        assert again.json()["id"] == written.json()["id"]  # replaced, not added
        saved = (await agent.get(f"/api/calls/{call_id}/consultation")).json()
        assert [(r["agent"], r["notes"]) for r in saved] == [(me, "이사 정산 안내, 문자 발송")]

        refused = await other.put(f"/api/calls/{call_id}/consultation", json=record)
        assert refused.status_code == 403
        bad = await agent.put(f"/api/calls/{call_id}/consultation",
                              json={**record, "resolution": "maybe"})
        assert bad.status_code == 422
        assert (await agent.put("/api/calls/nope/consultation", json=record)).status_code == 404

        today = (await agent.get("/api/desk/today")).json()
        assert (today["calls"], today["consultation_records"], today["resolved"]) == (1, 1, 1)
        assert today["average_wait_s"] == 12.0
        assert (await agent.get("/api/desk/callbacks")).json() == []
    async with signed_in(server, Role.SUPERVISOR) as supervisor:
        assert (await supervisor.get("/api/desk/today")).status_code == 403
        assert (await supervisor.get(f"/api/calls/{call_id}/consultation")).status_code == 200
