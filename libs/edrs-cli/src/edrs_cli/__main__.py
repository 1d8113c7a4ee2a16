"""``python -m edrs_cli`` runs the ``edrs`` command."""

from edrs_cli.main import app

app()
