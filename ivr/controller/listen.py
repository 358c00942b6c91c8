"""A supervisor listens in on a call: a snoop on the caller's channel (both directions) is
bridged with the supervisor's phone, which is rung through its SIP account. The caller and the
agent hear nothing of it; it ends when the call ends (or the supervisor hangs up)."""

from __future__ import annotations

import uuid

from ivr.ari import Event, unless_gone
from ivr.controller.base import CallBase

LISTEN = "ListenIn"  # an order from the API: ring this SIP account and let it listen


class Listening(CallBase):
    async def _listen_in(self, event: Event) -> None:
        endpoint = str(event["endpoint"])
        app = self.services.settings.stasis_app
        snoop, phone = f"listen-{uuid.uuid4().hex}", f"supervisor-{uuid.uuid4().hex}"
        for leg in (snoop, phone):  # their events come to this call (and change nothing)
            self.services.watch_leg(leg, self.channel_id)
        self.data.listeners = [*self.data.listeners, snoop, phone]
        await self._save()
        await self.ari.request("POST", f"/channels/{self.channel_id}/snoop", params={
            "spy": "both", "app": app, "appArgs": f"snoop,{self.channel_id}",
            "snoopId": snoop})
        # Created first, bridged, then dialled: the supervisor hears the call from the start.
        await self.ari.request("POST", "/channels/create", params={
            "endpoint": f"PJSIP/{endpoint}", "app": app,
            "appArgs": f"snoop,{self.channel_id}", "channelId": phone})
        bridge = await self.services.bridge(f"listen:{self.channel_id}:{phone}", [snoop, phone])
        self.data.listeners.append(f"bridge:{bridge}")
        await self._save()
        await self.ari.request("POST", f"/channels/{phone}/dial", params={"timeout": 30})
        await self._timeline("listen", detail=endpoint)

    async def _leave_queue_or_agent(self) -> None:
        """The call is over: whoever listened is hung up too."""
        for item in self.data.listeners:
            with unless_gone():
                if item.startswith("bridge:"):
                    await self.ari.destroy_bridge(item.removeprefix("bridge:"))
                else:
                    self.services.forget_leg(item)
                    await self.ari.hangup(item)
        self.data.listeners = []
        await super()._leave_queue_or_agent()
