"""The states a call can be in, and which moves between them are allowed.

One call, one state machine: every state is named here, even those that later capabilities
fill in (the bot, queues, agents, transfers). A move that is not listed is a bug, refused and
logged rather than carried out.
"""

from __future__ import annotations

from enum import StrEnum


class CallState(StrEnum):
    RINGING = "ringing"  # in Stasis, not answered yet (or hearing an early-media announcement)
    IN_MENU = "in_menu"  # answered, hearing prompts and pressing digits
    WITH_BOT = "with_bot"  # talking to the callbot
    QUEUED = "queued"  # waiting in a skill queue
    OFFERED = "offered"  # an agent's phone is ringing with this call
    TALKING = "talking"  # bridged with an agent
    TRANSFERRING = "transferring"  # being moved to another queue, agent or outside number
    WRAP_UP = "wrap_up"  # caller gone, the agent writes the consultation record
    ENDED = "ended"


ALLOWED_MOVES: dict[CallState, frozenset[CallState]] = {
    CallState.RINGING: frozenset({CallState.IN_MENU, CallState.ENDED}),
    CallState.IN_MENU: frozenset(
        {CallState.WITH_BOT, CallState.QUEUED, CallState.ENDED}
    ),
    CallState.WITH_BOT: frozenset({CallState.IN_MENU, CallState.QUEUED, CallState.ENDED}),
    CallState.QUEUED: frozenset({CallState.OFFERED, CallState.ENDED}),
    CallState.OFFERED: frozenset({CallState.TALKING, CallState.QUEUED, CallState.ENDED}),
    CallState.TALKING: frozenset(
        {CallState.TRANSFERRING, CallState.WRAP_UP, CallState.ENDED}
    ),
    CallState.TRANSFERRING: frozenset(
        {CallState.TALKING, CallState.QUEUED, CallState.WRAP_UP, CallState.ENDED}
    ),
    CallState.WRAP_UP: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class IllegalMove(Exception):
    def __init__(self, current: CallState, target: CallState) -> None:
        super().__init__(f"a call cannot move from {current} to {target}")
        self.current = current
        self.target = target


def check_move(current: CallState, target: CallState) -> None:
    if target not in ALLOWED_MOVES[current]:
        raise IllegalMove(current, target)
