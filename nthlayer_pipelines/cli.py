"""`nthlayer`: validate definitions, print the plan, run the sandbox, run the demo."""

from __future__ import annotations

import os
import sys

import click

from nthlayer_pipelines.model import DefinitionsError, SourceError

EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    """Compute the plan read-only. Exit 0: no drift, 2: drift, 1: error."""
    from nthlayer_pipelines.inprocess import PlanFailed, plan_in_process
    from nthlayer_pipelines.reconcile.plan import plan_to_json_text, render_plan_text

    environ = dict(os.environ)
    if definitions_path is not None:
        environ["NTHLAYER_DEFINITIONS"] = definitions_path
    try:
        result = plan_in_process(environ)
    except (PlanFailed, DefinitionsError, SourceError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(plan_to_json_text(result) if as_json else render_plan_text(result))
    sys.exit(EXIT_DRIFT if result.has_drift else EXIT_OK)


@main.command()
@click.option(
    "--seed", type=click.Path(exists=True, dir_okay=False), help="YAML seed of the providers' state."
)
@click.option("--generate-teams", type=int, help="Generate a deterministic org of N teams instead.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option(
    "--rate-limit", default=960, show_default=True, type=int, help="PagerDuty requests a minute a token."
)
@click.option("--latency-ms", default=0, show_default=True, type=int, help="Added to every request.")
def sandbox(
    seed: str | None, generate_teams: int | None, host: str, port: int, rate_limit: int, latency_ms: int
) -> None:
    """Serve emulators of PagerDuty, Cortex and Slack on one loopback port."""
    from nthlayer_pipelines.sandbox import run_cli

    if (seed is None) == (generate_teams is None):
        raise click.UsageError("give exactly one of --seed FILE or --generate-teams N")
    run_cli(
        seed=seed,
        generate_teams=generate_teams,
        host=host,
        port=port,
        rate_limit=rate_limit,
        latency_ms=latency_ms,
    )


@main.command()
@click.option("--port", default=3000, show_default=True, type=int, help="Dagster webserver port.")
@click.option("--sandbox-port", default=8787, show_default=True, type=int)
@click.option("--seed", default="examples/sandbox-seed.yaml", show_default=True, type=click.Path(exists=True))
def demo(port: int, sandbox_port: int, seed: str) -> None:
    """Sandbox providers, a first refresh, then the Dagster webserver and daemon."""
    from nthlayer_pipelines.demo import run_demo

    sys.exit(run_demo(webserver_port=port, sandbox_port=sandbox_port, seed=seed))


if __name__ == "__main__":
    main()
