"""Go binaries built with `-ldflags="-s -w"` (no `.symtab`) are traced through their pclntab.

The scripted program (programs/cancels) and the benchmark's controller-runtime
peer are built twice, with and without symbols (the program also as PIE and
through the host linker, each way). The stripped build must give
the agent the same functions and context globals at the same addresses as
the symbol table of the other, be counted exactly, and the controller be
found with its probe on the store site. A stripped binary whose pclntab
cannot be read is reported with the reason.
"""

import asyncio
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.ebpf.agent_helpers import Running, cancels_program
from tests.polling import wait_until
from wukong.devcluster import ControlPlane, binaries
from wukong.ebpf import discovery
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.ebpf.elf import CANCEL_SYMBOL, CANCELED_SYMBOL, DEADLINE_SYMBOL, read_binary
from wukong.ebpf.go_cancel_site import STORE_SYMBOL
from wukong.ebpf.go_probe import GoProbe
from wukong.ebpf.records import Cancellation

PEER = Path(__file__).resolve().parents[2] / "bench/peers/controller-runtime"
STRIP = "-ldflags=-s -w"
PIE = "-buildmode=pie"
GO_FUNC_ALIGN = 32  # amd64: a function's pclntab size adds at most its padding


# (flags of the build with symbols, of the stripped one). The host linker
# (cgo's external linking) puts C start-up code before the Go text.
BUILDS = {
    "exec": ((), (STRIP,)),
    "pie": ((PIE,), (PIE, STRIP)),
    "external": (("-ldflags=-linkmode=external",), ("-ldflags=-linkmode=external -s -w",)),
    "external-pie": (
        (PIE, "-ldflags=-linkmode=external"),
        (PIE, "-ldflags=-linkmode=external -s -w"),
    ),
}


def _needs_a_linker(build: str) -> None:
    if build.startswith("external") and shutil.which("gcc") is None:
        pytest.skip("external linking needs gcc")


