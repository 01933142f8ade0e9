"""Serving HTTPS next to the controllers: the process wiring an operator's `main` needs.

One `HttpServer` per address carries health probes, `/metrics` and admission
webhooks; `DelegatedAuth` lets the API server authenticate and authorize the
callers of `/metrics` (as kubebuilder's scaffolds do), single-flight and with
refused tokens rate-limited; the certificate helpers load a mounted serving
certificate, reloaded when its files change (controller-runtime's
certwatcher, its reads counted in `CERTIFICATE_READS`), or make a self-signed one; `WebhookServer`
answers AdmissionReviews under their own deadline. In the style of
controller-runtime's `metrics/server` and `webhook` packages.
"""

from wukong.runtime._delegatedauth import DelegatedAuth
from wukong.runtime._httpserver import Handler, HttpServer
from wukong.runtime._servingcert import (
    CERTIFICATE_READS,
    CertificateError,
    certificate_dir,
    load_serving_certificate,
    self_signed_context,
)
from wukong.runtime._webhook import WebhookServer

__all__ = [
    "CERTIFICATE_READS",
    "CertificateError",
    "DelegatedAuth",
    "Handler",
    "HttpServer",
    "WebhookServer",
    "certificate_dir",
    "load_serving_certificate",
    "self_signed_context",
]
