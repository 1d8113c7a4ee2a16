"""Chat model backends behind one interface: local llama.cpp, or an OpenAI-compatible server."""

from edrs_reasoning.backends.base import ChatBackend, GenerationOptions, Message, Usage

__all__ = ["ChatBackend", "GenerationOptions", "Message", "Usage"]
