"""Services and escalation policies held to their tier's standard: each declared service pages through
its team's managed escalation policy for its tier, with the tier's urgency and timeouts."""
