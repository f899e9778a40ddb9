"""What every resource kind shares, pure: no Dagster, no I/O, no provider's client."""
