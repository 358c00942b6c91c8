"""The HTTP API (FastAPI): health, metrics, authentication and the call records."""
