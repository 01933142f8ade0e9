"""The WukongSet controller: keeps `replicas` member Wukongs, and scales in around migrations.

Each reconcile reads the set and its members from the caches and does one
step towards `spec.replicas`:

- too few members: create the missing ones, at the lowest free ordinals
  (`<set>-<ordinal>`, the template's labels, the set as controller owner);
- too many: remove those `scalein.choose_scale_in` picks (never a migrating
  member). When fewer can go than must, `ScalingBlocked=True` names the
  migrating members that hold the rest back, and the reconcile ends without a
  requeue: the end of their migrations is a watch event, which maps back to
  the set (a member Wukong through its controller ownerReference, a
  VirtualMachineInstanceMigration through its `spec.vmiName`, the member's
  name, and that member's owner).

Members follow the template (`wukongset_rollout`): a template change is
rolled out, and a member edited by hand is brought back, in place, with at
most `spec.maxUnavailable` members unavailable at once.

Each decision is an event on the set naming the members chosen and why the
others were skipped. Members being deleted are not counted (as a ReplicaSet
does); their names stay taken until they are gone.

Deleting the set deletes its members (each one's own finalizer removes its VM
and disks, even mid-migration: the set is going) and then the set's
finalizer. A member already being deleted, or already gone, never holds it.

Members are the Wukongs the set controls (by uid, through an index on the
Wukong cache), never the ones its selector happens to match: a Wukong made by
hand with the same labels is neither counted nor deleted. A Wukong of a
member's name that the set does not control is skipped over (a Warning
`NameConflict` names it) and the next free ordinal is used.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from wukong.metrics.sets import SetReplicas, SetSource, WukongSetReplicasCollector
from wukong.operator.api import WUKONGS, Phase, WukongSpec
from wukong.operator.conditions import READY, ConditionUpdate, updated_conditions
from wukong.operator.dispatch import dispatch_stored
from wukong.operator.kubevirt import FINAL_MIGRATION_PHASES
from wukong.operator.reconciler import migration_vmi_key
from wukong.operator.scalein import Member, ScaleIn, choose_scale_in
from wukong.operator.schema import from_json
from wukong.operator.views import StoredObject, stored_fields
from wukong.operator.writes import add_finalizer, remove_finalizer, write_status
from wukong.operator.wukongset_api import (
    SET_FINALIZER,
    WUKONGSET_LABEL,
    WUKONGSETS,
    WukongSetSpec,
    WukongSetStatus,
)
from wukong.operator.wukongset_names import member_name, member_ordinal, set_name_problem
from wukong.operator.wukongset_rollout import (
    EDITED_BY_HAND,
    TEMPLATE_CHANGED,
    TEMPLATE_HASH_LABEL,
    Rollout,
    plan_rollout,
    template_hash,
)
from wukong.runtime import (
    AlreadyExists,
    ApiError,
    Conflict,
    Controller,
    ControllerOptions,
    EventRecorder,
    Invalid,
    Manager,
    MapFunc,
    NotFound,
    Object,
    ReconcileContext,
    Request,
    Result,
    Store,
    Watch,
    controller_reference,
)
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCE_MIGRATIONS

CONTROLLER_NAME = "wukongset"
EVENT_COMPONENT = "wukong-operator"
SCALING_BLOCKED = "ScalingBlocked"
ROLLING_UPDATE = "RollingUpdate"

# Field indexes of this controller's own (the Wukong controller keeps its own).
MEMBERS_BY_SET = "wukongset.members"  # the uid of the WukongSet that controls a Wukong
MIGRATIONS_BY_VMI = "wukongset.migrations.vmi"  # namespace/spec.vmiName

EventType = Literal["Normal", "Warning"]
FORBIDDEN = 403  # an admission webhook's denial


@dataclass(frozen=True, kw_only=True)
class WukongSetView(StoredObject):
    """One WukongSet as read at the start of a reconcile."""

    spec: WukongSetSpec
    status: WukongSetStatus

    @cached_property
    def template_hash(self) -> str:
        """The hash of the template, labelled on the members made from it (once per view:
        every member is compared with it)."""
        return template_hash(self.spec.template)

    @property
    def selector(self) -> str:
        """`spec.selector` in the string form of a label selector."""
        labels = self.spec.selector.match_labels
        return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def parse_wukongset(obj: Object) -> WukongSetView:
    """The view of a stored WukongSet (its spec checked by the API server)."""
    return WukongSetView(
        **stored_fields(obj),
        spec=from_json(WukongSetSpec, obj.get("spec")),
        status=from_json(WukongSetStatus, obj.get("status")),
    )


def set_uid_key(wukong: Object) -> list[str]:
    """The uid of the WukongSet controlling `wukong`, for `MEMBERS_BY_SET`."""
    return [ref["uid"] for ref in _set_references(wukong) if ref.get("uid")]


def _set_references(wukong: Object) -> list[dict[str, Any]]:
    return [
        ref
        for ref in wukong["metadata"].get("ownerReferences") or []
        if ref.get("controller")
        and ref.get("kind") == WUKONGSETS.kind
        and ref.get("apiVersion", "").rpartition("/")[0] == WUKONGSETS.group
    ]


def set_of_migration(wukongs: Store) -> MapFunc:
    """A migration's set: its VMI is named as the member Wukong, whose controller is the set."""

    def requests(migration: Object) -> list[Request]:
        namespace = migration["metadata"]["namespace"]
        vmi = (migration.get("spec") or {}).get("vmiName")
        member = wukongs.get_by_name(namespace, vmi) if vmi else None
        if member is None:
            return []
        return [Request(namespace, ref["name"]) for ref in _set_references(member)]

    return requests


