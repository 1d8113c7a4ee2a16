"""EDRS reasoning service: model calls, reasoning strategies and the traces they leave."""
