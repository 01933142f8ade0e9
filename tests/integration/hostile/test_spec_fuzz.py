"""Generated Wukong specs, valid and not, applied to the real API server with the operator on.

Hypothesis draws a few hundred Wukongs around the schema's edges (names at
and past their limits, quantities and garbage, both, neither or a missing
network source, classes that exist or not, images that import, fail or have
no scheme). The API server takes or refuses each; what it takes must:
- end Running, stopped as asked, or with a named problem on `Ready` within a
  bound (never stuck in a generic state);
- be deletable within 60 s;
and the operator, all along, never crashes and never logs an ERROR or a
traceback: bad input is a condition, not a failure.

CI runs a fixed seed and `WUKONG_FUZZ_SPECS` examples (200 by default); set
it higher for a longer run.
"""

import logging
import os
import string
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.wukong_harness import StartWukong, WukongRun, condition
from tests.polling import eventually
from wukong.devcluster.simulator import SimulationConfig
from wukong.operator.api import WUKONGS
from wukong.runtime import ApiError, Invalid, NotFound, Object

EXAMPLES = int(os.environ.get("WUKONG_FUZZ_SPECS", "200"))
FAILING_IMAGE = "docker://registry.example/broken:1"
# Reasons of a Wukong that is settled without running: a problem, or stopped.
_GENERIC = {"Reconciling", "WaitingForVolumes", "VirtualMachineStarting", "ReconcileError"}

_alnum = string.ascii_lowercase + string.digits
_child = st.text(_alnum, min_size=1, max_size=10)
_name = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?", fullmatch=True)
_size = st.sampled_from(["1Gi", "512Mi", "2Gi", "1", "1.5Gi", "1e3"])
_config = st.sampled_from(
    ['{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-f"}', '{"plugins": []}']
)
_network = st.one_of(
    st.fixed_dictionaries({"name": _child, "nadName": st.just("shared")}),
    st.fixed_dictionaries({"name": _child, "config": _config}),
)
_disk = st.fixed_dictionaries(
    {"name": _child, "size": _size},
    optional={
        "storageClassName": st.sampled_from(["standard", "local-wait"]),
        "image": st.sampled_from(
            ["docker://registry.example/os:1", "http://images.example/os.img"]
        ),
    },
)
_valid_spec = st.fixed_dictionaries(
    {},
    optional={
        "cpu": st.integers(min_value=1, max_value=64),
        "memory": _size,
        "running": st.booleans(),
        "networks": st.lists(_network, max_size=3, unique_by=lambda n: n["name"]),
        "disks": st.lists(_disk, max_size=3, unique_by=lambda d: d["name"]),
    },
)
_bad_quantity = st.one_of(
    st.sampled_from(["0", "-1Gi", "Gi", "1Xi", "", "1.5.5", "1Gi "]), st.text(max_size=8)
)
_bad_name = st.one_of(
    st.sampled_from(["UPPER", "-lead", "trail-", "dot.ted", "b" * 64, "a" * 62]),
    st.text(max_size=12),
)
# One field made wrong, or odd at the edge: (where, a strategy of the wrong value).
_MUTATIONS: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("name", _bad_name),
    ("cpu", st.sampled_from([0, -1, 65, 1000])),
    ("memory", _bad_quantity),
    ("disk.size", _bad_quantity),
    ("disk.name", st.one_of(_bad_name, st.just("os-disk"))),
    ("disk.storageClassName", st.sampled_from(["no-such-class", "", "UPPER"])),
    ("disk.image", st.sampled_from([FAILING_IMAGE, "ftp://images.example/os.img", "", "x"])),
    ("network.name", st.one_of(_bad_name, st.just("multus-net"))),
    ("network.nadName", st.sampled_from(["missing", "x" * 254, ""])),
    ("network.config", st.sampled_from(["not json", "[]", "{}", '{"type": 1}', "null", ""])),
    ("network.both", _config),
]


