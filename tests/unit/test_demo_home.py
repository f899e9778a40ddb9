"""The demo's fresh start: the DAGSTER_HOME a previous demo left (its ledger with the stored snapshot, the
run history, the sensors' cursors) is emptied, because the sandbox is seeded anew; anything else is never
touched."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest

from nthlayer_pipelines.demo import (
    EARLIER_INSTANCE_YAMLS,
    HOME_LOCK,
    INSTANCE_YAML,
    DemoError,
    claim_fresh_home,
)
from tests.support import REPO


def a_previous_demos_home(
    home: Path, *, with_lock_file: bool = True, instance_yaml: str = INSTANCE_YAML
) -> None:
    (home / "history" / "runs").mkdir(parents=True)
    (home / "history" / "runs" / "index.db").write_bytes(b"runs")
    (home / "nthlayer-ledger.db").write_bytes(b"a ledger holding the previous sandbox's snapshot")
    (home / "dagster.yaml").write_text(instance_yaml)
    if with_lock_file:
        (home / HOME_LOCK).touch()


@pytest.mark.parametrize(
    ("with_lock_file", "instance_yaml"),
    [
        (True, INSTANCE_YAML),
        (False, INSTANCE_YAML),
        *((False, earlier) for earlier in EARLIER_INSTANCE_YAMLS),
    ],
    ids=[
        "demo-home",
        "home-from-before-the-lock-file",
        *(f"earlier-instance-yaml-{n}" for n, _ in enumerate(EARLIER_INSTANCE_YAMLS)),
    ],
)
def test_a_previous_demos_home_is_emptied(tmp_path: Path, with_lock_file: bool, instance_yaml: str) -> None:
    home = tmp_path / "home"
    a_previous_demos_home(home, with_lock_file=with_lock_file, instance_yaml=instance_yaml)
    lock = claim_fresh_home(home)
    try:
        assert sorted(p.name for p in home.iterdir()) == sorted(["dagster.yaml", HOME_LOCK])
        assert (home / "dagster.yaml").read_text() == INSTANCE_YAML
    finally:
        lock.close()


def test_a_missing_home_is_created(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    claim_fresh_home(home).close()
    assert (home / "dagster.yaml").read_text() == INSTANCE_YAML


def test_a_home_the_demo_did_not_make_is_never_emptied(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    (home / "nthlayer-ledger.db").write_bytes(b"someone's ledger")
    with pytest.raises(DemoError, match="holds something the demo did not create"):
        claim_fresh_home(home)
    assert (home / "nthlayer-ledger.db").read_bytes() == b"someone's ledger"
    assert not (home / HOME_LOCK).exists()


def test_a_home_in_use_by_a_running_demo_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a_previous_demos_home(home)
    with (home / HOME_LOCK).open("a+") as running:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DemoError, match="another nthlayer demo is running"):
            claim_fresh_home(home)
    assert (home / "nthlayer-ledger.db").exists()
