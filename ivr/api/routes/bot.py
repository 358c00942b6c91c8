"""The callbot's understanding as text: the seed of a chat channel and the agents' search.

``POST /api/bot/ask`` answers a question as the bot on the phone would: the same knowledge
base and the same understanding. Its figures (containment, hand-offs, recognition time, answer
latency) are at ``GET /api/bot/figures``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from callbot.service import bot_figures
from callbot.understand import Understanding
from ivr.api.auth import Principal, require_roles
from ivr.models import Role

router = APIRouter(prefix="/api/bot", tags=["callbot"])

AnyRole = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR, Role.ADMIN))]


class Question(BaseModel):
    text: str = Field(min_length=1, max_length=500,
                      examples=["수도 요금 이사 정산은 어떻게 하나요"])
    language: str = Field(default="ko", pattern="^(ko|en|zh|ja|vi|mn)$")


class CandidateOut(BaseModel):
    question_type: str
    topic: str
    score: float


class Answer(BaseModel):
    question_type: str | None = Field(description="the matched question type, if confident")
    topic: str | None = Field(description="the menu topic id")
    skill: str | None = Field(description="the agent queue's topic to hand over to")
    confidence: float
    answer: str | None
    wants_agent: bool
    confirm: str | None = Field(
        description="not sure enough to answer: the question type the bot would ask the "
                    "caller to confirm")
    candidates: list[CandidateOut]


@router.post("/ask", response_model=Answer, summary="Ask the callbot a question as text")
async def ask(request: Request, question: Question, principal: AnyRole) -> Answer:
    understanding: Understanding = request.app.state.understanding
    match = await asyncio.to_thread(understanding.match, question.text, question.language)
    return Answer(
        question_type=match.question_type, topic=match.topic, skill=match.skill,
        confidence=round(match.confidence, 3), answer=match.answer,
        wants_agent=match.wants_agent,
        confirm=match.confirm.question_type if match.confirm else None,
        candidates=[CandidateOut(question_type=c.question_type, topic=c.topic,
                                 score=round(c.score, 3)) for c in match.candidates])


@router.get("/figures", summary="The callbot's figures so far")
async def figures(request: Request, principal: AnyRole) -> dict[str, float]:
    return await bot_figures(request.app.state.redis)
