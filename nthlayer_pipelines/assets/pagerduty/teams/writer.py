"""Carry out membership changes: find the team, re-read its members, decide, write, verify.

A team the plan creates is looked for by name before it is created, and again when the answer to the
create is lost. A removal PagerDuty refuses because the user is a target of one of the team's escalation
policies (400, code 2001) is blocked for a person, naming the policy: never edit the policy by itself
(terraform-provider-pagerduty tried, and reverted it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from nthlayer_pipelines.assets.pagerduty.teams.decide import Action, converged, decide, unwanted_reason
from nthlayer_pipelines.core.kind import STATUS_FOR_ACTION, ApplyRow, RunLog, team_lane
from nthlayer_pipelines.core.model import (
    TEAM_MEMBERSHIP,
    Change,
    ChangeKind,
    ChangeStatus,
    DesiredState,
    Plan,
    Role,
)
from nthlayer_pipelines.core.safety import (
    BlastRadiusLimits,
    assess_blast_radius,
    reduces_a_team,
    rosters_from_members,
)
from nthlayer_pipelines.resources.pagerduty.client import (
    PagerDutyClient,
    PagerDutyError,
    WriteOutcomeUnknownError,
)

logger = logging.getLogger("nthlayer_pipelines.apply")

ESCALATION_POLICY_BLOCKS_REMOVAL = 2001  # PagerDuty's code on a 400 to DELETE /teams/{id}/users/{id}


@dataclass
class MembershipWriter:
    """Membership changes for one apply: what was read, and which teams were written."""

    client: PagerDutyClient
    log: RunLog = logger
    resource: str = TEAM_MEMBERSHIP
    touched: set[str] = field(default_factory=set)
    _members: dict[str, dict[str, Role] | None] = field(default_factory=dict)  # None: the team is gone
    _team_ids: dict[str, str] = field(default_factory=dict)  # team slug -> id, for teams found by name
    _verify_members: dict[str, dict[str, Role] | None] = field(default_factory=dict)

    def lane(self, change: Change) -> str:
        return team_lane(change)

    def unwanted(self, change: Change, desired: DesiredState) -> str | None:
        return unwanted_reason(change, desired)

    def live_blast_radius(self, changes: Sequence[Change], limits: BlastRadiusLimits) -> tuple[str, ...]:
        """The blast radius on the teams as PagerDuty holds them now: read only when something can
        reduce a team."""
        if not any(reduces_a_team(c) for c in changes):
            return ()
        team_ids = sorted({c.team_id for c in changes if c.team_id and reduces_a_team(c)})
        # Up to the client's max_concurrency teams at once; each thread fills its own team's entry.
        live = dict(zip(team_ids, self.client._map_concurrently(self.read_members, team_ids), strict=True))
        rosters = rosters_from_members({t: members for t, members in live.items() if members is not None})
        return assess_blast_radius(Plan(id="live", changes=tuple(changes)), rosters, limits).reasons

    def carry_out(self, change: Change) -> ApplyRow:
        try:
            return self._carry_out(change)
        except PagerDutyError as error:  # a read before the write failed
            return ApplyRow(change, ChangeStatus.FAILED, "", str(error))

    def _carry_out(self, change: Change) -> ApplyRow:
        if change.kind is ChangeKind.CREATE_TEAM:
            return self._create_team(change)
        team_id = self._team_id(change)
        members = self.read_members(team_id) if team_id else None
        current = members.get(change.user_id or "") if members is not None else None
        decision = decide(change, team_exists=members is not None, current_role=current)
        if decision.action is not Action.WRITE:
            return ApplyRow(change, STATUS_FOR_ACTION[decision.action], decision.detail, team_id=team_id)
        assert team_id is not None and members is not None  # decide() writes only to a team that exists
        if not change.user_id:
            return ApplyRow(
                change, ChangeStatus.FAILED, "the change names no PagerDuty user id", None, team_id
            )
        try:
            if change.kind is ChangeKind.REMOVE_MEMBER:
                self.client.remove_membership(team_id, change.user_id)
            else:
                assert change.role is not None  # decide() refuses a membership change without a role
                self.client.set_membership(team_id, change.user_id, change.role)
        except PagerDutyError as error:
            self._members.pop(team_id, None)  # the write may have landed: read the team again
            if change.kind is ChangeKind.REMOVE_MEMBER and _blocked_by_escalation_policy(error):
                detail = self._blocking_policies(team_id, change, error)
                return ApplyRow(change, ChangeStatus.BLOCKED, detail, None, team_id)
            return ApplyRow(change, ChangeStatus.FAILED, decision.detail, str(error), team_id)
        # The team as it now stands, without reading it again: one read per team, not one per change.
        if change.kind is ChangeKind.REMOVE_MEMBER:
            members.pop(change.user_id, None)
        else:
            members[change.user_id] = change.role
        self.touched.add(team_id)  # a set's add is atomic: lanes of other teams share it
        return ApplyRow(change, ChangeStatus.APPLIED, decision.detail, None, team_id)

    def _create_team(self, change: Change) -> ApplyRow:
        existing = self.client.find_team_by_name(change.team_name)
        decision = decide(change, team_exists=existing is not None)
        if existing is not None:
            self._team_ids[change.team] = existing.id
            return ApplyRow(
                change, ChangeStatus.SKIPPED, f"{decision.detail} ({existing.id})", None, existing.id
            )
        try:
            created = self.client.create_team(change.team_name)
            detail = f"created {created.id}"
        except WriteOutcomeUnknownError as error:
            # No answer to the POST: it may have been applied. Look before anyone creates it again.
            found = self.client.find_team_by_name(change.team_name)
            if found is None:
                # Not seen yet is not proof it was never made: a fresh team can read as missing for a
                # moment. Fail honestly; the next refresh finds it if it exists, else plans it again.
                detail = "no answer to the create and no team of that name yet; the next refresh tells"
                return ApplyRow(change, ChangeStatus.FAILED, detail, str(error))
            created, detail = found, f"created {found.id} (the answer was lost; found by name)"
        self._team_ids[change.team] = created.id
        self.touched.add(created.id)
        return ApplyRow(change, ChangeStatus.APPLIED, detail, None, created.id)

    def _team_id(self, change: Change) -> str | None:
        """The change's team: by id, else (a team the plan creates) by name, remembered for the run."""
        if change.team_id:
            return change.team_id
        if change.team not in self._team_ids:
            found = self.client.find_team_by_name(change.team_name)
            if found is None:
                return None
            self._team_ids[change.team] = found.id
        return self._team_ids[change.team]

    def read_members(self, team_id: str) -> dict[str, Role] | None:
        """The team's members, read once per run and kept up to date with what the run writes to it
        (read again after a write that failed: it may have landed); None when it is gone."""
        if team_id not in self._members:
            self._members[team_id] = _members_of(self.client, team_id)
        return self._members[team_id]

    def _blocking_policies(self, team_id: str, change: Change, error: PagerDutyError) -> str:
        """Name the escalation policies that hold the user; they are for a person to change, never us."""
        who = change.email or change.user_id
        try:
            policies = self.client.list_escalation_policies(team_ids=[team_id])
        except PagerDutyError as lookup_error:
            self.log.warning("could not list the escalation policies of team %s: %s", team_id, lookup_error)
            policies = []
        names = [f"{p.name} ({p.id})" for p in policies if change.user_id in p.user_ids]
        if not names:
            reason = "; ".join([error.message, *error.errors])
            return f"PagerDuty refuses to remove {who}: {reason}"
        return (
            f"{who} is a target of escalation policy {', '.join(names)}: change the policy by hand, "
            "then plan again"
        )

    def start_verifying(self) -> None:
        self._verify_members = {}

    def holds(self, row: ApplyRow) -> tuple[bool, str]:
        assert row.team_id is not None  # every applied row knows its team
        try:
            return self._holds(row, row.team_id)
        except PagerDutyError as error:
            return False, f"could not be read: {error}"

    def _holds(self, row: ApplyRow, team_id: str) -> tuple[bool, str]:
        if row.change.kind is ChangeKind.CREATE_TEAM:
            exists = self.client.get_team(team_id) is not None
            return converged(row.change, team_exists=exists), "the team is not there"
        if team_id not in self._verify_members:
            self._verify_members[team_id] = _members_of(self.client, team_id)
        team = self._verify_members[team_id]
        current = team.get(row.change.user_id or "") if team is not None else None
        holds = converged(row.change, team_exists=team is not None, current_role=current)
        seen = (
            "the team is gone" if team is None else f"found {current.value if current else 'no membership'}"
        )
        return holds, seen


def _members_of(client: PagerDutyClient, team_id: str) -> dict[str, Role] | None:
    try:
        return {m.user_id: m.role for m in client.list_team_members(team_id)}
    except PagerDutyError as error:
        if error.status == 404:
            return None
        raise


def _blocked_by_escalation_policy(error: PagerDutyError) -> bool:
    return error.status == 400 and error.code == ESCALATION_POLICY_BLOCKS_REMOVAL
