"""Speech at the front door: at a menu listed in its line's ``front_door`` (120's main menu, and
the foreign-language line's), the caller hears "무엇을 도와드릴까요? 말씀하시거나 번호를
누르세요" before the menu, and may say what they need instead of pressing a key.

The callbot listens while the menu plays (its ears as in ``bot.py``). A key is a menu choice as
always, at every moment: the ears close and the menu goes on. What the caller says is
understood across every topic and routed by its meaning:

- a question the knowledge base answers (or a report the bot takes down) goes to the callbot,
  which answers it (or asks to confirm) at once, without its own greeting;
- a question of a known topic that the bot cannot answer goes to that topic's queue, and the
  agent sees the transcript;
- a request for a person goes where 0 goes;
- nothing made out: "sorry, say it again or press a key", and the menu again, counted as a
  retry of the menu (its last retry goes where the menu's failures go).

A caller who says nothing hears the keypad menu, as before.
"""

from __future__ import annotations

import logging

from callbot.audio import Utterance
from callbot.understand import Match
from callbot.workers import RecognitionFailed
from ivr.ari import Event
from ivr.controller.base import PROMPT, WAITING
from ivr.controller.bot import BOT_THINKING, FRONT_DOOR_LISTENING
from ivr.controller.intake import Intake

log = logging.getLogger(__name__)


class FrontDoor(Intake):
    def _front_door_here(self, menu_id: str) -> bool:
        line = next((line for kind, line in self.plan.lines.items() if kind == self.data.line),
                    None)
        return (line is not None and menu_id in line.front_door
                and self.services.callbot.hears(self.data.language))

    async def _open_front_door(self, menu_id: str) -> bool:
        """Listen at this menu if it is a front door; False if it is not (keys only)."""
        if not self._front_door_here(menu_id):
            await self._close_front_door()
            return False
        if self.listener is None:
            await self.services.callbot.refresh()
            await self._open_ears()
        return True

    async def _close_front_door(self) -> None:
        if self.listener is not None and self.data.bot.topic == "":
            await self._close_ears()

    async def _front_door_speech(self, event: Event) -> None:
        """The caller speaks at the menu: the menu stops and waits for them to finish."""
        if self.data.step in (PROMPT, WAITING):
            await self._stop_prompt()
            self.data.step = FRONT_DOOR_LISTENING
            self.data.timer_token += 1  # no "no input" while they speak
            await self._save()

    async def _front_door_heard(self, event: Event) -> None:
        if self.data.step not in (PROMPT, WAITING, FRONT_DOOR_LISTENING):
            return
        utterance: Utterance = event["utterance"]
        try:
            made_out, _ = await self._think(utterance)
        except RecognitionFailed as exc:
            log.error("call %s: recognition failed at the front door (%s)", self.channel_id,
                      exc)
            await self._front_door_again()
            return
        if self.data.step != BOT_THINKING:
            return  # a key was pressed meanwhile: the menu has it
        heard, match = made_out.heard, made_out.match
        bot = self.data.bot
        bot.heard_at = heard.ended_at
        bot.stages.append({"audio_s": round(heard.audio_seconds, 2),
                           "recognize_s": round(heard.recognition_seconds, 3),
                           "understand_ms": made_out.understand_ms})
        log.info("call %s: heard at the front door %r", self.channel_id, heard.text)
        if match is None:
            bot.transcript.append(f"caller: (not made out) {heard.text}".rstrip())
            await self._front_door_again()
            return
        bot.transcript.append(f"caller: {heard.text}")
        await self._route_by_meaning(match)

    async def _route_by_meaning(self, match: Match) -> None:
        bot, menu = self.data.bot, self._menu()
        if match.wants_agent:
            self.data.path.append(f"{self.data.menu}:said_agent")
            await self._run(menu.agent_action())
        elif match.topic and ((match.question_type and match.answer) or match.confirm):
            # The callbot answers (or asks to confirm) at once: its ears are already open.
            self.data.path.append(f"{self.data.menu}:said")
            await self._join_bot(match.topic)
            bot.mode = "speech"
            await self._act_on(match)
        elif match.topic:
            skill = match.skill or match.topic
            self.data.path.append(f"{self.data.menu}:said:{skill}")
            bot.topic, bot.skill, bot.handoff = match.topic, skill, "routed by meaning"
            await self._timeline("front_door", detail=f"{skill} {match.topic_confidence:.2f}")
            await self._close_ears()
            await self._enqueue(skill)
        else:
            await self._front_door_again()

    async def _front_door_again(self) -> None:
        """Not made out: "say it again or press a key" and the menu, as one of its retries."""
        await self._retry(self._menu(), ["front_door_again"])
