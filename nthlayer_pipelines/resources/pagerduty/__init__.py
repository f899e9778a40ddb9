"""PagerDuty's REST API: the client (client.py), its models (models.py), the audit-records reader
(audit.py) and the Dagster resource (resource.py)."""
