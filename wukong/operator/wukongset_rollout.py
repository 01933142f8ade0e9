"""Members follow the template: which are out of date, and which may be updated now.

A member is out of date when it was made from another template (its
`TEMPLATE_HASH_LABEL` is not the hash of the set's template: the template
changed) or when its spec is not the template's (someone edited the member by
hand). Either way the set writes the template's spec and labels onto it, in
place: its VM, disks and addresses stay (a member is a VM, not a pod to
replace).

How many at once is bounded as a Deployment's rolling update bounds it:
`spec.maxUnavailable` members may be unavailable at a time, counting those
unavailable already. A member is available when its Wukong is Ready, its
status has observed its spec (`observedGeneration`) and every condition is
True (a new disk bound, a network configured): a member just updated is
unavailable until its own controller has caught up with the new spec. An out
of date member that is unavailable anyway is updated at once (it costs no
availability); the others go highest ordinal first, one budget at a time. A
migrating member is never updated (its VM must not change under a live
migration); it waits for the migration to end. A member whose update the API
server refused (a disk grown by hand cannot shrink back to the template's)
is reported and left out until it or the template changes, so the others
still roll out.
"""

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from wukong.operator.api import GROUP
from wukong.operator.scalein import Member
from wukong.operator.schema import to_json
from wukong.operator.wukongset_api import WukongTemplate

# On every member: the hash of the template it was made from (or last updated to).
TEMPLATE_HASH_LABEL = f"{GROUP}/template-hash"

# Why a member is out of date (`Member.outdated`).
TEMPLATE_CHANGED = "template changed"
EDITED_BY_HAND = "spec changed by hand"


def template_hash(template: WukongTemplate) -> str:
    """A short, stable hash of `template` as the API server defaulted it (a label value)."""
    text = json.dumps(to_json(template), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Rollout:
    """The members to update now, those that wait, and how many are unavailable."""

    update: tuple[Member, ...]
    waiting: tuple[Member, ...]  # out of date: no budget left, or migrating
    unavailable: int


def plan_rollout(
    members: Iterable[Member], max_unavailable: int, *, refused: Collection[str] = ()
) -> Rollout:
    """Which out-of-date members to update now without more than `max_unavailable`
    members unavailable at once; the `refused` ones (by name) are not tried again."""
    members = list(members)
    unavailable = sum(1 for m in members if not m.available)
    outdated = [m for m in members if m.outdated is not None]
    movable = [m for m in outdated if m.migrating is None and m.name not in refused]
    free = [m for m in movable if not m.available]
    budget = max(max_unavailable - unavailable, 0)
    costly = sorted((m for m in movable if m.available), key=lambda m: -m.ordinal)[:budget]
    update = free + costly
    chosen = {m.name for m in update}
    waiting = tuple(m for m in outdated if m.name not in chosen)
    return Rollout(update=tuple(update), waiting=waiting, unavailable=unavailable + len(costly))
