"""Durable execution on Temporal: the run interpreter and approval workflows, their activities,
the step executors and the worker the task service hosts (docs/tasks.md)."""
