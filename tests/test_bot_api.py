"""POST /api/bot/ask: the callbot's understanding as text, for any signed-in role."""

from __future__ import annotations

import httpx

from tests.conftest import Server


async def test_ask_the_bot_in_korean_and_english(api: httpx.AsyncClient) -> None:
    korean = await api.post("/api/bot/ask", json={"text": "이사 가는데 수도요금 정산 어떻게 해요",
                                                  "language": "ko"})
    assert korean.status_code == 200, korean.text
    answer = korean.json()
    # Answered, or (not quite sure) the question the bot would ask the caller to confirm.
    assert answer["question_type"] or answer["confirm"] == "water_bill_moving"
    assert answer["candidates"][0]["question_type"] == "water_bill_moving"
    assert (answer["topic"], answer["skill"]) == ("water", "water")
    assert answer["confidence"] >= 0.3
    assert bool(answer["answer"]) == bool(answer["question_type"])
    english = (await api.post("/api/bot/ask", json={"text": "where can I pick up my towed car",
                                                     "language": "en"})).json()
    assert english["topic"] == "traffic" and english["answer"]
    agent = (await api.post("/api/bot/ask", json={"text": "상담원 연결해 주세요"})).json()
    assert agent["wants_agent"] is True


async def test_ask_needs_a_signed_in_user_and_a_real_question(
        server: Server, api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as anonymous:
        assert (await anonymous.post("/api/bot/ask", json={"text": "hi"})).status_code == 401
    assert (await api.post("/api/bot/ask", json={"text": ""})).status_code == 422
    assert (await api.post("/api/bot/ask", json={"text": "hi", "language": "xx"})
            ).status_code == 422
