"""deploy/Dockerfile, read rather than built: no image registry answers here, so the build itself is not
exercised (the README says so). What can be checked is: it installs exactly the lock, runs as a user other
than root, exposes the port the chart's values name, runs the command the chart runs, and holds no secret."""

from __future__ import annotations

import re

from tests.deploy.dockerfile import exec_form, final_stage, instructions, words
from tests.deploy.helm_chart import (
    DOCKERFILE,
    SECRET_VARIABLES,
    VALUES,
    code_server_command,
    load_yaml,
    user_deployment,
)
from tests.support import REPO


def _only(keyword: str, stage: list) -> list:
    return [instruction for instruction in stage if instruction.keyword == keyword]


def test_the_image_installs_exactly_the_lock_with_the_deploy_extra_and_no_dev_tools() -> None:
    syncs = [i.arguments for i in _only("RUN", instructions(DOCKERFILE)) if "uv sync" in i.arguments]
    assert syncs, "no `uv sync` in the Dockerfile"
    for sync in syncs:
        assert {"--locked", "--no-dev", "--extra", "deploy"} <= set(sync.split()), sync
        assert "--extra test" not in sync and "--extra demo" not in sync
    # The uv that reads uv.lock is the Makefile's.
    (make_uv,) = re.findall(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert f"uv=={make_uv}" in DOCKERFILE.read_text()


def test_the_image_runs_as_the_unprivileged_user_the_chart_names() -> None:
    (user,) = _only("USER", final_stage(DOCKERFILE))
    uid, _, gid = user.arguments.partition(":")
    assert int(uid) != 0 and int(gid or uid) != 0
    values = load_yaml(VALUES)
    assert user_deployment(values)["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["securityContext"]["runAsUser"] == int(uid)


def test_the_image_serves_the_code_location_on_the_port_and_with_the_command_of_the_values() -> None:
    stage = final_stage(DOCKERFILE)
    deployment = user_deployment(load_yaml(VALUES))
    (expose,) = _only("EXPOSE", stage)
    (cmd,) = _only("CMD", stage)

    assert int(expose.arguments) == deployment["port"]
    assert exec_form(cmd) == code_server_command(deployment)
    assert exec_form(cmd)[:3] == ["dagster", "code-server", "start"]


def test_the_image_holds_no_secret() -> None:
    every = instructions(DOCKERFILE)
    names = {
        word.split("=", 1)[0]
        for instruction in every
        if instruction.keyword in {"ENV", "ARG"}
        for word in words(instruction)
    }
    assert not names & set(SECRET_VARIABLES)
    assert not [name for name in names if re.search("TOKEN|PASSWORD|SECRET", name)]
    # What it copies: the project, its lock and the definitions, nothing from a developer's environment.
    copied = {
        source
        for instruction in every
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from")
        for source in words(instruction)[:-1]
    }
    assert copied == {"pyproject.toml", "uv.lock", "README.md", "nthlayer_pipelines", "${DEFINITIONS}"}
    for source in copied - {"${DEFINITIONS}"}:
        assert (REPO / source).exists(), source
    assert (REPO / "examples" / "org").is_dir()  # the DEFINITIONS default
