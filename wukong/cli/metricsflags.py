"""--metrics-secure and --metrics-cert-dir: the same for `wukong run` and `wukong agent`."""

import argparse
from pathlib import Path

from wukong.metrics.server import DEFAULT_CERT_DIR


def add_metrics_security(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-secure",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve /metrics over HTTPS, answering only callers whose bearer token the API "
        "server accepts (TokenReview) and who may get the non-resource URL /metrics "
        "(SubjectAccessReview); others get 401 (no or bad token) or 403. Grant a scraper "
        "an RBAC rule nonResourceURLs [/metrics], verbs [get] (the chart's metrics-reader "
        "ClusterRole, see metrics.readers); this process's own identity needs create on "
        "tokenreviews and subjectaccessreviews. --no-metrics-secure: plain HTTP for anyone "
        "who reaches the port, e.g. on a loopback address (default: on, as kubebuilder "
        "scaffolds)",
    )
    parser.add_argument(
        "--metrics-cert-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the serving certificate of /metrics, tls.crt and tls.key "
        f"(default: {DEFAULT_CERT_DIR} when it has them, like controller-runtime, else a "
        "self-signed certificate made at start, which scrapers do not verify)",
    )
