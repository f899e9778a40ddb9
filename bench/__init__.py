"""Benchmarks of a PagerDuty snapshot against the sandbox: `python -m bench` (or `make bench`).

Each account size is served by `nthlayer sandbox --generate-teams N` in its own process, restarted for every
scenario so each starts on a fresh rate-limit window. PagerDuty's 250 ms a request and 960 requests a minute
are both scaled by one factor F (latency / F, limit x F): times shrink by F, request counts do not, and the
concurrency a client needs to reach the limit (limit x latency) stays the real service's. The nthlayer client
keeps its real burst of 16 requests for the same reason.

Scenarios, each measured in a process of its own:

  a  nthlayer's snapshot: users, teams, every team's members, through the assets' own read functions
  b  incremental refresh after 10 changes (a slot: not measured yet)
  c  the official `pagerduty` client walking users, teams and each team's members one call at a time
  d  terraform-provider-pagerduty's pattern: every `pagerduty_team_membership` reads its team's whole member
     list, 10 at a time (terraform's default parallelism); a capped sample, extrapolated

plus the `divergences` computation over 100,000 desired and observed memberships.
"""
