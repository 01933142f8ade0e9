"""The command line takes the flag names controller-runtime users type, and the old ones."""

import logging
from pathlib import Path

import pytest

from wukong.cli import build_parser, main


def test_run_takes_controller_runtimes_flag_names() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--metrics-bind-address",
            ":9090",
            "--health-probe-bind-address",
            ":9091",
            "--no-leader-elect",
        ]
    )
    assert (args.metrics_bind, args.health_bind, args.leader_elect) == (":9090", ":9091", False)


def test_run_keeps_its_earlier_flag_names() -> None:
    args = build_parser().parse_args(
        ["run", "--metrics-bind", "0", "--health-bind", "127.0.0.1:1", "--leader-elect"]
    )
    assert (args.metrics_bind, args.health_bind, args.leader_elect) == ("0", "127.0.0.1:1", True)


def test_run_defaults_are_kubebuilders_ports() -> None:
    args = build_parser().parse_args(["run"])
    assert (args.metrics_bind, args.health_bind, args.leader_elect) == (":8080", ":8081", True)


@pytest.mark.parametrize("flag", ["--metrics-bind-address", "--metrics-bind"])
def test_agent_takes_both_metrics_flag_names(flag: str) -> None:
    args = build_parser().parse_args(["agent", flag, ":7000"])
    assert args.metrics_bind == ":7000"
    assert build_parser().parse_args(["agent"]).metrics_bind == ":9464"


@pytest.mark.parametrize(
    ("argv", "level", "log_format"),
    [
        (["run"], "info", "console"),
        (["--log-level", "debug", "run"], "debug", "console"),
        (["run", "--log-level", "debug", "--log-format", "json"], "debug", "json"),
        # After the command wins; before it is kept when not repeated after it.
        (["--log-level", "error", "run", "--log-level", "debug"], "debug", "console"),
        (["--log-format", "json", "run", "--log-level", "warning"], "warning", "json"),
        (["agent", "--log-level", "debug"], "debug", "console"),
        (["dev", "up", "--log-level", "debug"], "debug", "console"),
    ],
)
def test_logging_flags_go_before_or_after_the_command(
    argv: list[str], level: str, log_format: str
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, log_format)


def test_log_level_after_the_command_configures_logging(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        code = main(
            ["dev", "webhook-cert-dir", "--state-dir", str(tmp_path), "--log-level", "debug"]
        )
        assert code == 0
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_a_bad_log_level_after_the_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "--log-level", "loud"])
    assert exited.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err
