"""ARI: Asterisk's REST interface and its events WebSocket."""

from ivr.ari.client import AriClient, AriError, unless_gone
from ivr.ari.events import Event, EventStream

__all__ = ["AriClient", "AriError", "Event", "EventStream", "unless_gone"]
