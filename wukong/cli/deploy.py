"""`wukong deploy render`: regenerate the chart's generated files and the bundle.

Development only: rendering needs the dashboards (the Grafana SDK) and helm from
the dev cluster's binaries, which come with the `devtools` extra, so they are
imported when the command runs.
"""

import argparse
import sys
from pathlib import Path


def _render(args: argparse.Namespace) -> int:
    from wukong.deploy.chart import write_chart
    from wukong.devcluster import binaries

    helm = binaries.helm_binary(progress=lambda line: print(line, file=sys.stderr))
    for path in write_chart(args.root, helm=helm):
        print(path)
    return 0


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    deploy = commands.add_parser(
        "deploy",
        help="generate the Helm chart's generated files and the plain-manifest bundle",
        description="The chart under deploy/chart/wukong takes its CRD, RBAC rules, alert rules "
        "and dashboards from the code. `render` regenerates them and deploy/wukong.yaml "
        "(`helm template` with default values); commit the result. Tests fail when stale.",
    )
    actions = deploy.add_subparsers(dest="deploy_command", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render",
        help="write the generated chart files and deploy/wukong.yaml; print the paths",
        description="Regenerate deploy/chart/wukong/{crds,files}/ and deploy/wukong.yaml.",
    )
    render.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="the repository's root (default: the current directory)",
    )
    render.set_defaults(handler=_render)
