"""Cortex's teams API, emulated: the teams (org.py) and the endpoints (api.py)."""
