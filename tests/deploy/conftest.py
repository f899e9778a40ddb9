"""Fixtures of the deployment tests: a fresh PostgreSQL database per session (see tests/postgres.py)."""

from tests.postgres import postgres_url  # noqa: F401 (a fixture)
