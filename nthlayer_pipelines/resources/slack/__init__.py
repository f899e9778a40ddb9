"""Slack's Web API through dagster-slack, with the shared redaction (resource.py)."""
