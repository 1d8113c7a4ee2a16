"""EDRS task service: units of work, assigned to personas."""
