"""PagerDuty's resource kinds: team membership (`teams/`) and services held to their tier's standard
(`services/`)."""
