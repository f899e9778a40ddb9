"""The HTTP layer every client shares: send, retry, map errors and redact secrets (client.py), and the
token bucket that paces each API key (ratelimit.py)."""
