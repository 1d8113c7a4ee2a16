"""The gateway's public REST API (`/api/v1/...`), built with FastAPI."""
