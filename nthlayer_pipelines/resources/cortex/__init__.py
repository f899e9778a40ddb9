"""Cortex's teams API: the client and its models (client.py) and the Dagster resource (resource.py)."""
