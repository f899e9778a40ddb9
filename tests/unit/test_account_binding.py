"""Which account a stored snapshot belongs to, pure: the subdomain an html_url names, and when the stored
snapshot may be patched with the audit records of the account the token reads now."""

from __future__ import annotations

import pytest

from nthlayer_pipelines.resources.pagerduty.incremental import (
    AccountProbe,
    SnapshotAccount,
    account_mismatch,
    normalized_api_url,
    single_subdomain,
    subdomain_from_html_url,
    totals_mismatch,
)

API = "https://api.pagerduty.com"
STORED = SnapshotAccount(API, "acme", users=40, teams=12)


def probe(subdomains: frozenset[str] = frozenset({"acme"}), api_url: str = API) -> AccountProbe:
    return AccountProbe(api_url, subdomains, users=40, teams=12)


@pytest.mark.parametrize(
    ("html_url", "subdomain"),
    [
        ("https://acme.pagerduty.com/users/PXXX", "acme"),
        ("https://acme.eu.pagerduty.com/teams/PTEAM01", "acme"),  # an EU account
        ("https://ACME-Corp.PagerDuty.com/users/P1", "acme-corp"),  # hosts are case-insensitive
        ("https://acme.pagerduty.com", "acme"),
        (" https://acme.pagerduty.com/users/P1 ", "acme"),
        ("https://acme.pagerduty.com:443/users/P1", "acme"),
        ("https://pagerduty.com/users/P1", None),  # no account in it
        ("https://acme.pagerduty.com.evil.example/users/P1", None),
        ("https://acme.example.com/users/P1", None),
        ("/users/P1", None),
        ("not a url", None),
        ("https://[::1/users", None),  # urlsplit refuses it
        ("", None),
        (None, None),
        (7, None),
        ({"url": "https://acme.pagerduty.com"}, None),
    ],
)
def test_the_subdomain_is_read_from_an_html_url(html_url: object, subdomain: str | None) -> None:
    assert subdomain_from_html_url(html_url) == subdomain


def test_api_urls_compare_without_case_in_the_host_or_a_trailing_slash() -> None:
    assert normalized_api_url("HTTPS://API.PagerDuty.com/") == API
    assert normalized_api_url("http://127.0.0.1:8787/pagerduty/") == "http://127.0.0.1:8787/pagerduty"
    assert normalized_api_url("http://127.0.0.1:8787/pagerduty") != normalized_api_url(
        "http://127.0.0.1:8788/pagerduty"
    )
    assert normalized_api_url("https://api.eu.pagerduty.com") != API


def test_one_subdomain_names_the_account_none_or_several_name_none() -> None:
    assert single_subdomain({"acme"}) == "acme"
    assert single_subdomain(set()) is None
    assert single_subdomain({"acme", "globex"}) is None


@pytest.mark.parametrize(
    ("stored", "probed", "reason"),
    [
        (STORED, probe(), None),
        (STORED, probe(api_url="https://API.pagerduty.com/"), None),
        (
            None,
            probe(),
            "the stored snapshot names no account (it was saved before snapshots were bound to one): "
            "reading everything once",
        ),
        (
            STORED,
            probe(api_url="https://api.eu.pagerduty.com"),
            "the stored snapshot was read from another API URL (https://api.pagerduty.com), not "
            "https://api.eu.pagerduty.com",
        ),
        (
            STORED,
            probe(frozenset({"globex"})),
            "the stored snapshot is from another account (acme.pagerduty.com); the token now reads "
            "globex.pagerduty.com",
        ),
        (
            STORED,
            probe(frozenset({"acme", "globex"})),
            "PagerDuty's answers name more than one account (acme.pagerduty.com, globex.pagerduty.com): "
            "the snapshot cannot be checked",
        ),
        (
            STORED,
            probe(frozenset()),
            "PagerDuty's answers name no account (no html_url to read a subdomain from): the stored "
            "snapshot cannot be checked",
        ),
        (
            SnapshotAccount(API, None, 0, 0),
            probe(),
            "the stored snapshot names no account subdomain: it cannot be checked against this account",
        ),
    ],
    ids=[
        "same",
        "same-url-spelled-otherwise",
        "saved-before-binding",
        "other-api-url",
        "other-account",
        "several-accounts",
        "answers-name-none",
        "stored-names-none",
    ],
)
def test_the_stored_snapshot_is_trusted_only_for_its_own_account(
    stored: SnapshotAccount | None, probed: AccountProbe, reason: str | None
) -> None:
    assert account_mismatch(stored, probed) == reason


def test_a_patched_snapshot_must_hold_as_many_users_and_teams_as_pagerduty_lists() -> None:
    probed = probe()
    assert totals_mismatch(probed, users=40, teams=12) is None
    assert totals_mismatch(probed, users=39, teams=12) == (
        "the listing totals do not add up: PagerDuty lists 40 users and 12 teams, the snapshot patched "
        "from the audit records holds 39 and 12"
    )
    assert totals_mismatch(probed, users=40, teams=13) is not None


def test_the_probe_vouches_for_the_account_it_read() -> None:
    assert probe().account() == STORED
    assert probe(frozenset({"acme", "globex"})).account().subdomain is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "acme",
        [],
        {},
        {"api_url": API, "subdomain": "acme", "users": 1},
        {"api_url": API, "subdomain": "acme", "users": -1, "teams": 2},
        {"api_url": API, "subdomain": "acme", "users": True, "teams": 2},
        {"api_url": API, "subdomain": 7, "users": 1, "teams": 2},
        {"api_url": None, "subdomain": "acme", "users": 1, "teams": 2},
    ],
)
def test_a_stored_account_that_is_none_or_not_one_is_not_trusted(value: object) -> None:
    assert SnapshotAccount.from_json(value) is None


def test_a_stored_account_reads_back_as_it_was_written() -> None:
    for account in (STORED, SnapshotAccount("http://127.0.0.1:8787/pagerduty", None, 0, 0)):
        assert SnapshotAccount.from_json(account.to_json()) == account
