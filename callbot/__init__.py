"""The callbot (a later capability): audio in and out of a call, STT, TTS, dialogue."""