@pytest.mark.parametrize("build", BUILDS)
def test_the_pclntab_gives_the_symbol_tables_addresses(build: str) -> None:
    _needs_a_linker(build)
    with_symbols, without = BUILDS[build]
    full = read_binary(cancels_program(*with_symbols))
    stripped = read_binary(cancels_program(*without))
    assert not full.stripped and stripped.stripped and stripped.symbols_problem is None
    assert stripped.pie is full.pie is build.endswith("pie")
    if build.startswith("external"):  # what the moduledata lookup is for
        with open(stripped.path, "rb") as stream:
            text = ELFFile(stream).get_section_by_name(".text")["sh_addr"]
        assert text < min(address for address, _ in stripped.symbols.values())
    for name in (CANCEL_SYMBOL, STORE_SYMBOL, CANCELED_SYMBOL, DEADLINE_SYMBOL):
        assert stripped.symbols[name][0] == full.symbols[name][0], name
    assert (
        stripped.symbols[CANCELED_SYMBOL]
        == full.symbols[CANCELED_SYMBOL]
        == (
            full.symbols[CANCELED_SYMBOL][0],
            16,
        )
    )
    assert stripped.symbols[DEADLINE_SYMBOL] == full.symbols[DEADLINE_SYMBOL]
    # Every Go function (package-qualified: a C global may share an assembly
    # function's bare name) the two name alike is at the same address; a size
    # runs on to the next function, over the alignment padding only.
    common = {name for name in stripped.symbols.keys() & full.symbols.keys() if "." in name}
    assert len(common) > 0.9 * len(stripped.symbols), len(common)
    for name in common:
        (address, size), (expected, expected_size) = stripped.symbols[name], full.symbols[name]
        assert address == expected, name
        assert 0 <= size - expected_size < GO_FUNC_ALIGN, (name, size, expected_size)
    # What the agent names from a stack: the same function, anywhere in its body.
    for name in (CANCEL_SYMBOL, "main.cancelExplicitly", "context.WithDeadlineCause.func2"):
        start, size = full.symbols[name]
        for address in (start, start + size // 2, start + size - 1):
            assert stripped.symbolize(address) == full.symbolize(address) == name


def _run_script(proc: "subprocess.Popen[str]") -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


@pytest.mark.parametrize("build", BUILDS)
def test_a_stripped_program_is_counted_exactly(program: object, build: str) -> None:
    _needs_a_linker(build)
    proc = program(  # type: ignore[operator]
        cancels_program(*BUILDS[build][1]),
        "-deadlines=2",
        "-deadline-causes=1",
        "-cancels=3",
        "-causes=2",
        "-children=1",
        "-noops=5",
    )
    seen: list[Cancellation] = []
    notices: list[str] = []
    agent = Agent(
        node="n",
        discovery=Discovery(pids={proc.pid}),
        on_cancel=seen.append,
        on_notice=notices.append,
    )
    with Running(agent) as running:
        wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
        probe = running.agent.probes[proc.pid]
        assert isinstance(probe, GoProbe) and probe.site.function == "on_store", probe.site
        assert probe.binary.stripped
        _run_script(proc)
        wait_until(lambda: sum(c.count for c in seen) >= 13, "13 cancellations")
        time.sleep(0.5)  # nothing more may arrive
    kinds: Counter[tuple[str, str, str, bool]] = Counter()
    for c in seen:
        kinds[(c.error, c.cause, c.caller, c.root)] += c.count
    assert kinds == {
        ("deadline_exceeded", "", "context.WithDeadlineCause.func2", True): 2,
        ("deadline_exceeded", "", "context.WithDeadlineCause.func2", False): 2,  # children
        ("deadline_exceeded", "scripted deadline", "context.WithDeadlineCause.func2", True): 1,
        ("canceled", "", "main.cancelExplicitly", True): 3,
        ("canceled", "scripted cause", "main.cancelWithCause", True): 2,
        ("canceled", "", "main.cancelParent", True): 1,
        ("canceled", "", "main.cancelParent", False): 1,  # the child, by propagation
        ("canceled", "", "main.cancelAgain", True): 1,  # and none of its 5 no-ops
    }, kinds
    assert all(c.stack[0] == CANCEL_SYMBOL for c in seen)
    assert agent.lost == 0


def test_an_unreadable_pclntab_is_reported_with_the_reason(
    program: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A table this reader refuses: the magic of a Go release before 1.18.
    stripped = cancels_program(STRIP)
    with stripped.open("rb") as stream:
        offset = ELFFile(stream).get_section_by_name(".gopclntab")["sh_offset"]
    old = tmp_path / "old-pclntab"
    data = bytearray(stripped.read_bytes())
    data[offset : offset + 4] = (0xFFFFFFFA).to_bytes(4, "little")
    old.write_bytes(bytes(data))
    binary = read_binary(old)
    assert binary.symbols_problem is not None and "before 1.18" in binary.symbols_problem
    assert CANCEL_SYMBOL not in binary.symbols

    # A running process (whose runtime needs its table intact) stands in for it.
    proc = program(stripped)  # type: ignore[operator]
    monkeypatch.setattr(discovery, "read_binary", lambda _, **kw: read_binary(old, **kw))
    notices: list[str] = []
    agent = Agent(node="n", discovery=Discovery(pids={proc.pid}), on_notice=notices.append)
    try:
        agent.step()
    finally:
        agent.close()
    assert proc.pid not in agent.probes
    assert any(
        "stripped Go binary" in notice and "before 1.18" in notice and str(proc.pid) in notice
        for notice in notices
    ), notices
    untraced = {"node": "n", "runtime": "go", "reason": "unreadable_symbols"}
    assert agent.registry.get_sample_value("wukong_node_untraced_processes_total", untraced) == 1


async def test_a_stripped_controller_runtime_peer_is_found_and_probed_at_its_store(
    control_plane: ControlPlane, namespace: str
) -> None:
    full = read_binary(
        binaries.go_program(PEER, name="bench-controller-runtime-peer", progress=print)
    )
    path = binaries.go_program(
        PEER, name="bench-controller-runtime-peer", progress=print, build_flags=(STRIP,)
    )
    controller = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
        [str(path), f"--kubeconfig={control_plane.kubeconfig}", f"--namespace={namespace}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert controller.stdout is not None
        assert '"ready"' in controller.stdout.readline()
        scanner = Discovery(controller_runtime_only=True)
        target = scanner.scan()[controller.pid]
        assert target.traceable, target.problem
        binary = target.binary
        assert binary is not None and binary.stripped and binary.uses_controller_runtime
        for name in (CANCEL_SYMBOL, STORE_SYMBOL, CANCELED_SYMBOL, DEADLINE_SYMBOL):
            assert binary.symbols[name][0] == full.symbols[name][0], name
        seen: list[Cancellation] = []
        agent = Agent(node="test-node", discovery=scanner, on_cancel=seen.append)
        with Running(agent) as running:
            # Compiling the probe (clang, in BCC) takes seconds, more on a busy machine.
            wait_until(
                lambda: controller.pid in running.agent.probes, "the agent to attach", timeout=90
            )
            probe = running.agent.probes[controller.pid]
            assert isinstance(probe, GoProbe) and probe.site.function == "on_store", probe.site
            controller.send_signal(signal.SIGTERM)
            await asyncio.to_thread(controller.wait, 30)
            await asyncio.sleep(0.5)
    finally:
        controller.kill()
        controller.wait()
    # Its manager cancels its runnables at shutdown: named from the pclntab.
    callers = {c.caller for c in seen if c.pid == controller.pid}
    assert any(caller.startswith("sigs.k8s.io/controller-runtime") for caller in callers), callers
