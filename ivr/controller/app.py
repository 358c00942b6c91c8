"""The ARI controller: receives every event of the Stasis application and runs the calls.

Events of one channel are handled in order, one at a time; events of different channels run
concurrently. On every (re)connection of the events socket, the calls in Stasis are matched
with their live state in Redis, so calls that were up while no controller listened carry on.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import signal
import time
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from callbot.service import Callbot
from ivr.acd.agents import AGENTS_CHANGED, Agents
from ivr.acd.core import Acd, acd_for
from ivr.ari import AriClient, AriError, Event, EventStream, unless_gone
from ivr.controller.base import AGENT_ASSIGNED, BRIDGE_PREFIX, CallServices
from ivr.controller.call import Call
from ivr.controller.callback import CALLBACK_PREFIX, CallbackRun
from ivr.controller.reaction import ReactionTimes
from ivr.controller.records import CallRecords
from ivr.controller.store import CallStore, commands_channel
from ivr.db import create_engine, init_schema, sessionmaker
from ivr.dialplan.versions import DialplanVersions
from ivr.redis_client import connect_redis
from ivr.settings import Settings

log = logging.getLogger(__name__)

# The first Stasis argument of the legs the controller dials itself.
LEGS = ("agent", "citizen", "outside", "consult", "snoop")

# The ARI events the calls act on; Asterisk keeps the rest (about two thirds of a call's events:
# variables set, bridge and dialplan moves) to itself.
EVENTS_USED = ("StasisStart", "StasisEnd", "ChannelDestroyed", "ChannelHangupRequest",
               "ChannelDtmfReceived", "PlaybackStarted", "PlaybackFinished",
               "DeviceStateChanged")

# Synthetic events the controller puts in a channel's queue itself.
RECOVER = "ControllerRecover"
VANISHED = "ControllerVanished"
RECOVER_CALLBACK = "ControllerRecoverCallback"
# Every controller says it is alive this often; one silent for PEER_SILENCE seconds is gone.
CONTROLLERS_KEY = "ivr:controllers"
PEER_CHECK_SECONDS = 5.0
PEER_SILENCE = 30


def alive_key(controller_id: str) -> str:
    return f"ivr:controller:{controller_id}:alive"


def channel_of(event: Event) -> str | None:
    """The channel an ARI event belongs to, if any."""
    if "channel" in event:
        return str(event["channel"]["id"])
    playback = event.get("playback")
    if playback and str(playback.get("target_uri", "")).startswith("channel:"):
        return str(playback["target_uri"].split(":", 1)[1])
    return None


class Controller:
    def __init__(self, settings: Settings, redis: Redis, ari: AriClient,
                 records: CallRecords, dialplans: DialplanVersions, agents: Agents,
                 acd: Acd, callbot: Callbot) -> None:
        self.settings = settings
        self.store = CallStore(redis, settings.controller_id)
        self.acd = acd
        self.agents = agents
        self.services = CallServices(
            settings=settings,
            ari=ari,
            store=self.store,
            records=records,
            dialplans=dialplans,
            acd=acd,
            start_timer=self.start_timer,
            dispatch=self.dispatch,
            watch_leg=self.watch_leg,
            forget_leg=self.forget_leg,
            start_wrap_up=self.start_wrap_up,
            callbot=callbot,
            post=self._enqueue,
        )
        self.legs: dict[str, str] = {}  # an agent's leg -> the caller's channel
        self._registered: dict[str, bool] = {}  # agent -> softphone registered, as last seen
        self._asterisk_started = ""  # Asterisk's start time when this controller last connected
        self._dispatching: asyncio.Task[None] | None = None
        self._dispatch_again = False
        self.ari = ari
        self.reactions = ReactionTimes()
        ari.on_request = self.reactions.acted
        self.calls: dict[str, Call] = {}
        self.callbacks: dict[str, CallbackRun] = {}
        self._queues: dict[str, collections.deque[Event]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self.events = EventStream(
            settings.ari_base_url,
            settings.stasis_app,
            settings.ari_user,
            settings.ari_secret(),
            on_event=self.on_event,
            on_connected=self.recover,
        )

    # --- Event intake -------------------------------------------------------------------------

    def start_timer(self, channel_id: str, seconds: float, event: Event) -> None:
        """After ``seconds``, ``event`` joins the channel's queue like an ARI event."""

        async def fire() -> None:
            await asyncio.sleep(seconds)
            self._enqueue(channel_id, {**event, "channel": {"id": channel_id}})

        self._spawn(fire())

    async def on_event(self, event: Event) -> None:
        if event.get("type") == "DeviceStateChanged":
            self._spawn(self._registration(event["device_state"]))
            return
        channel_id = channel_of(event)
        if channel_id is None:
            log.debug("event without a channel: %s", event.get("type"))
            return
        # An agent's leg belongs to its caller's call: one queue, events in order.
        if event.get("type") == "StasisStart" and (event.get("args") or [""])[0] in LEGS:
            # An agent's or citizen's leg answered: it belongs to the call in its arguments.
            self.legs.setdefault(channel_id, str(event["args"][1]))
        self._enqueue(self.legs.get(channel_id, channel_id), event)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run a job beside the event queues; its failure is logged, never lost."""

        async def logged() -> None:
            try:
                await job
            except Exception:
                log.exception("background job failed")

        task = asyncio.create_task(logged())
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    # --- Agents and the match -----------------------------------------------------------------

    def watch_leg(self, leg: str, caller: str) -> None:
        self.legs[leg] = caller

    def forget_leg(self, leg: str) -> None:
        self.legs.pop(leg, None)

    async def _registration(self, device: Event) -> None:
        """An agent's device state: UNAVAILABLE while their softphone is not registered."""
        agent = str(device.get("name", "")).removeprefix("PJSIP/")
        online = device.get("state") not in ("UNAVAILABLE", "INVALID", "UNKNOWN")
        if self._registered.get(agent) == online:
            return  # a call only made the phone busy or free again: three times a call
        live = await self.acd.agent(agent)
        if live and (live.get("registered") == "1") != online:  # an agent, and it changed
            await self.acd.set_registered(agent, online)
            log.info("agent %s: softphone %s", agent,
                     "registered" if online else "not registered")
            self.dispatch()
        self._registered[agent] = online

    def dispatch(self) -> None:
        """Match waiting callers with free agents, now; one run at a time per controller."""
        if self._dispatching is not None and not self._dispatching.done():
            self._dispatch_again = True
            return
        self._dispatching = asyncio.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        try:
            while True:
                self._dispatch_again = False
                assignment = await self.acd.match()
                if assignment is None:
                    if not self._dispatch_again:
                        return
                    continue
                if assignment.call_id.startswith(CALLBACK_PREFIX):
                    # A callback's turn: this controller phones the agent, then the citizen.
                    entry = await self.acd.entry(assignment.call_id)
                    self.callbacks[assignment.call_id] = CallbackRun(
                        assignment.call_id, entry, self.services)
                elif assignment.call_id not in self.calls:
                    await self._hand_over(assignment.call_id, assignment.agent_id)
                    continue
                log.info("call %s: agent %s (queue %s, level %d)", assignment.call_id,
                         assignment.agent_id, assignment.queue, assignment.level)
                self._enqueue(assignment.call_id, {
                    "type": AGENT_ASSIGNED, "agent": assignment.agent_id,
                    "channel": {"id": assignment.call_id}})
        except Exception:
            log.exception("dispatch failed")

    async def _hand_over(self, call_id: str, agent: str) -> None:
        """The match gave an agent to a caller another controller runs: tell that controller.
        If it does not listen (it is down), both go back: the caller keeps their place."""
        call = await self.store.load(call_id)
        order = {"type": AGENT_ASSIGNED, "agent": agent, "channel": {"id": call_id}}
        if call is not None and call.controller and await self.store.redis.publish(
                commands_channel(call.controller), json.dumps(order)):
            log.info("call %s: agent %s, handed to controller %s", call_id, agent,
                     call.controller)
            return
        log.warning("call %s: its controller is not listening; agent %s released", call_id,
                    agent)
        await self._give_back(call_id, agent)

    async def _give_back(self, call_id: str, agent: str) -> None:
        """Undo a match nobody can carry out: the caller back in their place (if still there),
        the agent free again."""
        if await self.acd.entry(call_id):
            await self.acd.requeue(call_id)
        await self.acd.release(agent)
        self.dispatch()

    def start_wrap_up(self, agent: str) -> None:
        async def wrap_up_over() -> None:
            await asyncio.sleep(self.settings.wrap_up_seconds)
            if not await self.acd.agent(agent):
                return  # removed meanwhile
            if await self.acd.ready(agent):  # not if they paused or logged out meanwhile
                log.info("agent %s: wrap-up over, available", agent)
                self.dispatch()

        self._spawn(wrap_up_over())

    async def _commands(self) -> None:
        """Orders for the calls this controller runs (a transfer from the API, an agent matched
        by another controller), handled in the call's queue like its ARI events."""
        while True:
            try:
                async with self.store.redis.pubsub() as pubsub:
                    await pubsub.subscribe(commands_channel(self.settings.controller_id))
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            event = json.loads(message["data"])
                            self._enqueue(str(event["channel"]["id"]), event)
            except Exception as exc:  # Redis went away: listen again
                log.warning("commands not received (%s); listening again", exc)
                await asyncio.sleep(1.0)

    async def _agent_changes(self) -> None:
        """An agent made, changed or removed through another process (the API, which reaches
        one node's Asterisk only): this controller's Asterisk follows."""
        while True:
            try:
                async with self.store.redis.pubsub() as pubsub:
                    await pubsub.subscribe(AGENTS_CHANGED)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self.agents.refresh(str(message["data"]))
            except Exception as exc:  # Redis or Asterisk went away: listen again
                log.warning("agents' changes not received (%s); listening again", exc)
                await asyncio.sleep(1.0)

    async def _watch_peers(self) -> None:
        """Say this controller is alive, and close the calls of one that has been silent for
        PEER_SILENCE seconds: its whole node is gone (a node whose processes only restart comes
        back well within that, and recovers its calls itself). Its calls' records are closed
        as cut, their queue places freed, by whichever controller notices first."""
        me = self.settings.controller_id
        # Judged only after this controller itself has seen Redis for PEER_SILENCE: after its
        # own start, or a Redis outage, live peers have had the time to say so again.
        healthy_since = time.monotonic()
        while True:
            try:
                await self.store.redis.set(alive_key(me), "1", ex=PEER_SILENCE)
                await self.store.redis.sadd(CONTROLLERS_KEY, me)
                if time.monotonic() - healthy_since < PEER_SILENCE:
                    await asyncio.sleep(PEER_CHECK_SECONDS)
                    continue
                for peer in map(str, await self.store.redis.smembers(CONTROLLERS_KEY)):
                    if peer == me or await self.store.redis.exists(alive_key(peer)):
                        continue
                    if await self.store.redis.set(f"ivr:controller:{peer}:closing", me, nx=True,
                                                  ex=PEER_SILENCE):
                        await self._close_calls_of(peer)
            except RedisError as exc:
                log.warning("peers not watched (%s)", exc)
                healthy_since = time.monotonic() + PEER_CHECK_SECONDS
            await asyncio.sleep(PEER_CHECK_SECONDS)

    async def _close_calls_of(self, peer: str) -> None:
        theirs = CallStore(self.store.redis, peer)
        closed = 0
        for channel_id in await theirs.channel_ids():
            data = await theirs.load(channel_id)
            if data is not None:
                try:
                    await (await Call.restore(data, self.services)).vanished(cut=True)
                    closed += 1
                except Exception:
                    log.exception("call %s of %s: not closed", channel_id, peer)
                    continue
            await theirs.remove(channel_id)
        await self.store.redis.srem(CONTROLLERS_KEY, peer)
        log.warning("controller %s silent for %d s: its node is gone; %d of its calls "
                    "recorded as cut", peer, PEER_SILENCE, closed)

    async def _tick(self) -> None:
        """Every second: waits grow, so the search widens; try the match again."""
        while True:
            await asyncio.sleep(1.0)
            self.dispatch()

    def _enqueue(self, channel_id: str, event: Event) -> None:
        queue = self._queues.get(channel_id)
        if queue is not None:
            queue.append(event)
            return
        queue = self._queues[channel_id] = collections.deque([event])
        worker = asyncio.create_task(self._drain(channel_id, queue))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _drain(self, channel_id: str, queue: collections.deque[Event]) -> None:
        try:
            while queue:
                event = queue.popleft()
                self.reactions.handling(event)
                await self._handle(channel_id, event)
                self.reactions.handling(None)
        finally:
            del self._queues[channel_id]

    async def _handle(self, channel_id: str, event: Event) -> None:
        if event["type"] == RECOVER_CALLBACK:
            try:
                await self._recover_callback(channel_id, set(event["in_stasis"]))
            except Exception:
                log.exception("callback %s: not recovered", channel_id)
            return
        callback = self.callbacks.get(channel_id)
        if callback is not None:
            await self._handle_callback(callback, event)
            return
        call = self.calls.get(channel_id)
        try:
            kind = event["type"]
            if kind == "StasisStart" and call is None:
                call = await Call.from_stasis_start(event, self.services)
                self.calls[channel_id] = call
                await call.start()
            elif kind == RECOVER:
                await self._recover_call(channel_id, event)
            elif kind == VANISHED:
                await self._vanished_call(channel_id, bool(event.get("cut")))
            elif call is not None:
                await call.handle(event)
            elif kind == AGENT_ASSIGNED:  # not (or not yet) known here: undo the match
                await self._give_back(channel_id, str(event["agent"]))
            else:
                log.debug("%s for unknown channel %s", kind, channel_id)
        except AriError as exc:
            if exc.not_found:  # the caller hung up meanwhile: StasisEnd follows and ends it
                log.info("call %s: %s", channel_id, exc)
            else:
                log.exception("call %s: error handling %s", channel_id, event.get("type"))
                if call is not None:
                    await call.fail(exc)
        except Exception as exc:  # one call's failure never stops the others
            log.exception("call %s: error handling %s", channel_id, event.get("type"))
            if call is not None:
                await call.fail(exc)
        finally:
            if call is not None and call.data.state == "ended":
                self.calls.pop(channel_id, None)

    async def _handle_callback(self, callback: CallbackRun, event: Event) -> None:
        try:
            if event["type"] == AGENT_ASSIGNED:
                await callback.start(str(event["agent"]))
            else:
                await callback.handle(event)
        except Exception:
            log.exception("callback %s: error handling %s", callback.callback_id, event["type"])
            callback.done = True
        if callback.done:
            self.callbacks.pop(callback.callback_id, None)

    # --- Recovery after (re)connection --------------------------------------------------------

    async def recover(self) -> None:
        """Match the channels in Stasis with the calls Redis knows, after each connection."""
        await self.ari.allow_events(self.settings.stasis_app, EVENTS_USED)
        channels = await self.ari.channels()
        in_stasis = {
            channel["id"]: channel
            for channel in channels
            if self._runs(channel.get("dialplan", {}))
        }
        try:
            known = await self.store.channel_ids()
        except RedisError as exc:
            # Calls this process already runs go on from memory; the rest wait for Redis (the
            # next connection of the events socket looks again).
            log.warning("recovery without Redis (%s): only calls in memory go on", exc)
            known = set()
        callbacks = {run for run in known if run.startswith(CALLBACK_PREFIX)}
        known -= callbacks
        for channel_id, channel in in_stasis.items():
            if channel_id not in self.calls:
                self._enqueue(channel_id, {"type": RECOVER, "channel": channel})
        cut = await self._asterisk_restarted()
        for channel_id in known - in_stasis.keys():
            self._enqueue(channel_id, {"type": VANISHED, "channel": {"id": channel_id},
                                       "cut": cut})
        present = {channel["id"] for channel in channels}
        for callback_id in callbacks - self.callbacks.keys():
            self._enqueue(callback_id, {"type": RECOVER_CALLBACK, "in_stasis": sorted(present)})
        orphans = await self._destroy_orphan_bridges()
        self._registered.clear()  # the sync below reads Asterisk and Redis afresh
        try:
            log.info("%d agents in Asterisk and Redis", await self.agents.sync())
        except RedisError as exc:
            log.warning("agents not synchronised (%s)", exc)
        log.info("recovered: %d calls in Stasis, %d ended while away, %d empty bridges removed",
                 len(in_stasis), len(known - in_stasis.keys()), orphans)

    def _runs(self, dialplan: dict[str, Any]) -> bool:
        """A channel is a call of this controller if it waits in its Stasis app and is not one
        of the legs the controller dialled (those come back with their callers)."""
        if dialplan.get("app_name") != "Stasis":
            return False
        app, *args = str(dialplan.get("app_data", "")).split(",")
        return app == self.settings.stasis_app and (args or [""])[0] not in LEGS

    async def _destroy_orphan_bridges(self) -> int:
        """Bridges of ours left without a channel (their calls ended while we were away)."""
        removed = 0
        for bridge in await self.ari.bridges():
            ours = str(bridge.get("name", "")).startswith(
                f"{BRIDGE_PREFIX}{self.settings.stasis_app}:")
            if ours and not bridge["channels"]:
                with unless_gone():
                    await self.ari.destroy_bridge(bridge["id"])
                    removed += 1
        return removed

    async def _recover_call(self, channel_id: str, event: Event) -> None:
        if channel_id in self.calls:
            return
        data = await self.store.load(channel_id)
        if data is None:
            # In Stasis but never saved (the controller died at once): start it afresh.
            app_args = str(event["channel"]["dialplan"].get("app_data", "")).split(",")[1:]
            start = {"type": "StasisStart", "channel": event["channel"], "args": app_args}
            call = await Call.from_stasis_start(start, self.services)
            self.calls[channel_id] = call
            await call.start()
            return
        call = await Call.restore(data, self.services)
        self.calls[channel_id] = call
        await call.resume()

    async def _recover_callback(self, callback_id: str, in_stasis: set[str]) -> None:
        data = await self.store.load(callback_id)
        if data is None:
            await self.store.remove(callback_id)
            return
        run = CallbackRun.restore(data, await self.acd.entry(callback_id), self.services)
        self.callbacks[callback_id] = run
        await run.resume(in_stasis)
        if run.done:
            self.callbacks.pop(callback_id, None)
            self.dispatch()

    async def _vanished_call(self, channel_id: str, cut: bool) -> None:
        data = await self.store.load(channel_id)
        if data is None:
            await self.store.remove(channel_id)
            return
        await (await Call.restore(data, self.services)).vanished(cut)

    async def _asterisk_restarted(self) -> bool:
        """Whether Asterisk started again since this controller (or the one before it, of the
        same name) last saw it: then the calls it no longer has were cut, not hung up."""
        try:
            info = await self.ari.asterisk_info()
        except AriError as exc:
            log.warning("Asterisk's start time not read: %s", exc)
            return False
        started = str(info.get("status", {}).get("startup_time", ""))
        before = self._asterisk_started
        try:
            stored = await self.store.redis.getset(
                f"ivr:controller:{self.settings.controller_id}:asterisk_started", started)
            before = str(stored) if stored is not None else before
        except RedisError as exc:
            log.warning("Asterisk's start time not kept in Redis: %s", exc)
        self._asterisk_started = started
        return bool(before) and before != started

    # --- Running ------------------------------------------------------------------------------

    async def run(self) -> None:
        helpers = [asyncio.create_task(self._tick()), asyncio.create_task(self._commands()),
                   asyncio.create_task(self._agent_changes()),
                   asyncio.create_task(self._watch_peers()),
                   asyncio.create_task(self.reactions.keep_flushing(self.store.redis))]
        try:
            await self.events.run()
        finally:
            for helper in helpers:
                helper.cancel()


