"""EDRS persona service: the digital co-workers a client talks to."""
