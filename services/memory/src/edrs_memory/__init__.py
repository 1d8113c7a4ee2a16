"""EDRS memory service: what a persona remembers of its conversations with a user."""