def _is_ready(wukong: Object) -> bool:
    conditions = (wukong.get("status") or {}).get("conditions") or []
    return any(c.get("type") == READY and c.get("status") == "True" for c in conditions)


def _is_available(wukong: Object) -> bool:
    """Ready, and its status says its own controller has caught up with its spec."""
    status = wukong.get("status") or {}
    conditions = status.get("conditions") or []
    observed = status.get("observedGeneration")
    return (
        _is_ready(wukong)
        and observed is not None
        and observed >= (wukong["metadata"].get("generation") or 0)
        and all(c.get("status") == "True" for c in conditions)
    )


class WukongSetReconciler:
    def __init__(
        self, *, wukongsets: Store, wukongs: Store, migrations: Store, recorder: EventRecorder
    ) -> None:
        self._sets = wukongsets
        self._wukongs = wukongs
        self._migrations = migrations
        self._recorder = recorder
        # Per set uid: the uids of members this process deleted that the cache
        # still shows alive. Not counted, so a reconcile that runs before the
        # cache catches up never picks further members to remove.
        self._removing: dict[str, set[str]] = {}
        # Per set uid: member uid -> the generation this process wrote when it
        # updated the member. Unavailable until the cache shows that generation, so
        # a reconcile that runs before it never spends the rollout's budget twice.
        self._updating: dict[str, dict[str, int]] = {}
        # Per set uid: member uid -> (its resourceVersion, the template hash) of an
        # update the API server refused; not tried again until either changes.
        self._refused: dict[str, dict[str, tuple[str, str]]] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        # A set gone from the cache saw its members go first (its finalizer).
        return await dispatch_stored(
            ctx,
            request,
            cache=self._sets,
            parse=parse_wukongset,
            converge=self._converge,
            delete=self._delete,
        )

    # -- members ---------------------------------------------------------------------

    def _members(self, wukong_set: WukongSetView) -> list[Object]:
        return self._wukongs.by_index(MEMBERS_BY_SET, wukong_set.uid)

    def _live(self, wukong_set: WukongSetView, owned: list[Object]) -> list[Object]:
        """The members that count: neither being deleted nor removed by us already."""
        alive = [w for w in owned if not w["metadata"].get("deletionTimestamp")]
        removing = self._removing.pop(wukong_set.uid, set()) & {w["metadata"]["uid"] for w in alive}
        if removing:
            self._removing[wukong_set.uid] = removing
        return [w for w in alive if w["metadata"]["uid"] not in removing]

    def _member(self, wukong_set: WukongSetView, wukong: Object) -> Member:
        metadata = wukong["metadata"]
        name = metadata["name"]
        written = self._updating.get(wukong_set.uid, {}).get(metadata["uid"])
        return Member(
            name=name,
            uid=metadata["uid"],
            ordinal=member_ordinal(wukong_set.name, name) or 0,
            ready=_is_ready(wukong),
            migrating=self._migrating(wukong),
            available=_is_available(wukong)
            and (written is None or (metadata.get("generation") or 0) >= written),
            outdated=_outdated(wukong_set, wukong),
        )

    def _migrating(self, wukong: Object) -> str | None:
        """Why `wukong` counts as migrating, None when it does not."""
        metadata = wukong["metadata"]
        unfinished = sorted(
            migration["metadata"]["name"]
            for migration in self._migrations.by_index(
                MIGRATIONS_BY_VMI, f"{metadata['namespace']}/{metadata['name']}"
            )
            if (migration.get("status") or {}).get("phase") not in FINAL_MIGRATION_PHASES
        )
        if unfinished:
            return f"migration {', '.join(unfinished)} unfinished"
        if (wukong.get("status") or {}).get("phase") == Phase.MIGRATING:
            return "phase Migrating"
        return None

    # -- converge --------------------------------------------------------------------

    async def _converge(self, ctx: ReconcileContext, wukong_set: WukongSetView) -> Result:
        if SET_FINALIZER not in wukong_set.finalizers:
            wukong_set = await self._add_finalizer(ctx, wukong_set)
        owned = self._members(wukong_set)
        live = self._live(wukong_set, owned)
        wanted = wukong_set.spec.replicas
        problem: tuple[str, str] | None = None
        scale_in: ScaleIn | None = None
        if len(live) < wanted:
            problem = await self._scale_out(ctx, wukong_set, owned, wanted - len(live))
        elif len(live) > wanted:
            members = [self._member(wukong_set, w) for w in live]
            scale_in = choose_scale_in(members, len(live) - wanted)
            await self._scale_in(ctx, wukong_set, scale_in)
        # The members as they stand now: the ones just removed are no longer counted.
        removed = {m.name for m in scale_in.remove} if scale_in else set()
        counted = [w for w in live if w["metadata"]["name"] not in removed]
        self._forget_caught_up(wukong_set, counted)
        rollout = plan_rollout(
            [self._member(wukong_set, w) for w in counted],
            wukong_set.spec.max_unavailable,
            refused=self._still_refused(wukong_set, counted),
        )
        updated = await self._roll_out(ctx, wukong_set, counted, rollout)
        counted = [updated.get(w["metadata"]["name"], w) for w in counted]
        status = self._status(wukong_set, counted, problem, rollout)
        await self._write_status(ctx, wukong_set, status)
        return Result()

    async def _scale_out(
        self, ctx: ReconcileContext, wukong_set: WukongSetView, owned: list[Object], count: int
    ) -> tuple[str, str] | None:
        """Create `count` members; the name problem that stopped it, if any."""
        taken = {w["metadata"]["name"] for w in owned}
        created: list[str] = []
        existed = 0  # created by an earlier attempt the cache has not shown yet
        ordinal = 0
        problem = None
        while len(created) + existed < count:
            name = member_name(wukong_set.name, ordinal)
            if (problem := set_name_problem(wukong_set.name, wukong_set.spec, ordinal)) is not None:
                break
            ordinal += 1
            if name in taken:
                continue
            existing = self._wukongs.get_by_name(wukong_set.namespace, name)
            if existing is not None:
                await self._event(
                    ctx, wukong_set, "Warning", "NameConflict", _conflict_message(name, existing)
                )
                continue
            try:
                await ctx.client.create(WUKONGS, self._member_body(wukong_set, name))
            except AlreadyExists:
                # Most likely ours, from an attempt the cache does not show yet; if
                # someone else's, the next reconcile sees it and skips it.
                existed += 1
                continue
            except Invalid as exc:
                problem = ("MemberRejected", f"the API server refused member {name}: {exc.message}")
                break
            created.append(name)
        if created:
            await self._event(
                ctx,
                wukong_set,
                "Normal",
                "ScaledOut",
                f"created {', '.join(created)} (replicas {wukong_set.spec.replicas})",
            )
        if problem is not None:
            await self._event(ctx, wukong_set, "Warning", *problem)
        return problem

    def _member_body(self, wukong_set: WukongSetView, name: str) -> Object:
        return {
            "apiVersion": WUKONGS.api_version,
            "kind": WUKONGS.kind,
            "metadata": {
                "name": name,
                "namespace": wukong_set.namespace,
                "labels": _member_labels(wukong_set),
                "ownerReferences": [controller_reference(wukong_set.body, resource=WUKONGSETS)],
            },
            "spec": _template_spec(wukong_set),
        }

    # -- rollout ---------------------------------------------------------------------

    def _forget_caught_up(self, wukong_set: WukongSetView, members: list[Object]) -> None:
        """Drop the updates the cache shows now (or whose member is no longer counted)."""
        written = self._updating.pop(wukong_set.uid, {})
        generations = {w["metadata"]["uid"]: w["metadata"].get("generation") or 0 for w in members}
        pending = {
            uid: generation
            for uid, generation in written.items()
            if uid in generations and generations[uid] < generation
        }
        if pending:
            self._updating[wukong_set.uid] = pending

    def _still_refused(self, wukong_set: WukongSetView, members: list[Object]) -> set[str]:
        """Members whose refused update would be the same again (neither changed)."""
        refused = self._refused.pop(wukong_set.uid, {})
        kept = {
            w["metadata"]["uid"]: refused[w["metadata"]["uid"]]
            for w in members
            if refused.get(w["metadata"]["uid"])
            == (w["metadata"].get("resourceVersion"), wukong_set.template_hash)
        }
        if kept:
            self._refused[wukong_set.uid] = kept
        return {w["metadata"]["name"] for w in members if w["metadata"]["uid"] in kept}

    async def _roll_out(
        self,
        ctx: ReconcileContext,
        wukong_set: WukongSetView,
        members: list[Object],
        rollout: Rollout,
    ) -> dict[str, Object]:
        """Bring `rollout.update` to the template; the members as written, by name."""
        by_name = {w["metadata"]["name"]: w for w in members}
        written: dict[str, Object] = {}
        done: list[str] = []
        for member in rollout.update:
            wukong = by_name[member.name]
            try:
                written[member.name] = await ctx.client.patch(
                    WUKONGS,
                    member.name,
                    _update_patch(wukong_set, wukong),
                    namespace=wukong_set.namespace,
                )
            except (NotFound, Conflict):
                continue  # deleted or changed meanwhile: its watch event brings the next look
            except ApiError as exc:
                if not isinstance(exc, Invalid) and exc.status != FORBIDDEN:
                    raise
                # A certain refusal (validation, admission): asking again would only repeat it.
                key = (wukong["metadata"].get("resourceVersion") or "", wukong_set.template_hash)
                self._refused.setdefault(wukong_set.uid, {})[member.uid] = key
                message = (
                    f"the API server refused to bring {member.name} ({member.outdated}) to "
                    f"template {wukong_set.template_hash}: {exc.message}; it stays as it is "
                    "until it or the template changes"
                )
                await self._event(ctx, wukong_set, "Warning", "UpdateRefused", message)
                continue
            generation = written[member.name]["metadata"].get("generation") or 0
            self._updating.setdefault(wukong_set.uid, {})[member.uid] = generation
            done.append(f"{member.name} ({member.outdated})")
        if done:
            message = f"updating {', '.join(done)} to template {wukong_set.template_hash}"
            waiting = [m for m in rollout.waiting if m.migrating is None]
            if waiting:
                message += (
                    f"; waiting, at most {wukong_set.spec.max_unavailable} unavailable: "
                    + ", ".join(m.name for m in _by_ordinal(waiting))
                )
            await self._event(ctx, wukong_set, "Normal", "UpdatingMembers", message)
        return written

    async def _scale_in(
        self, ctx: ReconcileContext, wukong_set: WukongSetView, scale_in: ScaleIn
    ) -> None:
        for member in scale_in.remove:
            try:
                await ctx.client.delete(
                    WUKONGS,
                    member.name,
                    namespace=wukong_set.namespace,
                    precondition_uid=member.uid,
                )
            except NotFound:
                pass  # gone already
            self._removing.setdefault(wukong_set.uid, set()).add(member.uid)
        replicas = wukong_set.spec.replicas
        skipped = "; ".join(f"{m.name} ({m.migrating})" for m in scale_in.skipped)
        if scale_in.remove:
            chosen = ", ".join(
                f"{m.name} ({'newest' if m.ready else 'not ready'})" for m in scale_in.remove
            )
            message = f"removing {chosen} (replicas {replicas})"
            if skipped:
                message += f"; skipped, migrating: {skipped}"
            await self._event(ctx, wukong_set, "Normal", "ScaledIn", message)
        if scale_in.short_by:
            message = (
                f"{scale_in.short_by} more member(s) must go to reach replicas {replicas}, "
                f"but the others are migrating: {skipped}; waiting for their migrations to end"
            )
            await self._event(ctx, wukong_set, "Warning", SCALING_BLOCKED, message)

    def _status(
        self,
        wukong_set: WukongSetView,
        members: list[Object],
        problem: tuple[str, str] | None,
        rollout: Rollout | None = None,
    ) -> dict[str, Any]:
        views = [self._member(wukong_set, w) for w in members]
        ready = sum(1 for m in views if m.ready)
        migrating = [m for m in views if m.migrating is not None]
        wanted = wukong_set.spec.replicas
        if problem is not None:
            ready_update = ConditionUpdate(READY, False, *problem)
        elif len(views) < wanted:
            ready_update = ConditionUpdate(
                READY, False, "ScalingOut", f"{len(views)} of {wanted} members"
            )
        elif len(views) > wanted:
            ready_update = ConditionUpdate(
                READY, False, "ScalingIn", f"{len(views)} members, {wanted} wanted"
            )
        elif ready < wanted:
            ready_update = ConditionUpdate(
                READY, False, "MembersNotReady", f"{ready} of {wanted} members ready"
            )
        else:
            ready_update = ConditionUpdate(READY, True, "AllReady", f"{ready} members ready")
        blocked = list(migrating) if len(views) > wanted else []
        if blocked:
            names = ", ".join(m.name for m in _by_ordinal(blocked))
            blocked_update = ConditionUpdate(
                SCALING_BLOCKED,
                True,
                "MembersMigrating",
                f"{len(views) - wanted} more member(s) must go, but these are migrating: {names}",
            )
        else:
            blocked_update = ConditionUpdate(SCALING_BLOCKED, False, "NotBlocked", "")
        outdated = [m for m in views if m.outdated is not None]
        updating = sorted(self._updating.get(wukong_set.uid, {}))
        if outdated or updating:
            names = ", ".join(f"{m.name} ({m.outdated})" for m in _by_ordinal(outdated))
            message = f"{len(views) - len(outdated)} of {len(views)} members up to date"
            if names:
                message += f"; out of date: {names}"
            if rollout is not None and rollout.unavailable:
                message += (
                    f"; {rollout.unavailable} unavailable "
                    f"(at most {wukong_set.spec.max_unavailable})"
                )
            rolling_update = ConditionUpdate(ROLLING_UPDATE, True, "MembersOutOfDate", message)
        else:
            rolling_update = ConditionUpdate(
                ROLLING_UPDATE, False, "MembersUpToDate", "every member follows the template"
            )
        return {
            "replicas": len(views),
            "readyReplicas": ready,
            "migratingReplicas": len(migrating),
            "availableReplicas": sum(1 for m in views if m.available),
            "updatedReplicas": len(views) - len(outdated),
            "templateHash": wukong_set.template_hash,
            "observedGeneration": wukong_set.generation,
            "selector": wukong_set.selector,
            "conditions": updated_conditions(
                wukong_set.status.conditions or (),
                [ready_update, blocked_update, rolling_update],
                observed_generation=wukong_set.generation,
            ),
        }

    # -- deletion --------------------------------------------------------------------

    async def _delete(self, ctx: ReconcileContext, wukong_set: WukongSetView) -> Result:
        # A set being deleted is scaled and rolled out no more: its bookkeeping goes.
        self._removing.pop(wukong_set.uid, None)
        self._updating.pop(wukong_set.uid, None)
        self._refused.pop(wukong_set.uid, None)
        if SET_FINALIZER not in wukong_set.finalizers:
            return Result()
        members = self._members(wukong_set)
        deleted = []
        for member in members:
            metadata = member["metadata"]
            if metadata.get("deletionTimestamp"):
                continue  # its own finalizer is at work
            try:
                await ctx.client.delete(
                    WUKONGS,
                    metadata["name"],
                    namespace=wukong_set.namespace,
                    precondition_uid=metadata["uid"],
                )
            except NotFound:
                continue
            deleted.append(metadata["name"])
        if deleted:
            await self._event(
                ctx, wukong_set, "Normal", "DeletingMembers", f"deleting {', '.join(deleted)}"
            )
        if members:
            # Each member's deletion (and, at last, its disappearance) is a watch event.
            return Result()
        await remove_finalizer(ctx, WUKONGSETS, wukong_set, SET_FINALIZER)
        ctx.logger.info("finalized %s: no member left", ctx.request)
        return Result()

    # -- writes ----------------------------------------------------------------------

    async def _add_finalizer(
        self, ctx: ReconcileContext, wukong_set: WukongSetView
    ) -> WukongSetView:
        return parse_wukongset(await add_finalizer(ctx, WUKONGSETS, wukong_set, SET_FINALIZER))

    async def _write_status(
        self, ctx: ReconcileContext, wukong_set: WukongSetView, status: dict[str, Any]
    ) -> None:
        await write_status(ctx, WUKONGSETS, wukong_set, status)

    async def _event(
        self,
        ctx: ReconcileContext,
        wukong_set: WukongSetView,
        type: EventType,
        reason: str,
        message: str,
    ) -> None:
        await self._recorder.record(
            ctx.client, wukong_set.body, type=type, reason=reason, message=message
        )


