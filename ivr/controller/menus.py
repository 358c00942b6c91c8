"""A call in the menus: digits, type-ahead, wrong keys and silence, '*' back, and the options'
actions (another menu, a queue, an information message, goodbye)."""

from __future__ import annotations

import logging

from ivr.ari import Event
from ivr.controller.base import (
    EMERGENCY,
    GOODBYE,
    INFO,
    INTRO,
    MENU_TIMEOUT,
    PROMPT,
    WAITING,
    CallBase,
)
from ivr.controller.bot import BOT_THINKING, FRONT_DOOR_LISTENING
from ivr.dialplan.model import AGENT, BACK, Action, Menu

log = logging.getLogger(__name__)


class Menus(CallBase):
    async def _digit(self, event: Event) -> None:
        digit = str(event.get("digit", ""))
        if not digit:
            return
        step = self.data.step
        log.info("call %s: digit %s (%s ms, %s) in %s/%s", self.channel_id, digit,
                 event.get("duration_ms"), event.get("timestamp"), self.data.menu or "-", step)
        if step in (EMERGENCY, INTRO):
            self.data.digits += digit  # typed ahead: kept for the menu that follows
            await self._save()
        elif step in (PROMPT, WAITING, INFO, FRONT_DOOR_LISTENING, BOT_THINKING):
            # A key interrupts whatever plays, and speech at the front door too.
            await self._stop_prompt()
            self.data.pending = ""
            await self._close_front_door()
            await self._menu_digit(digit)

    async def _timeout(self, event: Event) -> None:
        if self.data.step != WAITING or event.get("token") != self.data.timer_token:
            return  # a digit came first, or an older timer
        menu = self._menu()
        self.data.path.append(f"{self.data.menu}:timeout")
        await self._retry(menu, menu.timeout_prompt)


    # --- Menus --------------------------------------------------------------------------------

    def _menu(self) -> Menu:
        return self.plan.menus[self.data.menu]

    async def _enter_menu(self, menu_id: str, before: list[str] | None = None) -> None:
        self.data.menu = menu_id
        self.data.retries = 0
        if self.data.digits:
            # Digits typed ahead choose at once: the caller knows the way.
            digit, self.data.digits = self.data.digits[0], self.data.digits[1:]
            await self._menu_digit(digit)
            return
        # At a front door the caller may say what they need: they are told so first.
        front_door = ["front_door"] if await self._open_front_door(menu_id) else []
        await self._play(PROMPT, [*(before or []), *front_door, *self._menu().prompt])

    async def _menu_digit(self, digit: str) -> None:
        menu = self._menu()
        self.data.path.append(f"{self.data.menu}:{digit}")
        if digit == BACK:
            await self._back()
        elif digit in menu.options:
            await self._run(menu.options[digit])
        elif digit == AGENT:
            await self._run(menu.agent_action())
        else:
            await self._retry(menu, menu.invalid_prompt)

    async def _retry(self, menu: Menu, explanation: list[str]) -> None:
        self.data.retries += 1
        if self.data.retries >= menu.retries:
            self.data.path.append(f"{self.data.menu}:failure")
            await self._run(menu.failure_action())
            return
        await self._play(PROMPT, [*explanation, *menu.prompt])

    async def _back(self) -> None:
        if not self.data.menu_stack:
            await self._enter_menu(self.data.menu)  # the first menu: say it again
            return
        menu_id, _, language = self.data.menu_stack.pop().partition("@")
        self.data.language = language or self.data.language
        await self._enter_menu(menu_id)

    async def _wait_for_digit(self) -> None:
        self.data.step = WAITING
        self.data.timer_token += 1
        await self._save()
        self.services.start_timer(self.channel_id, self._menu().timeout,
                                  {"type": MENU_TIMEOUT, "token": self.data.timer_token})

    async def _run(self, action: Action) -> None:
        """Carry out a menu option, a line's start or a failure."""
        if action.menu is None and action.bot is None:
            await self._close_front_door()  # the caller leaves the menus: nobody listens
        if action.menu is not None:
            if self.data.menu:
                self.data.menu_stack.append(f"{self.data.menu}@{self.data.language}")
            if action.language is not None:
                self.data.language = action.language
            await self._enter_menu(action.menu)
        elif action.bot is not None:
            await self._start_bot(action.bot)
        elif action.queue is not None:
            self.data.path.append(f"queue:{action.queue}")
            await self._enqueue(action.queue)
        elif action.info is not None:
            self.data.pending = action.then.model_dump_json() if action.then else ""
            await self._play(INFO, list(action.info))
        elif action.hangup:
            await self._play(GOODBYE, ["goodbye"])
