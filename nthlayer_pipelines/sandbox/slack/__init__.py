"""Slack's Web API, emulated: channels and posted messages (org.py) and the methods (api.py)."""
