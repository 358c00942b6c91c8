"""GET /health and GET /metrics: open to monitoring, they reveal no call data."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from callbot.service import bot_figures
from ivr.api.health import check_parts
from ivr.controller.reaction import percentile, reaction_histogram
from ivr.controller.store import active_call_count, ended_call_counts

router = APIRouter(tags=["system"])


@router.get("/health", summary="State of Asterisk, ARI, Redis and the database")
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    parts = await check_parts(state.ari, state.settings.stasis_apps, state.redis, state.engine)
    down = [name for name, part in parts.items() if part["state"] != "up"]
    body = {"status": "down" if down else "ok", "down": down, **parts}
    return JSONResponse(body, status_code=503 if down else 200)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    state = request.app.state
    registry = CollectorRegistry()
    parts = await check_parts(state.ari, state.settings.stasis_apps, state.redis, state.engine)
    up = Gauge("ivr_part_up", "Whether a part the server stands on answers (1) or not (0)",
               ["part"], registry=registry)
    for name, part in parts.items():
        up.labels(part=name).set(1 if part["state"] == "up" else 0)
    if parts["redis"]["state"] == "up":
        active = Gauge("ivr_calls_active", "Calls in progress", registry=registry)
        active.set(await active_call_count(state.redis))
        ended = Gauge("ivr_calls_ended_total", "Calls ended since the data folder was made",
                      ["line", "outcome"], registry=registry)
        for (line, outcome), count in (await ended_call_counts(state.redis)).items():
            ended.labels(line=line, outcome=outcome).set(count)
        bot = Gauge("ivr_bot", "The callbot's figures: calls, resolved, containment, hand-offs, "
                    "recognition per second of audio, answer latency", ["figure"],
                    registry=registry)
        for figure, value in (await bot_figures(state.redis)).items():
            bot.labels(figure=figure).set(value)
        reactions = await reaction_histogram(state.redis)
        reaction = Gauge("ivr_controller_reaction_ms", "From an ARI event to the controller's "
                         "first request in answer to it: quantiles of every event so far",
                         ["quantile"], registry=registry)
        for share in (0.5, 0.95, 0.99):
            reaction.labels(quantile=str(share)).set(percentile(reactions, share) or 0)
    return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
