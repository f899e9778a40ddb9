"""The deployment's settings: every environment variable the code location and the commands read, one field
each with its name, kind, default and meaning, read and checked in one place.

`DeploymentSettings.from_env` reads them all at once, so the code location refuses a bad value when it loads
(and every command before it starts), in one line naming the variable and what it must be. The README's
table of variables is rendered from these fields (`python -m nthlayer_pipelines.resources.settings`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Annotated, Any

import dagster as dg
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from nthlayer_pipelines.core.policy import parse_pre_approved
from nthlayer_pipelines.desired.merge import parse_precedence
from nthlayer_pipelines.resources.cortex.resource import CortexResource
from nthlayer_pipelines.resources.pagerduty.client import DEFAULT_API_URL
from nthlayer_pipelines.resources.pagerduty.resource import PagerDutyResource
from nthlayer_pipelines.resources.settings.approvers import APPROVERS_ENV_VAR, Approvers
from nthlayer_pipelines.resources.settings.kinds import (
    ROLES,
    Choice,
    Flag,
    Kind,
    Parsed,
    Positive,
    RoleMap,
    Schedule,
    Secret,
    SettingsError,
    Share,
    Text,
    Whole,
)
from nthlayer_pipelines.resources.settings.reconcile import DEFAULT_DEFINITIONS, ReconcileSettings
from nthlayer_pipelines.resources.slack.resource import SLACK_PUBLIC_API

DEFAULT_REFRESH_CRON = "0 * * * *"
DEFAULT_AUDIT_CRON = "30 2 * * *"
DEFAULT_SENSOR_INTERVAL_SECONDS = 30
# The default (a file per output under DAGSTER_HOME) is Dagster's own; "ledger" is the ledger's database.
IO_MANAGER_CHOICES = ("filesystem", "ledger")


def _default(resource: type[dg.ConfigurableResource], name: str) -> Any:
    """A resource field's own default: the setting's, so the two never disagree."""
    return resource.model_fields[name].get_default(call_default_factory=True)


def setting(env: str, default: Any, meaning: str, *, shown_default: str | None = None) -> Any:
    """A field read from the variable `env`. `meaning` is the README's; `shown_default` is what the README
    says for the default when the value alone would not say it (`required`, `off`)."""
    extra = {} if shown_default is None else {"shown_default": shown_default}
    return Field(default=default, validation_alias=env, description=meaning, json_schema_extra=extra)


def kind_of(field: FieldInfo) -> Kind:
    return next(item for item in field.metadata if isinstance(item, Kind))


def variable_of(field: FieldInfo) -> str:
    """The environment variable a field is read from."""
    assert isinstance(field.validation_alias, str)
    return field.validation_alias


def read_setting(field: FieldInfo, raw: str) -> Any:
    """The variable's text as its field's kind reads it: blank is the default where blank is unset."""
    kind, text = kind_of(field), raw.strip()
    default = field.get_default(call_default_factory=True)
    if not text and kind.blank_is_unset:
        return default
    return kind.read(variable_of(field), text, default)


class _Environment(EnvSettingsSource):
    """The variables of one mapping (os.environ, or a test's own), each handed to its field as text: every
    kind reads its own format, none is decoded as JSON."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._environ)

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        return value


class DeploymentSettings(BaseSettings):
    """Every environment variable of the deployment. Secrets are SecretStr; the resources bind them (and
    the URLs) as `dg.EnvVar`s, read again in the run's process (`bound`)."""

    model_config = SettingsConfigDict(
        case_sensitive=True, populate_by_name=True, validate_default=False, extra="ignore", frozen=True
    )

    # PagerDuty ------------------------------------------------------------------------------------------
    pagerduty_api_url: Annotated[str, Text()] = setting(
        "PAGERDUTY_API_URL",
        DEFAULT_API_URL,
        "PagerDuty REST API base URL (EU: `https://api.eu.pagerduty.com`)",
    )
    pagerduty_api_token: Annotated[SecretStr | None, Secret()] = setting(
        "PAGERDUTY_API_TOKEN",
        None,
        "a REST API key (read-only is enough for planning; applying needs write)",
        shown_default="required",
    )
    pagerduty_timeout_seconds: Annotated[float, Positive()] = setting(
        "NTHLAYER_PAGERDUTY_TIMEOUT_SECONDS",
        _default(PagerDutyResource, "timeout_seconds"),
        "the PagerDuty client's timeout for one request",
    )
    pagerduty_max_attempts: Annotated[int, Whole(minimum=1)] = setting(
        "NTHLAYER_PAGERDUTY_MAX_ATTEMPTS",
        _default(PagerDutyResource, "max_attempts"),
        "attempts per PagerDuty request, the first included",
    )
    pagerduty_from_email: Annotated[str, Text()] = setting(
        "NTHLAYER_PAGERDUTY_FROM_EMAIL",
        _default(PagerDutyResource, "from_email"),
        "sent as `From` on PagerDuty writes, for its change tracking",
    )
    pagerduty_max_concurrency: Annotated[int, Whole(minimum=1)] = setting(
        "NTHLAYER_PAGERDUTY_MAX_CONCURRENCY",
        _default(PagerDutyResource, "max_concurrency"),
        "PagerDuty requests in flight at once, reads and applies ([A full snapshot](#a-full-snapshot))",
    )
    pagerduty_rate_limit: Annotated[int, Whole(minimum=1)] = setting(
        "NTHLAYER_PAGERDUTY_RATE_LIMIT",
        _default(PagerDutyResource, "rate_limit"),
        "PagerDuty requests a window per API key, for the whole process",
    )
    pagerduty_rate_window_seconds: Annotated[float, Positive()] = setting(
        "NTHLAYER_PAGERDUTY_RATE_WINDOW_SECONDS",
        _default(PagerDutyResource, "rate_window_seconds"),
        "the rate limit's window",
    )
    pagerduty_rate_burst: Annotated[int, Whole(minimum=0)] = setting(
        "NTHLAYER_PAGERDUTY_RATE_BURST",
        _default(PagerDutyResource, "rate_burst"),
        "PagerDuty requests sent unpaced after a pause; 0 is one second's worth (16 at 960 a minute)",
    )
    full_refresh_every_hours: Annotated[float, Positive()] = setting(
        "NTHLAYER_FULL_REFRESH_EVERY_HOURS",
        _default(PagerDutyResource, "full_refresh_every_hours"),
        "a full PagerDuty read at least this often; between, refreshes read the audit records",
    )
    max_cursor_age_hours: Annotated[float, Positive()] = setting(
        "NTHLAYER_MAX_CURSOR_AGE_HOURS",
        _default(PagerDutyResource, "max_cursor_age_hours"),
        "the most audit history an incremental refresh replays; an older cursor reads everything",
    )

    # Cortex ---------------------------------------------------------------------------------------------
    cortex_api_url: Annotated[str, Text()] = setting(
        "CORTEX_API_URL",
        "",
        "Cortex API base URL, e.g. `https://api.getcortexapp.com`; unset: Cortex is off",
        shown_default="off",
    )
    cortex_api_token: Annotated[SecretStr | None, Secret()] = setting(
        "CORTEX_API_TOKEN", None, "Cortex API token (Bearer)", shown_default=""
    )
    cortex_role_map: Annotated[dict[str, str], RoleMap()] = setting(
        "NTHLAYER_CORTEX_ROLE_MAP",
        _default(CortexResource, "role_map"),
        f"Cortex role tags and the PagerDuty roles they give, `tag=role` comma-separated; roles: "
        f"{', '.join(f'`{role}`' for role in ROLES)}",
    )
    cortex_default_role: Annotated[str, Choice(ROLES)] = setting(
        "NTHLAYER_CORTEX_DEFAULT_ROLE",
        _default(CortexResource, "default_role"),
        "the PagerDuty role of a Cortex member with no mapped tag",
    )
    cortex_prune: Annotated[bool, Flag()] = setting(
        "NTHLAYER_CORTEX_PRUNE",
        _default(CortexResource, "prune"),
        "remove PagerDuty members a Cortex team does not list (`true` or `false`)",
    )
    cortex_timeout_seconds: Annotated[float, Positive()] = setting(
        "NTHLAYER_CORTEX_TIMEOUT_SECONDS",
        _default(CortexResource, "timeout_seconds"),
        "the Cortex client's timeout for one request",
    )
    cortex_max_attempts: Annotated[int, Whole(minimum=1)] = setting(
        "NTHLAYER_CORTEX_MAX_ATTEMPTS",
        _default(CortexResource, "max_attempts"),
        "attempts per Cortex request, the first included",
    )

    # Slack ----------------------------------------------------------------------------------------------
    slack_api_url: Annotated[str, Text()] = setting(
        "SLACK_API_URL", SLACK_PUBLIC_API, "Slack Web API base URL, ending in `/api/`"
    )
    slack_bot_token: Annotated[SecretStr | None, Secret()] = setting(
        "SLACK_BOT_TOKEN", None, "Slack bot token, for announcements; unset: Slack is off", shown_default=""
    )
    slack_channel: Annotated[str, Text()] = setting(
        "NTHLAYER_SLACK_CHANNEL",
        "",
        "where apply summaries and failed runs (refresh, nightly audit, apply) go; unset: Slack is off",
    )
    dagster_url: Annotated[str, Text()] = setting(
        "NTHLAYER_DAGSTER_URL",
        "http://127.0.0.1:3000",
        "the Dagster UI's address, for links in Slack",
        shown_default="`http://127.0.0.1:3000`; the demo's `--port` in the demo",
    )

    # Desired state --------------------------------------------------------------------------------------
    definitions: Annotated[str, Text(blank_is_unset=False)] = setting(
        "NTHLAYER_DEFINITIONS", DEFAULT_DEFINITIONS, "the definitions folder; empty: the Git source is off"
    )
    source_precedence: Annotated[str, Parsed(parse_precedence, keep_text=True)] = setting(
        "NTHLAYER_SOURCE_PRECEDENCE",
        _default(ReconcileSettings, "source_precedence"),
        "which source wins a team declared twice",
    )

    # Storage --------------------------------------------------------------------------------------------
    ledger_url: Annotated[SecretStr | None, Secret()] = setting(
        "NTHLAYER_LEDGER_URL",
        None,
        "SQLAlchemy URL of the plan ledger",
        shown_default="SQLite file under `DAGSTER_HOME`",
    )
    io_manager: Annotated[str, Choice(IO_MANAGER_CHOICES)] = setting(
        "NTHLAYER_IO_MANAGER",
        "filesystem",
        "where assets' outputs live between runs: `ledger` (the ledger's database, for runs in pods of their "
        "own: [Kubernetes](#kubernetes-with-dagsters-helm-chart)) or `filesystem`",
        shown_default="`filesystem` (Dagster's, under `DAGSTER_HOME`)",
    )

    # Schedules and sensors ------------------------------------------------------------------------------
    refresh_cron: Annotated[str, Schedule("cron")] = setting(
        "NTHLAYER_REFRESH_CRON",
        DEFAULT_REFRESH_CRON,
        "the refresh's schedule",
        shown_default=f"hourly (`{DEFAULT_REFRESH_CRON}`)",
    )
    audit_cron: Annotated[str, Schedule("cron")] = setting(
        "NTHLAYER_AUDIT_CRON", DEFAULT_AUDIT_CRON, "the nightly audit's schedule"
    )
    timezone: Annotated[str, Schedule("timezone")] = setting(
        "NTHLAYER_TIMEZONE", "UTC", "the schedules' timezone"
    )
    sensor_interval_seconds: Annotated[int, Whole(minimum=1)] = setting(
        "NTHLAYER_SENSOR_INTERVAL_SECONDS",
        DEFAULT_SENSOR_INTERVAL_SECONDS,
        "how often the approval sensor, and the one that refreshes after an apply, look",
    )

    # The plan's checks and the pre-approval policy ------------------------------------------------------
    max_unresolved_users: Annotated[int, Whole(minimum=0)] = setting(
        "NTHLAYER_MAX_UNRESOLVED_USERS",
        _default(ReconcileSettings, "max_unresolved_users"),
        "the unresolved-users check's threshold",
    )
    pre_approved_kinds: Annotated[str, Parsed(parse_pre_approved, keep_text=True)] = setting(
        "NTHLAYER_PRE_APPROVED_KINDS",
        _default(ReconcileSettings, "pre_approved_kinds"),
        'change kinds approved by policy (`""`: none)',
    )
    max_pre_approved_changes: Annotated[int, Whole(minimum=0)] = setting(
        "NTHLAYER_MAX_PRE_APPROVED_CHANGES",
        _default(ReconcileSettings, "max_pre_approved_changes"),
        "a plan with more pre-approvable changes is approved by a person, none of it by the policy "
        "(why 50: [Blast radius](#blast-radius))",
    )
    max_team_removal_share: Annotated[float, Share()] = setting(
        "NTHLAYER_MAX_TEAM_REMOVAL_SHARE",
        _default(ReconcileSettings, "max_team_removal_share"),
        "blast radius: a plan removing more than this share of a team's members is blocked",
    )
    min_team_removals: Annotated[int, Whole(minimum=1)] = setting(
        "NTHLAYER_MIN_TEAM_REMOVALS",
        _default(ReconcileSettings, "min_team_removals"),
        "blast radius: a team's share counts only from this many removals",
    )
    max_total_removals: Annotated[int, Whole(minimum=0)] = setting(
        "NTHLAYER_MAX_TOTAL_REMOVALS",
        _default(ReconcileSettings, "max_total_removals"),
        "blast radius: a plan with more removals in all is blocked",
    )
    max_services_repointed: Annotated[int, Whole(minimum=0)] = setting(
        "NTHLAYER_MAX_SERVICES_REPOINTED",
        _default(ReconcileSettings, "max_services_repointed"),
        "blast radius: a plan pointing more services at another escalation policy is blocked",
    )
    approvers: Annotated[Approvers, Parsed(Approvers.from_text)] = setting(
        APPROVERS_ENV_VAR,
        Approvers(),
        "who may approve, reject or retry a plan: names or emails, comma-separated "
        '(`""`: nobody, only the policy)',
        shown_default="unset: anyone, with a warning",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _read(cls, value: Any, info: ValidationInfo) -> Any:
        """A variable's text read by its kind; a value given as such (a test's `max_total_removals=3`)
        is taken as it is."""
        if not isinstance(value, str) or info.field_name is None:
            return value
        return read_setting(cls.model_fields[info.field_name], value)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, *_others: Any, **_named: Any
    ) -> tuple[Any, ...]:
        """`DeploymentSettings()` reads os.environ as `from_env` reads a mapping: no .env file, no JSON."""
        return init_settings, _Environment(settings_cls, os.environ)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DeploymentSettings:
        """Every setting, read from `environ` and checked now; `SettingsError` (one line) for the first one
        that is malformed, in the order above."""
        try:
            return cls(_build_sources=((_Environment(cls, environ),), {}))
        except ValidationError as error:
            raise SettingsError(_one_line(error)) from None

    @classmethod
    def read_one(cls, name: str, environ: Mapping[str, str] = os.environ) -> Any:
        """One setting alone, read and checked as `from_env` reads it (others are not looked at)."""
        field = cls.model_fields[name]
        raw = environ.get(variable_of(field))
        return field.get_default(call_default_factory=True) if raw is None else read_setting(field, raw)

    @classmethod
    def env_name(cls, name: str) -> str:
        return variable_of(cls.model_fields[name])

    def require(self, name: str, why: str) -> Any:
        """A setting that must be set here; `why` completes "NAME is not set: ...". A secret is revealed."""
        value = getattr(self, name)
        if value is None:
            raise SettingsError(f"{self.env_name(name)} is not set: {why}")
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def bound(self, name: str) -> Any:
        """For a resource's field: the variable as a `dg.EnvVar` when it holds other than the default (read
        in the run's process, so a secret never enters run config or the event log), else the default
        ("" for an unset secret)."""
        default = type(self).model_fields[name].get_default(call_default_factory=True)
        if getattr(self, name) == default:
            return "" if default is None else default
        return dg.EnvVar(self.env_name(name))

    def reconcile(self) -> ReconcileSettings:
        """The reconcile settings' resource: each of its fields is the setting of the same name (`teams`,
        a run's own, is left to the launchpad)."""
        fields = type(self).model_fields
        return ReconcileSettings(
            **{name: getattr(self, name) for name in ReconcileSettings.model_fields if name in fields}
        )


def _one_line(error: ValidationError) -> str:
    """The first problem as one line: the kind's own SettingsError, else pydantic's words on the value."""
    first = error.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return str(cause)
    return f"{first['loc'][0]}={first['input']!r}: {first['msg']}"


def misspelt(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """Variables set that no setting reads but that are a slip away from one: (set, meant), e.g.
    (NTHLAYER_APPROVER, NTHLAYER_APPROVERS). Only NTHLAYER_ names, the project's own, and only near misses:
    another program's variables are not ours to judge."""
    known = [variable_of(field) for field in DeploymentSettings.model_fields.values()]
    found = []
    for name in sorted(environ):
        if name in known or not name.upper().startswith("NTHLAYER_"):
            continue
        meant = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
        if meant:
            found.append((name, meant[0]))
    return found
