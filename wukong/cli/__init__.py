"""The `wukong` command: one module per command group.

- `run`: the operator (`wukong run`);
- `agent`: the node agent, its live view and its preStop hook (`wukong agent`,
  `wukong trace`, `wukong detach`);
- `dev`: the real local control plane and its simulator (`wukong dev ...`);
- `demo`: the demo and the cancel-storm drill (`wukong demo`);
- `diagnose`: the cause of a live incident, from Prometheus and Jaeger (`wukong diagnose`);
- `dashboards`: dashboards and alert rules as files (`wukong dashboards render`);
- `deploy`: the Helm chart's generated files (`wukong deploy render`).

Each module has `add_commands(commands)`, which adds its parsers and sets a
`handler(args) -> exit status` on each. This module adds the global flags,
configures logging and runs the handler.

What `pip install wukong-operator` installs is exactly what `wukong run` and
`wukong agent` need. The development commands (dev, demo, diagnose, dashboards, deploy)
may also need the `devtools` extra (the Grafana SDK),
so their modules import what they drive only when a command runs, and a missing
module then becomes one line saying which extra to install.

Errors a user can act on are printed as one line (`wukong: error: ...`) with
exit status 1, never as a traceback.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from wukong import __version__
from wukong.cli import agent, dashboards, demo, deploy, dev, diagnose, run
from wukong.errors import UserError
from wukong.tracing.logs import configure_logging

_COMMAND_GROUPS = (run, demo, diagnose, deploy, agent, dev, dashboards)
# The groups whose commands need the development extra.
_DEVELOPMENT_GROUPS = (demo, diagnose, deploy, dev, dashboards)
DEVELOPMENT_EXTRA = "devtools"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wukong",
        description="Wukong: a Kubernetes operator for VMs that explains every reconcile.",
    )
    parser.add_argument("--version", action="version", version=f"wukong {__version__}")
    _add_logging_flags(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _COMMAND_GROUPS:
        before = set(commands.choices)
        group.add_commands(commands)
        if group in _DEVELOPMENT_GROUPS:
            for name in commands.choices.keys() - before:
                commands.choices[name].set_defaults(extra=DEVELOPMENT_EXTRA)
    for command in _subcommands(parser):
        _add_logging_flags(command, defaults=False)
    return parser


def _add_logging_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--log-format and --log-level, before the command or after it (`wukong run
    --log-level debug`, as controller-runtime users type it). After it they have no
    default, so a flag given before the command is not reset."""
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default="console" if defaults else argparse.SUPPRESS,
        help="console: readable lines for people; json: one object per line for log "
        "pipelines. Both carry trace_id/span_id for lines about a traced reconcile.",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info" if defaults else argparse.SUPPRESS,
        help="cancelled reconciles are logged at debug, with their reason (default: info)",
    )


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command's parser below `parser`, at any depth (`run`, `dev`, `dev up`...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                found += [command, *_subcommands(command)]
    return found


def _missing_extra(exc: ModuleNotFoundError, args: argparse.Namespace) -> str | None:
    """The one-line error for a development command run without its extra, else None."""
    extra: str | None = getattr(args, "extra", None)
    if extra is None:
        return None
    return (
        f"`wukong {args.command}` needs the {extra} extra ({exc}): "
        f"pip install 'wukong-operator[{extra}]'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(log_format=args.log_format, level=getattr(logging, args.log_level.upper()))
    try:
        code: int = args.handler(args)
    except UserError as exc:
        print(f"wukong: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        message = _missing_extra(exc, args)
        if message is None:
            raise
        print(f"wukong: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
