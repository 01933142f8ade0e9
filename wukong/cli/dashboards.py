"""`wukong dashboards render`: write the Grafana dashboards and the alert rules.

Development only: dashboards are built with the Grafana SDK, which comes with
the `devtools` extra, so it is imported when the command runs. It also writes
the dashboards into the package (`wukong.dashboards.shipped`), for `wukong
diagnose` on an install without the extra.
"""

import argparse
import sys
from pathlib import Path

from wukong.dashboards.shipped import RENDERED_DIR


def _render(args: argparse.Namespace) -> int:
    from wukong.dashboards.alerts import ALERT_RULES_FILE, render_alert_rules
    from wukong.dashboards.render import render_dashboards

    dashboards = render_dashboards()
    writes: list[tuple[Path, dict[str, str]]] = [
        (args.out, {**dashboards, ALERT_RULES_FILE: render_alert_rules()}),
        (args.package_copy, dashboards),
    ]
    for out, files in writes:
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                path = out / name
                path.write_text(text, encoding="utf-8")
                print(path)
        except OSError as exc:
            print(f"wukong: error: cannot write dashboards to {out}: {exc}", file=sys.stderr)
            return 1
    return 0


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    dashboards = commands.add_parser(
        "dashboards",
        help="render the Grafana dashboards and Prometheus alert rules",
        description="Wukong's Grafana dashboards and alert rules are code (wukong/dashboards); "
        "this renders them to the JSON files Grafana imports or provisions and the rule file "
        "Prometheus loads. The rendered files are committed under dashboards/ and unit tests "
        "fail when they are stale.",
    )
    actions = dashboards.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render",
        help="write every dashboard as <uid>.json and the alert rules; print the paths",
        description='Write each dashboard ("Wukong / Cancel storm", "Wukong / Node '
        'cancellations") to OUT/<uid>.json with stable key order and the alert rules to '
        "OUT/wukong-alerts.rules.yaml, overwriting older renders, the dashboards again into "
        "the package (wukong/dashboards/rendered/, read by `wukong diagnose`), and print one "
        "path per line. Run it after changing wukong/dashboards and commit the result.",
    )
    render.add_argument(
        "--out",
        type=Path,
        default=Path("dashboards"),
        metavar="DIR",
        help="directory to write the files to, created if missing (default: dashboards/)",
    )
    render.add_argument(
        "--package-copy",
        type=Path,
        default=RENDERED_DIR,
        metavar="DIR",
        help="directory of the dashboards the package ships, created if missing "
        "(default: wukong/dashboards/rendered/ of this package)",
    )
    render.set_defaults(handler=_render)
