"""The callbot taking down a complaint on a call: an illegal-parking report, a large-waste
collection (``callbot.intake`` says what each needs and how it is read).

It begins where the bot would have read how to make that report: the complaint is opened at
once, as incomplete, with the district of the line the call came in on, and its receipt
number. Then each detail in turn:

    ask -> the caller answers -> read back "I heard <detail>, is that right?" (yes / 1)
        -> saved with the complaint -> the next detail

A detail the caller cannot give (nothing usable, a no to the read-back, silence) is asked once
more; the second time an agent takes the call, with the complaint as it stands. Once every
detail is in, the complaint is filed and the caller hears its receipt number. A caller who
hangs up halfway leaves the complaint incomplete, with what they gave, for an agent to follow
up. At every moment 0 is an agent, and "상담원 연결해 주세요" too.
"""

from __future__ import annotations

import logging

from callbot.complaints import ComplaintStatus
from callbot.intake import REPORT_KINDS, Detail, ReportKind, district_of, report_for, spoken_plate
from ivr.controller.bot import (
    BOT_GOODBYE,
    BOT_PROMPT,
    INTAKE_DETAIL,
    INTAKE_PHASES,
    INTAKE_READ_BACK,
    NO,
    YES,
    Bot,
    says,
)
from ivr.dialplan.check import INTAKE_LANGUAGES  # whose details the parsers read

log = logging.getLogger(__name__)

DETAIL_TRIES = 2  # a detail asked this many times without a usable answer: an agent takes over


class Intake(Bot):
    def _report(self) -> ReportKind:
        return REPORT_KINDS[self.data.bot.intake]

    def _detail(self) -> Detail:
        kind = self._report()
        return next(detail for detail in kind.details if detail.name == self.data.bot.asking)

    async def _start_intake(self, question_type: str) -> bool:
        kind = report_for(question_type)
        if kind is None or self.data.language not in INTAKE_LANGUAGES:
            return False
        bot = self.data.bot
        bot.intake, bot.details, bot.tries = kind.kind, {}, 0
        bot.receipt = await self.services.callbot.open_complaint(
            kind.kind, self.data.district, self.data.language, self.data.record_id)
        await self.services.callbot.count(f"intake:{kind.kind}")
        await self._timeline("intake", detail=f"{kind.kind} {bot.receipt}")
        log.info("call %s: taking down %s, receipt %s", self.channel_id, kind.kind, bot.receipt)
        await self._ask_next(intro=f"intake_start_{kind.kind}")
        return True

    async def _ask_next(self, intro: str = "") -> None:
        bot = self.data.bot
        detail = self._report().next_detail(bot.details)
        if detail is None:
            await self._file_complaint()
            return
        bot.asking, bot.heard_detail, bot.tries = detail.name, "", 0
        await self._bot_say([intro, detail.ask] if intro else [detail.ask], INTAKE_DETAIL)

    async def _intake_heard(self, text: str) -> None:
        bot = self.data.bot
        if bot.phase == INTAKE_READ_BACK:
            if says(text, NO):
                await self._intake_missed()
                return
            if says(text, YES):
                await self._detail_confirmed()
                return
            # Neither: perhaps the detail said again, put right.
        value = self._detail().parse(text)
        if value is None:
            await self._intake_missed()
        elif self._detail().read_back:
            bot.heard_detail = value
            await self._read_back(value)
        else:
            bot.heard_detail = value
            await self._detail_confirmed()

    async def _read_back(self, value: str) -> None:
        bot = self.data.bot
        spoken = spoken_plate(value, self.data.language) if bot.asking == "vehicle" else value
        bot.phase = INTAKE_READ_BACK
        bot.transcript.append(f"bot: heard {bot.asking} {value!r}, is that right?")
        await self._play_media(BOT_PROMPT, [await self._speak("intake_read_back",
                                                                value=spoken)])

    async def _detail_confirmed(self) -> None:
        bot = self.data.bot
        bot.details[bot.asking] = bot.heard_detail
        district = district_of(bot.heard_detail) if bot.asking == "place" else None
        await self.services.callbot.save_complaint(
            bot.receipt, details=bot.details, transcript=bot.transcript, district=district)
        await self._ask_next()

    async def _intake_missed(self) -> None:
        bot = self.data.bot
        bot.tries += 1
        bot.heard_detail = ""
        if bot.tries >= DETAIL_TRIES:
            await self._hand_off(f"no {bot.asking} for the complaint")
            return
        await self._bot_say(["intake_again", self._detail().ask], INTAKE_DETAIL)

    async def _intake_digit(self, digit: str) -> None:
        bot = self.data.bot
        if bot.phase == INTAKE_READ_BACK and digit == "1":
            await self._detail_confirmed()
        elif bot.phase == INTAKE_READ_BACK and digit == "2":
            await self._intake_missed()
        else:
            await self._listen()  # a detail is said, not keyed

    async def _file_complaint(self) -> None:
        bot, callbot = self.data.bot, self.services.callbot
        await callbot.save_complaint(bot.receipt, details=bot.details, transcript=bot.transcript,
                                     status=ComplaintStatus.FILED)
        bot.resolved = True
        bot.phase = ""
        await callbot.count("resolved")
        await callbot.count(f"filed:{bot.intake}")
        await self._timeline("intake_filed", detail=bot.receipt)
        log.info("call %s: complaint %s filed: %s", self.channel_id, bot.receipt, bot.details)
        await self._close_ears()
        receipt = " ".join(bot.receipt.replace("-", ""))
        await self._play_media(BOT_GOODBYE, [await self._speak("intake_filed", receipt=receipt),
                                             self.plan.media("bot_goodbye", self.data.language,
                                                             self.data.did)])

    async def _hand_off(self, reason: str, prompt: str = "bot_handoff") -> None:
        bot = self.data.bot
        if bot.phase in INTAKE_PHASES and bot.receipt:
            # The agent takes over the report with what was collected.
            await self.services.callbot.save_complaint(
                bot.receipt, details=bot.details, transcript=bot.transcript,
                status=ComplaintStatus.HANDED_OVER)
        await super()._hand_off(reason, prompt)

    async def _leave_queue_or_agent(self) -> None:
        """The caller hung up: a complaint halfway keeps what they gave (still incomplete)."""
        bot = self.data.bot
        if bot.receipt and not bot.resolved:
            await self.services.callbot.save_complaint(bot.receipt, details=bot.details,
                                                       transcript=bot.transcript)
        await super()._leave_queue_or_agent()