def _by_ordinal(members: Iterable[Member]) -> list[Member]:
    return sorted(members, key=lambda m: m.ordinal)


def _member_labels(wukong_set: WukongSetView) -> dict[str, str]:
    return {
        **wukong_set.spec.template.metadata.labels,
        WUKONGSET_LABEL: wukong_set.name,
        TEMPLATE_HASH_LABEL: wukong_set.template_hash,
    }


def _template_spec(wukong_set: WukongSetView) -> Object:
    """The template's spec as stored (defaulted by the API server)."""
    spec: Object = wukong_set.body["spec"]["template"].get("spec") or {}
    return spec


def _outdated(wukong_set: WukongSetView, wukong: Object) -> str | None:
    """Why `wukong` differs from the set's template, None when it does not."""
    if (wukong["metadata"].get("labels") or {}).get(TEMPLATE_HASH_LABEL) != (
        wukong_set.template_hash
    ):
        return TEMPLATE_CHANGED
    if from_json(WukongSpec, wukong.get("spec")) != wukong_set.spec.template.spec:
        return EDITED_BY_HAND
    return None


def _update_patch(wukong_set: WukongSetView, wukong: Object) -> Object:
    """The template's labels and spec on `wukong`, a field it has beyond them removed;
    refused if the member changed since it was read."""
    spec = _template_spec(wukong_set)
    extra = {key: None for key in wukong.get("spec") or {} if key not in spec}
    return {
        "metadata": {
            "labels": _member_labels(wukong_set),
            "resourceVersion": wukong["metadata"].get("resourceVersion"),
        },
        "spec": {**spec, **extra},
    }


