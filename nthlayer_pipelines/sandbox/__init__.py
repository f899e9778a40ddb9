"""Emulators of the providers' HTTP APIs (PagerDuty, Cortex, Slack) on one loopback port.

Each provider lives under its own prefix and speaks its own paths, shapes, auth, errors, pagination and
rate limits: `/pagerduty` (REST API v2: users, teams and members, services, escalation policies,
schedules, audit records), `/cortex` (teams API), `/slack/api` (Web API). `/_admin` serves the request
log, a dump of the org, the fault plan and a health check.

Layout: one folder per provider (pagerduty/, cortex/, slack/), each with its state (org.py), its
endpoints (api.py) and its part of a seed file (seed.py); what they share stays here (core.py, faults.py,
injection.py, admin.py, app.py, server.py, org.py, seed.py, generate.py).

The sandbox imports nothing from the rest of the package on purpose: an emulator that shares the
client's models shares its misunderstandings (tests/sandbox/test_sandbox_imports.py holds it to that).

A seed file::

    pagerduty:
      subdomain: acme          # optional: the account's, in every html_url (https://acme.pagerduty.com/...)
      users: [{name: Alice Example, email: alice@example.com, role: user}]          # id optional
      teams: [{name: Payments, description: "...", members: [{email: alice@example.com, role: manager}]}]
      schedules: [{name: Payments Primary, time_zone: Europe/London, teams: [Payments],
                   users: [alice@example.com]}]   # or layers: [{name, users, start, ...}]
      escalation_policies:
        - {name: Payments On-Call, teams: [Payments], targets: [alice@example.com]}   # one rule
        - name: Payments Escalation
          teams: [Payments]
          num_loops: 2
          rules: [{escalation_delay_in_minutes: 10, targets: [{schedule: Payments Primary}]}]
      services: [{name: Payment API, escalation_policy: Payments Escalation, tier: critical,
                  urgency: high, acknowledgement_timeout: 600, auto_resolve_timeout: null}]
    cortex:
      teams: [{tag: data, name: Data Platform, description: "", archived: false,
               members: [{email: grace@example.com, name: Grace, roles: [oncall-manager]}]}]
    slack:
      channels: [ops-changes]

A service's `tier` is the sandbox's: kept for tests, never served (PagerDuty has no such field).

Without `subdomain`, every org built from a seed or generated is a new account with a subdomain of its
own (`sandbox-` and a random token): a sandbox started afresh is not the account an earlier start served,
as a client that kept a snapshot of that one must be able to tell.

Tokens: each provider accepts exactly the token in the pipeline's own variable (PAGERDUTY_API_TOKEN,
CORTEX_API_TOKEN, SLACK_BOT_TOKEN), else `DEFAULT_PAGERDUTY_TOKEN`, `DEFAULT_CORTEX_TOKEN`,
`DEFAULT_SLACK_TOKEN`.
"""

from nthlayer_pipelines.sandbox.app import create_app, sandbox_state
from nthlayer_pipelines.sandbox.core import (
    DEFAULT_CORTEX_TOKEN,
    DEFAULT_PAGERDUTY_TOKEN,
    DEFAULT_SLACK_TOKEN,
    TOKEN_ENV_VARS,
    HookRegistry,
    RequestContext,
    SandboxSettings,
    tokens_from_env,
)
from nthlayer_pipelines.sandbox.generate import generate_org
from nthlayer_pipelines.sandbox.org import SandboxOrg
from nthlayer_pipelines.sandbox.seed import SeedError, load_seed, org_from_seed
from nthlayer_pipelines.sandbox.server import RunningSandbox, run_cli, running_sandbox, serve

__all__ = [
    "DEFAULT_CORTEX_TOKEN",
    "DEFAULT_PAGERDUTY_TOKEN",
    "DEFAULT_SLACK_TOKEN",
    "TOKEN_ENV_VARS",
    "HookRegistry",
    "RequestContext",
    "RunningSandbox",
    "SandboxOrg",
    "SandboxSettings",
    "SeedError",
    "create_app",
    "generate_org",
    "load_seed",
    "org_from_seed",
    "run_cli",
    "running_sandbox",
    "sandbox_state",
    "serve",
    "tokens_from_env",
]
