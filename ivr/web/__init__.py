"""The web pages for admins, agents and supervisors: static files served by the API."""

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
