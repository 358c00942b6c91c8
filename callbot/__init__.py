"""The callbot's text side: the knowledge base of question types and understanding what a
caller asks (text in, question type and answer out). Audio (STT, TTS) is elsewhere."""
