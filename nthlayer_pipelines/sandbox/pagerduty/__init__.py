"""PagerDuty REST API v2, emulated: the account's state (org.py), its audit trail (audit.py), its error
answers (errors.py) and its endpoints (api.py)."""
