"""The callbot: audio in, events out.

The call flow (``ivr.controller.bot``) opens a ``Listener`` (``callbot.audio``) on the
caller's voice and gets its events: speech started (barge-in), a pause (recognition may begin
on what was said so far) and an utterance ended. It hands each utterance to
``Callbot.recognize`` (``callbot.service``: the heard text, with how sure the
recognizer is), then to ``Callbot.understand`` (the question type, its calibrated confidence,
the answer or the question to confirm, a request for a person), and reads answers rendered by
``Callbot.speak``. Reports the bot takes down are ``callbot.intake`` (what each needs and how
its details are read) and ``callbot.complaints`` (their records). It knows nothing of
recognizers or the knowledge base: those are ``callbot.recognizers`` (engines in worker
processes, ``callbot.workers``), ``callbot.knowledge`` and ``callbot.understand``, one setting
each.
"""
