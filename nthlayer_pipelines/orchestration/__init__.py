"""One approval and apply path for every kind: the jobs (jobs.py), the sensors that gate the apply and
announce failures (sensors.py), the schedules (schedules.py), and what Slack is told (notifications.py,
run_failures.py)."""
