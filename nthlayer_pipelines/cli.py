"""`nthlayer`: validate definitions, print the plan, approve it, check the deployment, run the sandbox and
the demo."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
import sqlalchemy as sa

from nthlayer_pipelines.core.model import TEAM_MEMBERSHIP, DefinitionsError, SourceError
from nthlayer_pipelines.resources.ledger import (
    AFTER_REJECTION,
    DEFAULT_PROVIDER,
    Approval,
    BlastRadiusRefused,
    Ledger,
    LedgerError,
    LedgerOutdatedError,
    default_ledger_url,
    display_url,
    upgrade_ledger,
)
from nthlayer_pipelines.resources.settings import (
    ApproverRefused,
    Approvers,
    DeploymentSettings,
    SettingsError,
)

if TYPE_CHECKING:
    from nthlayer_pipelines.inprocess import PlanFailed

# `nthlayer plan`'s statuses (documented in the README): 3 is a plan made but over the blast radius, which
# only an approval that allows it applies.
EXIT_OK, EXIT_ERROR, EXIT_DRIFT, EXIT_BLAST_RADIUS = 0, 1, 2, 3
CLI_OVERRIDE = "`--allow-blast-radius`"  # the override as `nthlayer approve` spells it


class _Commands(click.Group):
    """A deployment setting that is missing or malformed is one line and exit 1, whichever command meets it
    (the code location's import included), never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operations as code, reconciled by Dagster."""


@main.command()
@click.argument("path", type=click.Path())
def validate(path: str) -> None:
    """Check a definitions folder; print every problem, exit 1 if there is any."""
    from nthlayer_pipelines.desired.git import validate_definitions

    problems = validate_definitions(path)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) found in {path}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"{path}: valid")


@main.command()
@click.option(
    "--definitions", "definitions_path", type=click.Path(), help="Definitions folder (NTHLAYER_DEFINITIONS)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (a stable contract).")
def plan(definitions_path: str | None, as_json: bool) -> None:
    """Compute the plan read-only. Exit 0: no drift, 2: drift, 3: over the blast radius, 1: error."""
    from nthlayer_pipelines.core.plan import plan_to_json_text, render_plan_text
    from nthlayer_pipelines.inprocess import PlanFailed, plan_in_process

    environ = dict(os.environ)
    if definitions_path is not None:
        environ["NTHLAYER_DEFINITIONS"] = definitions_path
    try:
        result = plan_in_process(environ)
    except PlanFailed as error:
        sys.exit(_report_failed_plan(error, as_json))
    except (DefinitionsError, SourceError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(plan_to_json_text(result) if as_json else render_plan_text(result))
    sys.exit(EXIT_DRIFT if result.has_drift else EXIT_OK)


def _report_failed_plan(error: PlanFailed, as_json: bool) -> int:
    """The plan when it was made (stdout: a reader still needs it; its JSON carries the failed checks and
    their reasons), then the verdict (stderr); the exit status."""
    from nthlayer_pipelines.assets.pagerduty.plan_checks import BLAST_RADIUS_CHECK
    from nthlayer_pipelines.core.plan import plan_to_json_text, render_plan_text

    made = error.plan
    if made is None:
        click.echo(f"error: {error}", err=True)
        return EXIT_ERROR
    blocked = {
        "checks": [check.name for check in error.checks],
        "reasons": [reason for check in error.checks for reason in check.reasons],
    }
    click.echo(plan_to_json_text(made, blocked=blocked) if as_json else render_plan_text(made))
    if not error.checks or any(check.name != BLAST_RADIUS_CHECK for check in error.checks):
        click.echo(f"error: {error}", err=True)
        return EXIT_ERROR
    click.echo(f"blocked: {error}", err=True)
    click.echo(
        f"over the blast radius: once a refresh run records plan {made.id}, only "
        f"`nthlayer approve {made.id} --approver NAME --allow-blast-radius` applies its removals: "
        "check them first",
        err=True,
    )
    return EXIT_BLAST_RADIUS


def _open_ledger() -> Ledger:
    try:
        return Ledger(_ledger_url())
    except LedgerOutdatedError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_ERROR)


