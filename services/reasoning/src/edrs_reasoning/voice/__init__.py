"""Speech: transcription (speech-to-text) and synthesis (text-to-speech), local or OpenAI-compatible."""
