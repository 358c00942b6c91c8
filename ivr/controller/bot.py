"""A call with the callbot: it greets, listens, understands, answers from the knowledge base,
asks whether that answered the question, and either closes the call as resolved or hands the
caller to an agent queue with what it learnt (transcript, question type, confidence).

The caller's voice reaches the bot through a snoop on the caller's channel (what the caller
says, not what they hear) bridged with an externalMedia channel that sends RTP to the bot's
``Listener``. Prompts and answers play on the caller's channel as in the menus, so the caller
hears the bot while the bot hears only the caller. When the caller starts speaking while the
bot talks, the bot stops (barge-in) and listens. Digits always work: 0 is an agent, and 1 or 2
answer "did that answer your question?".

The answer comes sooner because the bot does not wait for the end of the caller's turn to
start: at the first short pause it recognizes and understands what was said so far, while the
quiet goes on. If the caller speaks again, that work is dropped; if the quiet lasts to the end
of the turn, it is the utterance's, often finished already.

A language with no recognizer gets the keypad version: the topic's questions are read out with
a digit each.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from callbot.audio import END, PAUSE, START, Listener, Utterance, VoiceEvent
from callbot.service import Heard
from callbot.understand import Match
from callbot.workers import RecognitionFailed
from ivr.ari import ChannelGone, Event, unless_gone
from ivr.controller.queueing import Queueing
from ivr.controller.state import CallState
from ivr.models import CallOutcome

log = logging.getLogger(__name__)

# Steps.
BOT_PROMPT = "bot_prompt"  # the bot speaks (greeting, question, clarification): speech stops it
BOT_ANSWER = "bot_answer"  # the bot reads an answer: speech stops it
BOT_LISTENING = "bot_listening"  # waiting for the caller to speak or press a digit
BOT_THINKING = "bot_thinking"  # recognizing and understanding what was said
BOT_HANDOFF = "bot_handoff"  # "I'll connect you to an agent", then the queue
BOT_GOODBYE = "bot_goodbye"  # resolved: goodbye, then the call ends
FRONT_DOOR_LISTENING = "front_door_listening"  # the caller speaks at a menu (front_door.py)

# Synthetic events from the bot's listener and timers.
BOT_SPEECH = "BotSpeechStarted"
BOT_PAUSE = "BotPaused"  # the caller paused: perhaps the end, perhaps not
BOT_HEARD = "BotHeard"  # the end of the caller's turn
BOT_SILENCE = "BotSilence"
VOICE_EVENTS = {START: BOT_SPEECH, PAUSE: BOT_PAUSE, END: BOT_HEARD}

# What the next thing the caller says (or presses) answers: a question; "did that answer your
# question?"; "is your question about <title>?"; the keypad version's list; a detail of a
# complaint being taken down, and "I heard <detail>, is that right?" (``intake.py``).
QUESTION, CONFIRM, CONFIRM_TYPE, KEYPAD = "question", "confirm", "confirm_type", "keypad"
INTAKE_DETAIL, INTAKE_READ_BACK = "intake_detail", "intake_read_back"
INTAKE_PHASES = (INTAKE_DETAIL, INTAKE_READ_BACK)

# What the recognizer says of an utterance it did not make out: the audio most likely held no
# speech (noise, music, a cough), or its words are too unsure to act on. Then the bot asks
# again rather than guess (Whisper is known to invent words on noise).
NO_SPEECH = 0.6
UNSURE_WORDS = 0.35
# Below this confidence nothing in the knowledge base is near: the caller is told so at once
# and an agent takes over, instead of being asked to put it another way.
NOTHING_NEAR = 0.1

LISTEN_SECONDS = 10.0  # silence after a bot prompt before it asks again
MAX_MISSES = 2  # not understood (or silent) this many times: an agent takes over
STASIS_WAITS = 20  # times 50 ms: how long the bot waits for its new channels to enter Stasis
YES = ("yes", "yeah", "yep", "thanks", "thank", "네", "예", "됐어요", "감사")
NO = ("no", "nope", "not", "아니", "아뇨")


def says(text: str, words: tuple[str, ...]) -> bool:
    """Whether ``text`` holds one of ``words``: English as whole words, Korean as word starts
    (네요, 아니요...)."""
    said = text.lower().replace(".", " ").replace(",", " ").split()
    return any(word == token or (not token.isascii() and word.startswith(token))
               for word in said for token in words)


@dataclass
class MadeOut:
    """An utterance recognized and, if its words are clear enough, understood."""

    heard: Heard
    match: Match | None = None
    understand_ms: float = 0.0


@dataclass
class EarlyStart:
    """Recognition started at a pause, for the utterance that ends if the quiet lasts."""

    utterance: Utterance
    work: asyncio.Task[MadeOut]

    def holds(self, utterance: Utterance) -> bool:
        """Whether the finished utterance is the one begun here: nothing said since."""
        return (utterance.number, utterance.voiced_frames) == (self.utterance.number,
                                                                self.utterance.voiced_frames)


def clear_words(heard: Heard) -> bool:
    return bool(heard.text.strip()) and heard.no_speech < NO_SPEECH and (
        heard.confidence >= UNSURE_WORDS)


class Bot(Queueing):
    listener: Listener | None = None
    early: EarlyStart | None = None

    async def _start_bot(self, topic: str) -> None:
        await self._join_bot(topic)
        if self.services.callbot.hears(self.data.language):
            self.data.bot.mode = "speech"
            if self.listener is None:
                await self._open_ears()
            await self._bot_say(["bot_greeting"], QUESTION)
        else:
            await self._keypad_menu()

    async def _join_bot(self, topic: str) -> None:
        """The call is the callbot's from now on, for a topic."""
        self.data.bot.topic = topic
        self.data.path.append(f"bot:{topic}")
        await self._move(CallState.WITH_BOT)
        await self.services.callbot.refresh()  # an admin's edit reaches the next bot call
        await self.services.callbot.count("calls")
        await self._timeline("bot", detail=topic)

    # --- The caller's voice: snoop -> bridge -> externalMedia -> Listener ---------------------

    async def _open_ears(self) -> None:
        channel = self.channel_id
        post = self.services.post

        def on_voice(voice: VoiceEvent) -> None:
            post(channel, {"type": VOICE_EVENTS[voice.kind], "utterance": voice.utterance})

        self.listener = await Listener.open(on_voice)
        bot, app = self.data.bot, self.services.settings.stasis_app
        bot.snoop_channel = f"snoop-{uuid.uuid4().hex}"
        bot.media_channel = f"media-{uuid.uuid4().hex}"
        for leg in (bot.snoop_channel, bot.media_channel):
            self.services.watch_leg(leg, channel)
        await self._save()
        await self.ari.request("POST", f"/channels/{channel}/snoop", params={
            "spy": "in", "app": app, "appArgs": f"snoop,{channel}",
            "snoopId": bot.snoop_channel})
        await self.ari.request("POST", "/channels/externalMedia", params={
            "app": app, "external_host": self.listener.address, "format": "slin16",
            "channelId": bot.media_channel})
        for attempt in range(STASIS_WAITS):
            try:
                bot.bridge_id = await self.services.bridge(
                    f"bot:{channel}", [bot.snoop_channel, bot.media_channel])
                break
            except ChannelGone as exc:
                # 422: the new channels are still on their way into Stasis (seen under load).
                if exc.status != 422 or attempt == STASIS_WAITS - 1:
                    raise
                await asyncio.sleep(0.05)
        await self._save()

    async def _close_ears(self) -> None:
        bot = self.data.bot
        self._drop_early()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for leg in (bot.snoop_channel, bot.media_channel):
            if leg:
                self.services.forget_leg(leg)
                with unless_gone():
                    await self.ari.hangup(leg)
        if bot.bridge_id:
            with unless_gone():
                await self.ari.destroy_bridge(bot.bridge_id)
        bot.snoop_channel = bot.media_channel = bot.bridge_id = ""

    # --- Speaking -----------------------------------------------------------------------------

    async def _bot_say(self, prompts: list[str], then: str) -> None:
        """A prompt of the bot; what the caller says next answers ``then``."""
        self.data.bot.phase = then
        self.data.bot.transcript.append(f"bot: [{' '.join(prompts)}]")
        await self._play(BOT_PROMPT, prompts)

    async def _bot_answer(self, text: str) -> None:
        # What the caller says or presses from now on answers "did that answer it?" (a new
        # question is still heard as one).
        self.data.bot.phase = CONFIRM
        self.data.bot.transcript.append(f"bot: {text}")
        started = time.perf_counter()
        media = await self.services.callbot.speak(text, self.data.language)
        if self.data.bot.stages:
            self.data.bot.stages[-1]["speak_ms"] = round((time.perf_counter() - started) * 1000,
                                                         1)
        await self._play_media(BOT_ANSWER, [media])

    async def _bot_prompt_finished(self) -> None:
        step = self.data.step
        if step == BOT_ANSWER:
            await self._bot_say(["bot_confirm"], CONFIRM)
        elif step == BOT_PROMPT:
            await self._listen()
        elif step == BOT_HANDOFF:
            await self._enqueue(self.data.bot.skill or self.data.bot.topic)
        elif step == BOT_GOODBYE:
            await self._end(CallOutcome.RESOLVED_BY_BOT)

    async def _listen(self) -> None:
        self.data.step = BOT_LISTENING
        self.data.timer_token += 1
        await self._save()
        self.services.start_timer(self.channel_id, LISTEN_SECONDS,
                                  {"type": BOT_SILENCE, "token": self.data.timer_token})

    async def _answer_started(self, event: Event) -> None:
        """The first audio of an answer: the time since the end of the caller's speech."""
        heard_at = self.data.bot.heard_at
        if self.data.step == BOT_ANSWER and heard_at and (
                event.get("playback", {}).get("id") == self.data.playback_id):
            latency = (time.monotonic() - heard_at) * 1000
            self.data.bot.latencies_ms.append(round(latency, 1))
            if self.data.bot.stages:
                self.data.bot.stages[-1]["first_audio_ms"] = round(latency, 1)
            self.data.bot.heard_at = 0.0
            await self.services.callbot.answer_latency(latency)

    # --- Listening ----------------------------------------------------------------------------

    async def _speech_started(self, event: Event) -> None:
        if self.data.step in (BOT_PROMPT, BOT_ANSWER):  # barge-in: the bot stops and listens
            await self._stop_prompt()
            await self._timeline("barge_in")
            self.data.bot.barge_ins += 1
            await self._listen()
        elif self.data.step == BOT_LISTENING:
            self.data.timer_token += 1  # the caller is speaking: no "are you there?"

    async def _make_out(self, utterance: Utterance) -> MadeOut:
        """Recognize an utterance, then understand it if its words are clear enough."""
        callbot, language = self.services.callbot, self.data.language
        made_out = MadeOut(await callbot.recognize(language, utterance))
        if clear_words(made_out.heard):
            started = time.perf_counter()
            made_out.match = await callbot.understand(made_out.heard.text, language)
            made_out.understand_ms = round((time.perf_counter() - started) * 1000, 2)
        return made_out

    async def _paused(self, event: Event) -> None:
        """The caller paused: start on what was said so far, in case that was all."""
        if self.data.step not in (BOT_LISTENING, FRONT_DOOR_LISTENING):
            return
        self._drop_early()
        if not self.services.callbot.can_start_early(self.data.language):
            return  # every worker is busy: the end of the turn is soon enough
        utterance: Utterance = event["utterance"]
        work = asyncio.create_task(self._make_out(utterance))
        # Dropped work may fail unseen (a worker crash is seen again by the next request).
        work.add_done_callback(lambda task: task.cancelled() or task.exception())
        self.early = EarlyStart(utterance, work)

    def _drop_early(self) -> None:
        if self.early is not None:
            self.early.work.cancel()
            self.early = None

    async def _think(self, utterance: Utterance) -> tuple[MadeOut, bool]:
        """An utterance that ended, made out (and whether that was begun at its pause); what
        plays stops meanwhile. RecognitionFailed if it could not be recognized."""
        early = self.early if self.early is not None and self.early.holds(utterance) else None
        if early is None:
            self._drop_early()
        self.early = None
        await self._stop_prompt()
        self.data.step = BOT_THINKING
        await self._save()  # a supervisor (and a restarted controller) sees it thinking
        if early is not None:
            return await early.work, True
        return await self._make_out(utterance), False

    async def _heard(self, event: Event) -> None:
        if self.data.step not in (BOT_LISTENING, BOT_PROMPT, BOT_ANSWER):
            return  # thinking about the last thing said, or already on the way out
        utterance: Utterance = event["utterance"]
        bot = self.data.bot
        try:
            made_out, begun_early = await self._think(utterance)
        except RecognitionFailed as exc:
            # Its worker died, say: this call goes to an agent with what was heard before;
            # the worker is replaced and no other call notices.
            log.error("call %s: recognition failed (%s)", self.channel_id, exc)
            await self._hand_off("recognizer failed")
            return
        heard, match = made_out.heard, made_out.match
        bot.heard_at = heard.ended_at
        stages = {"audio_s": round(heard.audio_seconds, 2),
                  "end_of_turn_ms": float(utterance.end_of_turn_ms),
                  "recognize_s": round(heard.recognition_seconds, 3),
                  "understand_ms": made_out.understand_ms,
                  "started_at_pause": begun_early,
                  "words_sure": heard.confidence, "no_speech": heard.no_speech}
        bot.stages.append(stages)
        log.info("call %s: bot heard %r (%.1f s of audio in %.2f s, sure %.2f, no speech "
                 "%.2f%s)", self.channel_id, heard.text, heard.audio_seconds,
                 heard.recognition_seconds, heard.confidence, heard.no_speech,
                 ", begun at a pause" if begun_early else "")
        if match is None:
            bot.transcript.append(f"caller: (not made out) {heard.text}".rstrip())
            await self._not_understood(prompt="bot_not_heard")
            return
        bot.transcript.append(f"caller: {heard.text}")
        if bot.phase in INTAKE_PHASES and not match.wants_agent:
            await self._intake_heard(heard.text)
            return
        if bot.phase in (CONFIRM, CONFIRM_TYPE) and await self._confirmed(heard.text):
            return
        await self._act_on(match)

    async def _act_on(self, match: Match) -> None:
        """What the bot does with a question understood: answer it, ask to confirm, take down
        a report, ask again, or hand over."""
        bot, callbot = self.data.bot, self.services.callbot
        if match.topic:
            bot.skill = match.skill or match.topic
        if match.wants_agent:
            # To the queue of the question asked before, or of the menu option chosen.
            await self._hand_off("asked for an agent")
        elif match.question_type is not None and match.answer:
            await self._answer_entry(match.question_type, match.confidence)
        elif match.confirm is not None:
            bot.pending = match.confirm.question_type
            bot.confidence = round(match.confidence, 3)
            await self._timeline("bot_confirm", detail=f"{match.confirm.question_type} "
                                                       f"{match.confidence:.2f}")
            title = callbot.by_id[match.confirm.question_type].title_in(self.data.language)
            bot.phase = CONFIRM_TYPE
            bot.transcript.append(f"bot: is it about {title}?")
            await self._play_media(BOT_PROMPT, [await self._speak("bot_confirm_question",
                                                                  title=title)])
        elif match.confidence < NOTHING_NEAR or bot.misses + 1 >= MAX_MISSES:
            await self._outside_knowledge()
        else:
            await self._not_understood()

    async def _answer_entry(self, question_type: str, confidence: float) -> None:
        """Read the answer of a question type (understood, confirmed or chosen by digit)."""
        bot, callbot = self.data.bot, self.services.callbot
        entry = callbot.by_id.get(question_type)
        if entry is None:  # deleted by an admin a moment ago
            await self._not_understood()
            return
        bot.question_type, bot.confidence = entry.id, round(confidence, 3)
        bot.skill = entry.skill or bot.topic
        bot.pending = ""
        if bot.mode == "speech" and await self._start_intake(entry.id):
            return  # a report the bot takes down itself, rather than explain how to make it
        await self._timeline("bot_answer", detail=f"{entry.id} {confidence:.2f}")
        await self._bot_answer(entry.answer_in(self.data.language))

    # --- Complaint intake (``intake.py``) -----------------------------------------------------

    async def _start_intake(self, question_type: str) -> bool:
        """Begin taking down the report this question type opens; False if it opens none."""
        raise NotImplementedError

    async def _intake_heard(self, text: str) -> None:
        """What the caller said to a detail's question, or to its read-back."""
        raise NotImplementedError

    async def _intake_missed(self) -> None:
        """Nothing usable said to a detail's question (or silence): ask again, or hand over."""
        raise NotImplementedError

    async def _intake_digit(self, digit: str) -> None:
        """A digit during the intake: 1 or 2 answer a read-back."""
        raise NotImplementedError

    async def _outside_knowledge(self) -> None:
        """Not a question the knowledge base answers: the caller is told so, and an agent of
        the topic (or of the menu option) takes over with the transcript."""
        await self._hand_off("not in the knowledge base", prompt="bot_unknown")

    async def _not_understood(self, prompt: str = "bot_clarify") -> None:
        """Not understood, or nothing said: ask once more, then hand over."""
        bot = self.data.bot
        if bot.phase in INTAKE_PHASES:
            await self._intake_missed()  # counted per detail
            return
        bot.misses += 1
        if bot.misses >= MAX_MISSES:
            await self._hand_off("not understood")
        elif bot.phase == KEYPAD:
            await self._keypad_menu()
        elif bot.phase == CONFIRM:
            await self._bot_say(["bot_confirm"], CONFIRM)
        else:
            await self._bot_say([prompt], QUESTION)

    async def _confirmed(self, text: str) -> bool:
        """Yes or no to "did that answer your question?" or to "is it about <title>?";
        False if it was neither (then it is heard as a question)."""
        if says(text, NO):
            await self._said_no()
        elif says(text, YES):
            await self._said_yes()
        else:
            return False
        return True

    async def _said_yes(self) -> None:
        bot = self.data.bot
        if bot.phase == CONFIRM_TYPE:
            await self._answer_entry(bot.pending, bot.confidence)
        else:
            await self._resolved()

    async def _said_no(self) -> None:
        bot = self.data.bot
        if bot.phase == CONFIRM_TYPE:
            # Not that question: once more in other words, then an agent.
            bot.pending = ""
            await self._timeline("bot_confirm_no")
            await self._not_understood()
        else:
            await self._hand_off("answer not enough")

    async def _bot_silence(self, event: Event) -> None:
        if self.data.step == BOT_LISTENING and event.get("token") == self.data.timer_token:
            await self._not_understood()

    async def _bot_digit(self, event: Event) -> None:
        digit = str(event.get("digit", ""))
        bot = self.data.bot
        if self.data.step in (BOT_THINKING, BOT_HANDOFF, BOT_GOODBYE) or not digit:
            return
        await self._stop_prompt()
        bot.transcript.append(f"caller pressed {digit}")
        if digit == "0":
            await self._hand_off("pressed 0")
        elif bot.phase in INTAKE_PHASES:
            await self._intake_digit(digit)
        elif bot.phase in (CONFIRM, CONFIRM_TYPE) and digit in "12":
            await (self._said_yes() if digit == "1" else self._said_no())
        elif bot.phase == KEYPAD and digit.isdigit() and 0 < int(digit) <= len(bot.choices):
            if bot.choices[int(digit) - 1] not in self.services.callbot.by_id:
                await self._keypad_menu()  # deleted by an admin while the list was read
                return
            await self._answer_entry(bot.choices[int(digit) - 1], 1.0)
        elif bot.phase == KEYPAD:
            await self._keypad_menu()
        else:
            await self._listen()

    # --- The keypad version -------------------------------------------------------------------

    async def _keypad_menu(self) -> None:
        """No recognizer for this language: the topic's questions, each with a digit."""
        bot, callbot = self.data.bot, self.services.callbot
        bot.mode = "keypad"
        entries = callbot.entries_of(bot.topic, limit=5)
        bot.choices = [entry.id for entry in entries]
        language = self.data.language
        questions = [(entry.phrasings.get(language) or entry.phrasings.get("en") or [entry.id])[0]
                     for entry in entries]
        choices = await asyncio.gather(*(
            self._speak("bot_keypad_choice", question=question, digit=digit)
            for digit, question in enumerate(questions, start=1)))  # rendered side by side
        media = [self.plan.media("bot_keypad", language, self.data.did), *choices]
        bot.phase = KEYPAD
        await self._play_media(BOT_PROMPT, media)

    # --- The end of the bot's part ------------------------------------------------------------

    async def _resolved(self) -> None:
        bot = self.data.bot
        bot.resolved = True
        await self.services.callbot.count("resolved")
        await self._timeline("bot_resolved", detail=bot.question_type)
        await self._close_ears()
        await self._play(BOT_GOODBYE, ["bot_goodbye"])

    async def _hand_off(self, reason: str, prompt: str = "bot_handoff") -> None:
        bot = self.data.bot
        bot.handoff = reason
        await self.services.callbot.count("handed_off")
        await self.services.callbot.count(f"handed_off:{reason}")
        await self._timeline("bot_handoff", detail=reason)
        await self._close_ears()
        log.info("call %s: bot hands over (%s) to %s", self.channel_id, reason,
                 bot.skill or bot.topic)
        await self._play(BOT_HANDOFF, [prompt])

    async def _leave_queue_or_agent(self) -> None:
        """The caller hung up: the bot's ears go with them."""
        await self._close_ears()
        await super()._leave_queue_or_agent()

    async def _bot_interrupted(self) -> None:
        """After a controller restart the bot's ears are gone: an agent takes the call."""
        self.data.bot.handoff = "bot interrupted"
        await self._close_ears()
        await self._enqueue(self.data.bot.skill or self.data.bot.topic)