def _checked_approver(approver: str) -> str:
    """The approver when NTHLAYER_APPROVERS allows them; otherwise say why and exit 1."""
    try:
        approvers = Approvers.from_env(os.environ)
        name = approvers.check(approver)
    except (ApproverRefused, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_ERROR)
    if approvers.warning:
        click.echo(f"warning: {approvers.warning}", err=True)
    return name


def _record(action: Callable[[Ledger], Approval]) -> None:
    """Run a ledger action; a refusal is a clear message and exit 1, never a traceback."""
    with _open_ledger() as ledger:
        try:
            approval = action(ledger)
        except BlastRadiusRefused as error:
            click.echo(f"error: {error.saying(CLI_OVERRIDE)}", err=True)
            sys.exit(EXIT_ERROR)
        except LedgerError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_ERROR)
    click.echo(
        f"{approval.decision} {approval.plan_id} as {approval.id} by {approval.approver} "
        f"({len(approval.change_ids)} change(s))"
    )


@main.command()
@click.argument("plan_id")
@click.option("--approver", required=True, help="Who approves (recorded in the ledger and on the run).")
@click.option("--change", "change_ids", multiple=True, help="Approve only this change id (repeatable).")
@click.option("--comment", default="")
@click.option("--allow-blast-radius", is_flag=True, help="Approve a plan over the blast-radius limits.")
def approve(
    plan_id: str, approver: str, change_ids: tuple[str, ...], comment: str, allow_blast_radius: bool
) -> None:
    """Approve the latest plan (or some of its changes); the sensor applies it."""
    from nthlayer_pipelines.definitions import build_resources

    approver = _checked_approver(approver)
    limits = build_resources(os.environ)["reconcile"].blast_radius_limits()
    _record(
        lambda ledger: ledger.approve(
            plan_id,
            approver=approver,
            comment=comment,
            change_ids=list(change_ids) or None,
            allow_blast_radius=allow_blast_radius,
            limits=limits,
        )
    )


@main.command()
@click.argument("plan_id")
@click.option("--approver", required=True)
@click.option("--comment", default="")
def reject(plan_id: str, approver: str, comment: str) -> None:
    """Reject a plan: it is never applied."""
    approver = _checked_approver(approver)
    _record(lambda ledger: ledger.reject(plan_id, approver=approver, comment=comment))
    click.echo(AFTER_REJECTION)


@main.command()
@click.argument("plan_id")
@click.option("--approver", required=True)
def retry(plan_id: str, approver: str) -> None:
    """Approve again what a failed apply left undone (a new approval, so the sensor launches it)."""
    approver = _checked_approver(approver)
    _record(lambda ledger: ledger.retry(plan_id, approver=approver))


@main.command()
@click.option("--team", help="Only this team (its slug).")
@click.option("--since", type=click.DateTime(), help="Only changes recorded at or after this time (UTC).")
def audit(team: str | None, since: datetime | None) -> None:
    """List the changes applied (and skipped, stale, blocked, failed) from the ledger, newest first."""
    with _open_ledger() as ledger:
        rows = ledger.audit(team=team, since=since.replace(tzinfo=UTC) if since else None)
    if not rows:
        click.echo("no recorded changes")
        return
    for row in rows:
        # A membership change as it always read (team, member, role); any other by what it writes (e.g.
        # payments/Payment API); another provider's change says whose it is.
        if row.kind.resource == TEAM_MEMBERSHIP:
            subject = " ".join(x for x in (row.team, row.email, row.role) if x)
        else:
            subject = row.subject or row.team
        if row.provider != DEFAULT_PROVIDER:
            subject = f"{subject} ({row.provider})"
        detail = f"  {row.detail}" if row.detail else ""
        error = f"  error: {row.error}" if row.error else ""
        click.echo(
            f"{row.updated_at:%Y-%m-%d %H:%M:%S}  {row.status:<8} {row.kind:<14} {subject}  "
            f"[{row.plan_id} {row.approval_id}]{detail}{error}"
        )


@main.group()
def db() -> None:
    """The ledger's schema: see its revision, migrate it in place."""


