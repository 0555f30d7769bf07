"""The HTTP API organizations, operators and the dashboard talk to (FastAPI)."""