def _conflict_message(name: str, existing: Object) -> str:
    return (
        f"Wukong {name} exists and is not a member of this set (uid "
        f"{existing['metadata'].get('uid')}); it is never adopted or changed: the set uses "
        "the next free ordinal"
    )


def set_replicas(wukongsets: Store) -> SetSource:
    """Every cached set's counts: desired from its spec, the rest from the status last
    written (`wukong_wukongset_replicas`)."""

    def read() -> list[SetReplicas]:
        found = []
        for stored in wukongsets.list_objects():
            status = stored.get("status") or {}
            counts = {
                "desired": (stored.get("spec") or {}).get("replicas") or 0,
                "current": status.get("replicas") or 0,
                "ready": status.get("readyReplicas") or 0,
                "available": status.get("availableReplicas") or 0,
                "updated": status.get("updatedReplicas") or 0,
                "migrating": status.get("migratingReplicas") or 0,
            }
            metadata = stored["metadata"]
            found.append(SetReplicas(metadata.get("namespace") or "", metadata["name"], counts))
        return found

    return read


DEFAULT_OPTIONS = ControllerOptions(max_concurrent_reconciles=2)


def add_wukongset_controller(
    manager: Manager,
    *,
    options: ControllerOptions = DEFAULT_OPTIONS,
    replicas: WukongSetReplicasCollector | None = None,
) -> Controller:
    """Register the WukongSet controller with `manager`; its sets' counts are served by
    `replicas` (the metrics registry's collector) when given."""
    if replicas is not None:
        replicas.track(set_replicas(manager.informer(WUKONGSETS).store))
    wukongs = manager.informer(WUKONGS).store
    wukongs.add_index(MEMBERS_BY_SET, set_uid_key)
    migrations = manager.informer(VIRTUAL_MACHINE_INSTANCE_MIGRATIONS).store
    migrations.add_index(MIGRATIONS_BY_VMI, migration_vmi_key)
    controller = Controller(
        name=CONTROLLER_NAME,
        reconciler=WukongSetReconciler(
            wukongsets=manager.informer(WUKONGSETS).store,
            wukongs=wukongs,
            migrations=migrations,
            recorder=EventRecorder(component=EVENT_COMPONENT),
        ),
        primary=WUKONGSETS,
        # A member's every change (status, deletion, disappearance) reaches its set.
        owns=[WUKONGS],
        watches=[Watch(VIRTUAL_MACHINE_INSTANCE_MIGRATIONS, set_of_migration(wukongs))],
        options=options,
    )
    manager.add(controller)
    return controller