def _ledger_url() -> str:
    url = DeploymentSettings.read_one("ledger_url")
    return url.get_secret_value() if url is not None else default_ledger_url()


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the ledger (NTHLAYER_LEDGER_URL) to this version's schema, in one transaction."""
    url = _ledger_url()
    try:
        before, after = upgrade_ledger(url)
    except sa.exc.SQLAlchemyError as error:
        click.echo(f"error: the ledger at {display_url(url)} could not be migrated: {error}", err=True)
        sys.exit(EXIT_ERROR)
    if before.current == after.current:
        click.echo(
            f"the ledger at {display_url(url)} is at revision {after.current}, the latest: nothing to do"
        )
    else:
        start = before.current or "empty"
        click.echo(f"the ledger at {display_url(url)} migrated from revision {start} to {after.current}")


@db.command("current")
def db_current() -> None:
    """Print the ledger's schema revision and the one this version needs."""
    url = _ledger_url()
    try:
        with Ledger(url) as ledger:
            schema = ledger.revision()
    except LedgerOutdatedError as error:
        schema = error.schema
    click.echo(f"{display_url(url)}: revision {schema.current or 'none'} (this nthlayer needs {schema.head})")
    if not schema.at_head:
        sys.exit(EXIT_ERROR)


@main.command()
def doctor() -> None:
    """Check credentials, storage, the daemon and the ledger, read-only; exit 1 if a check fails."""
    from nthlayer_pipelines.doctor import Status, run_checks

    results = run_checks(os.environ)
    for result in results:
        click.echo(result.line())
    failed = [r.name for r in results if r.status is Status.FAIL]
    if failed:
        click.echo(f"{len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        sys.exit(EXIT_ERROR)


@main.command()
@click.option(
    "--seed", type=click.Path(exists=True, dir_okay=False), help="YAML seed of the providers' state."
)
@click.option("--generate-teams", type=int, help="Generate a deterministic org of N teams instead.")
@click.option(
    "--generate-users",
    type=int,
    help="Users of the generated org (default: min(20000, 4 x teams)); past 10,000, PagerDuty's listing "
    "limit, the snapshot reads them through the teams' members.",
)
@click.option(
    "--generate-members",
    type=int,
    help="Members of each generated team (default 10): teams x members seats for the users to fill.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option(
    "--rate-limit", default=960, show_default=True, type=int, help="PagerDuty requests a minute a token."
)
@click.option("--latency-ms", default=0, show_default=True, type=int, help="Added to every request.")
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A fault plan, YAML or JSON (see nthlayer_pipelines/sandbox/faults.py); /_admin/faults changes it.",
)
def sandbox(
    seed: str | None,
    generate_teams: int | None,
    generate_users: int | None,
    generate_members: int | None,
    host: str,
    port: int,
    rate_limit: int,
    latency_ms: int,
    faults_file: str | None,
) -> None:
    """Serve emulators of PagerDuty, Cortex and Slack on one loopback port."""
    from nthlayer_pipelines.sandbox import run_cli

    if (seed is None) == (generate_teams is None):
        raise click.UsageError("give exactly one of --seed FILE or --generate-teams N")
    if generate_users is not None and generate_teams is None:
        raise click.UsageError("--generate-users goes with --generate-teams")
    if generate_members is not None and generate_teams is None:
        raise click.UsageError("--generate-members goes with --generate-teams")
    try:
        run_cli(
            seed=seed,
            generate_teams=generate_teams,
            generate_users=generate_users,
            generate_members=generate_members,
            host=host,
            port=port,
            rate_limit=rate_limit,
            latency_ms=latency_ms,
            faults_file=faults_file,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error


@main.command()
@click.option(
    "--port", default=3000, show_default=True, type=click.IntRange(1, 65535), help="Dagster webserver port."
)
@click.option(
    "--sandbox-port", default=8787, show_default=True, type=click.IntRange(1, 65535), help="Sandbox port."
)
@click.option("--seed", default="examples/sandbox-seed.yaml", show_default=True, type=click.Path(exists=True))
def demo(port: int, sandbox_port: int, seed: str) -> None:
    """Sandbox providers, a first refresh, then the Dagster webserver and daemon.

    Each start is fresh: the sandbox is seeded anew and DAGSTER_HOME (.dagster_home/) emptied."""
    from nthlayer_pipelines.definitions import build_definitions
    from nthlayer_pipelines.demo import run_demo

    build_definitions(os.environ)  # a bad setting is said here, before anything starts
    sys.exit(run_demo(webserver_port=port, sandbox_port=sandbox_port, seed=seed))


if __name__ == "__main__":
    main()
