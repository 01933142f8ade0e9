"""A process the agent finds but cannot trace is counted by reason, never skipped in silence."""

import subprocess
from pathlib import Path

import pytest

from wukong.ebpf import python_probe
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery


def _untraced(agent: Agent, runtime: str, reason: str) -> float | None:
    return agent.registry.get_sample_value(
        "wukong_node_untraced_processes_total",
        {"node": agent.node, "runtime": runtime, "reason": reason},
    )


def test_a_probe_that_fails_to_load_is_counted_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "wukong_operator_stand_in.py"
    script.write_text("import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n")
    proc = subprocess.Popen(
        ["/usr/bin/python3", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    notices: list[str] = []
    agent = Agent(node="n", discovery=Discovery(pids={proc.pid}), on_notice=notices.append)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        assert _untraced(agent, "python", "probe_failed") == 0  # there from the start
        # A program the kernel's verifier (here: the compiler) refuses.
        monkeypatch.setattr(python_probe, "SOURCE", b"int on_audit(struct pt_regs *ctx) {")
        agent.step()
        assert proc.pid not in agent.probes and proc.pid in agent.untraceable
        assert _untraced(agent, "python", "probe_failed") == 1
        assert agent.untraced_by_reason == {"probe_failed": 1}
        assert any(str(proc.pid) in notice and "failed" in notice for notice in notices), notices
        agent.step()  # reported once, not on every scan
        assert _untraced(agent, "python", "probe_failed") == 1
    finally:
        agent.close()
        proc.kill()
        proc.wait()
