"""Team membership: teams and who is on them, with which role."""
