"""Repository-wide pytest set-up: the embedded engines as session fixtures."""

pytest_plugins = ["edrs_core.engines.pytest_plugin"]