@st.composite
def _wukong(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid Wukong, or one with a single field made wrong (half of each)."""
    name, spec = draw(_name), draw(_valid_spec)
    if draw(st.booleans()):
        return name, spec
    where, value = draw(
        st.sampled_from(_MUTATIONS).flatmap(lambda m: st.tuples(st.just(m[0]), m[1]))
    )
    kind, _, field = where.partition(".")
    if kind == "name":
        return value, spec
    if not field:
        return name, {**spec, kind: value}
    items = list(spec.get(f"{kind}s") or []) or [draw(_disk if kind == "disk" else _network)]
    item = dict(items[0])
    if field == "both":  # a network with both sources
        item.update(nadName="shared", config=value)
    else:
        item[field] = value
    return name, {**spec, f"{kind}s": [item, *items[1:]]}


def _generated(count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` examples (fewer if the space runs out), the same on every run."""
    drawn: list[tuple[str, dict[str, Any]]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(_wukong())
    def collect(example: tuple[str, dict[str, Any]]) -> None:
        drawn.append(example)

    collect()
    return drawn


def _settled(obj: Object) -> bool:
    status = obj.get("status") or {}
    ready = condition(obj, "Ready")
    if status.get("phase") == "Running":
        return True
    return ready.get("status") == "False" and ready.get("reason") not in _GENERIC | {None}


async def _create_all(run: WukongRun, examples: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Create each example under a unique name suffix; the names the server took."""
    taken: list[str] = []
    for index, (name, spec) in enumerate(examples):
        # Unique per example, keeping the drawn name's shape and length.
        unique = f"{name[:-4]}{index:04d}" if len(name) > 4 else f"{name}{index}"
        body = {
            "apiVersion": WUKONGS.api_version,
            "kind": WUKONGS.kind,
            "metadata": {"name": unique, "namespace": run.namespace},
            "spec": spec,
        }
        try:
            await run.client.create(WUKONGS, body)
        except Invalid:
            continue  # refused with a reason: what admission is for
        except ApiError as error:
            # Anything but a validation answer (a 400 for a name the server cannot
            # parse as a resource name) is still a refusal, never a server error.
            assert error.status < 500, f"{unique}: {error}"
            continue
        taken.append(unique)
    return taken


@pytest.mark.timeout(900)
async def test_generated_specs_settle_delete_and_never_break_the_operator(
    start_wukong: StartWukong, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wukong")
    run = await start_wukong(simulation=SimulationConfig(failing_images=frozenset({FAILING_IMAGE})))
    await run.create_nad("shared")
    examples = _generated(EXAMPLES)
    assert len(examples) >= min(EXAMPLES, 100), len(examples)
    taken = await _create_all(run, examples)
    # Both kinds must be exercised, or the generator has drifted off the schema.
    assert 0 < len(taken) < len(examples), (len(taken), len(examples))

    unsettled: dict[str, Any] = {}

    async def all_settled() -> bool:
        unsettled.clear()
        for name in taken:
            obj = await run.get(name)
            if not _settled(obj):
                unsettled[name] = obj.get("status")
        return not unsettled

    try:
        await eventually(all_settled, timeout=120, interval=1.0, what="every Wukong to settle")
    except AssertionError as error:
        raise AssertionError(f"{error}: {list(unsettled.items())[:3]}") from None
    outcomes = Counter([condition(await run.get(name), "Ready").get("reason") for name in taken])
    # Running ones and named problems alike, or the generator missed half the space.
    assert outcomes["Running"] and len(outcomes) > 2, outcomes

    for name in taken:
        await run.client.delete(WUKONGS, name, namespace=run.namespace)

    async def all_gone() -> bool:
        for name in taken:
            try:
                await run.get(name)
                return False
            except NotFound:
                pass
        return True

    await eventually(all_gone, timeout=60, interval=0.5, what="every Wukong to be deleted")
    assert run.operator_task is not None and not run.operator_task.done()
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud[:5]]
