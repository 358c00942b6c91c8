"""ARI: Asterisk's REST interface and its events WebSocket."""

from ivr.ari.client import AriClient, AriError, ChannelGone, unless_gone
from ivr.ari.events import Event, EventStream

__all__ = ["AriClient", "AriError", "ChannelGone", "Event", "EventStream", "unless_gone"]
