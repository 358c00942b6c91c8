"""The ARI controller: receives every event of the Stasis application and runs the calls.

Events of one channel are handled in order, one at a time; events of different channels run
concurrently. On every (re)connection of the events socket, the calls in Stasis are matched
with their live state in Redis, so calls that were up while no controller listened carry on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal

from redis.asyncio import Redis

from ivr.ari import AriClient, AriError, Event, EventStream
from ivr.controller.call import Call, CallServices
from ivr.controller.records import CallRecords
from ivr.controller.store import CallStore
from ivr.db import create_engine, init_schema, sessionmaker
from ivr.dialplan.versions import DialplanVersions
from ivr.redis_client import connect_redis
from ivr.settings import Settings

log = logging.getLogger(__name__)

# Bridges the controller makes are named with this prefix, so it can tell them from others.
BRIDGE_PREFIX = "ivr:"

# Synthetic events the controller puts in a channel's queue itself.
RECOVER = "ControllerRecover"
VANISHED = "ControllerVanished"


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
                 records: CallRecords, dialplans: DialplanVersions) -> None:
        self.settings = settings
        self.store = CallStore(redis, settings.node_id)
        self.services = CallServices(
            ari=ari,
            store=self.store,
            records=records,
            dialplans=dialplans,
            start_timer=self.start_timer,
        )
        self.ari = ari
        self.calls: dict[str, Call] = {}
        self._queues: dict[str, collections.deque[Event]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self.events = EventStream(
            settings.ari_base_url,
            settings.ari_app,
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

        timer = asyncio.create_task(fire())
        self._workers.add(timer)
        timer.add_done_callback(self._workers.discard)

    async def on_event(self, event: Event) -> None:
        channel_id = channel_of(event)
        if channel_id is None:
            log.debug("event without a channel: %s", event.get("type"))
            return
        self._enqueue(channel_id, event)

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
                await self._handle(channel_id, queue.popleft())
        finally:
            del self._queues[channel_id]

    async def _handle(self, channel_id: str, event: Event) -> None:
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
                await self._vanished_call(channel_id)
            elif call is not None:
                await call.handle(event)
            else:
                log.debug("%s for unknown channel %s", kind, channel_id)
        except Exception as exc:  # one call's failure never stops the others
            log.exception("call %s: error handling %s", channel_id, event.get("type"))
            if call is not None:
                await call.fail(exc)
        finally:
            if call is not None and call.data.state == "ended":
                self.calls.pop(channel_id, None)

    # --- Recovery after (re)connection --------------------------------------------------------

    async def recover(self) -> None:
        """Match the channels in Stasis with the calls Redis knows, after each connection."""
        channels = await self.ari.channels()
        in_stasis = {
            channel["id"]: channel
            for channel in channels
            if channel.get("dialplan", {}).get("app_name") == "Stasis"
            and str(channel["dialplan"].get("app_data", "")).split(",")[0] == self.settings.ari_app
        }
        known = await self.store.channel_ids()
        for channel_id, channel in in_stasis.items():
            if channel_id not in self.calls:
                self._enqueue(channel_id, {"type": RECOVER, "channel": channel})
        for channel_id in known - in_stasis.keys():
            self._enqueue(channel_id, {"type": VANISHED, "channel": {"id": channel_id}})
        orphans = await self._destroy_orphan_bridges()
        log.info("recovered: %d calls in Stasis, %d ended while away, %d empty bridges removed",
                 len(in_stasis), len(known - in_stasis.keys()), orphans)

    async def _destroy_orphan_bridges(self) -> int:
        """Bridges of ours left without a channel (their calls ended while we were away)."""
        removed = 0
        for bridge in await self.ari.bridges():
            if str(bridge.get("name", "")).startswith(BRIDGE_PREFIX) and not bridge["channels"]:
                try:
                    await self.ari.destroy_bridge(bridge["id"])
                    removed += 1
                except AriError as exc:
                    if not exc.not_found:
                        raise
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

    async def _vanished_call(self, channel_id: str) -> None:
        data = await self.store.load(channel_id)
        if data is None:
            await self.store.remove(channel_id)
            return
        await (await Call.restore(data, self.services)).vanished()

    # --- Running ------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.events.run()


async def run_controller(settings: Settings) -> None:
    """The ``ivr controller`` process: runs until SIGTERM or SIGINT."""
    engine = create_engine(settings.sql_url)
    await init_schema(engine)
    redis = connect_redis(settings)
    sessions = sessionmaker(engine)
    dialplans = DialplanVersions(sessions, redis)
    ari = AriClient(settings.ari_base_url, settings.ari_user, settings.ari_secret(),
                    timeout=settings.ari_timeout)
    controller = Controller(settings, redis, ari, CallRecords(sessions), dialplans)
    log.info("controller for node %s: ARI %s, app %r", settings.node_id,
             settings.ari_base_url, settings.ari_app)

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
        await ari.close()
        await redis.aclose()
        await engine.dispose()