async def run_controller(settings: Settings) -> None:
    """The ``ivr controller`` process: runs until SIGTERM or SIGINT."""
    engine = create_engine(settings.sql_url)
    await init_schema(engine)
    redis = connect_redis(settings)
    sessions = sessionmaker(engine)
    dialplans = DialplanVersions(sessions, redis)
    ari = AriClient(settings.ari_base_url, settings.ari_user, settings.ari_secret(),
                    timeout=settings.ari_timeout)
    acd = acd_for(settings, redis)
    callbot = await Callbot.start(settings, redis, sessions)  # a bad model setting stops here
    records = CallRecords(engine)
    controller = Controller(settings, redis, ari, records, dialplans,
                            Agents(sessions, ari, acd, [settings.stasis_app],
                                   settings.edge_address, settings.agent_qualify_seconds),
                            acd, callbot)
    log.info("controller %s: ARI %s, app %r", settings.controller_id,
             settings.ari_base_url, settings.stasis_app)

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if main is not None:
            loop.add_signal_handler(sig, main.cancel)
    try:
        await controller.run()
    except asyncio.CancelledError:
        log.info("controller stopping")
    finally:
        callbot.close()
        # Writes held while SQL is away get a few seconds to land (the supervisor kills at 10).
        await records.close(timeout=5.0)
        await ari.close()
        await redis.aclose()
        await engine.dispose()

