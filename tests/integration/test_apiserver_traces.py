"""One trace from a reconcile into the API server, read back from a real Jaeger.

A control plane of its own traces every request into Jaeger (kube-apiserver's
`--tracing-config-file`); the operator exports its spans to the same Jaeger.
A reconcile's API call carries the reconcile's context (`traceparent`), and
kube-apiserver takes it as its span's parent only from a privileged client
(group system:masters or system:monitoring); from anyone else (a
ServiceAccount, as the operator runs in a cluster) it starts a new trace that
links to the reconcile's span. The server passes the trace on to an
admission webhook it calls, and Wukong's webhook continues it: its span of the
review is the child of the server's call, and the validator's own API calls (a
lookup the cache cannot answer) are children of that span, the operator's and
the server's spans of them alike. docs/tracing.md records the experiment.
"""

import asyncio
import base64
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tests.integration.helpers import running, service_account_token
from tests.integration.webhooks import registered_webhook, wukong_object
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.jaeger import JaegerSpan, LocalJaeger
from wukong.devcluster.processes import free_port
from wukong.operator.admission import WEBHOOK_PATH, add_wukong_webhook
from wukong.operator.api import WUKONGS
from wukong.runtime import (
    ApiError,
    Client,
    Controller,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import (
    CONFIGMAPS,
    NAMESPACES,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    Resource,
)
from wukong.runtime.serving import load_serving_certificate
from wukong.tracing.sampling import TailSampling
from wukong.tracing.spans import ReconcileTracer

# A cold build of Jaeger (minutes) happens in the session fixture's setup; the
# per-test timeout bounds the test itself, the build reports its own progress.
pytestmark = pytest.mark.timeout(600, func_only=True)

SERVICE_ACCOUNTS = Resource(group="", version="v1", plural="serviceaccounts", kind="ServiceAccount")
ROLES = Resource(group="rbac.authorization.k8s.io", version="v1", plural="roles", kind="Role")
ROLE_BINDINGS = Resource(
    group="rbac.authorization.k8s.io", version="v1", plural="rolebindings", kind="RoleBinding"
)
APISERVER = "apiserver"  # kube-apiserver's service.name
GET_CONFIGMAP = "GET /api/v1/namespaces/{:namespace}/configmaps/{:name}"
CREATE_CONFIGMAP = "POST /api/v1/namespaces/{:namespace}/configmaps"


@pytest.fixture
async def admin(traced_plane: ControlPlane) -> AsyncIterator[Client]:
    async with await Client.from_kubeconfig(traced_plane.kubeconfig) as api:
        yield api


@pytest.fixture
async def traced_namespace(admin: Client) -> AsyncIterator[str]:
    name = f"traced-{uuid.uuid4().hex[:8]}"
    await admin.create(NAMESPACES, {"metadata": {"name": name}})
    await admin.create(CONFIGMAPS, {"metadata": {"name": "target", "namespace": name}})
    yield name
    await admin.delete(NAMESPACES, name)


Call = Callable[[Client, str], Awaitable[object]]


async def _get_target(client: Client, namespace: str) -> object:
    return await client.get(CONFIGMAPS, "target", namespace=namespace)


class CallsForTarget:
    """Makes `call` in each reconcile of the ConfigMap `target`; notes the reconcile's span."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.spans: list[trace.SpanContext] = []

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        if request.name == "target":
            await self.call(ctx.client, request.namespace)
            self.spans.append(trace.get_current_span().get_span_context())
        return Result()


async def _reconcile_once(
    client: Client, namespace: str, provider: TracerProvider, call: Call = _get_target
) -> trace.SpanContext:
    """Run one traced reconcile of `target` through `client`; its span's context."""
    reconciler = CallsForTarget(call)
    manager = Manager(
        client=client,
        # Every trace kept: a plain reconcile's could be dropped at a ratio otherwise.
        observers=[ReconcileTracer(provider=provider, sampling=TailSampling(keep_ratio=1.0))],
        options=ManagerOptions(namespace=namespace),
    )
    manager.add(Controller(name="traced", reconciler=reconciler, primary=CONFIGMAPS))
    async with running(manager):
        await eventually(lambda: bool(reconciler.spans), timeout=30, what="a reconcile")
    await asyncio.to_thread(provider.force_flush)
    return reconciler.spans[0]


def _hex(context: trace.SpanContext) -> tuple[str, str]:
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


async def _stored(
    read: Callable[[], list[JaegerSpan]], holds: Callable[[list[JaegerSpan]], bool], what: str
) -> list[JaegerSpan]:
    """The spans `read` returns once they satisfy `holds` (batches arrive within seconds)."""
    found: list[JaegerSpan] = []

    def check() -> bool:
        nonlocal found
        found = read()
        return holds(found)

    await eventually(check, timeout=30, what=what)
    return found


def _rooted(spans: list[JaegerSpan], span_id: str) -> bool:
    """Whether span `span_id` and each of its ancestors, up to the trace's root, are in
    `spans`. A span is exported when it ends, so a parent that ends after its children
    (a server span after its storage and webhook calls) can come in a later batch."""
    by_id = {s.span_id: s for s in spans}
    span = by_id.get(span_id)
    while span is not None and span.parent is not None:
        span = by_id.get(span.parent)
    return span is not None


def _descendants(spans: list[JaegerSpan], root: JaegerSpan) -> list[JaegerSpan]:
    children = [span for span in spans if span.parent == root.span_id]
    return children + [d for child in children for d in _descendants(spans, child)]


async def test_privileged_clients_api_call_is_a_child_of_the_reconcile_in_one_trace(
    jaeger: LocalJaeger,
    admin: Client,
    traced_namespace: str,
    operator_tracing: tuple[TracerProvider, str],
) -> None:
    provider, service = operator_tracing
    trace_id, reconcile_id = _hex(await _reconcile_once(admin, traced_namespace, provider))

    def complete(spans: list[JaegerSpan]) -> bool:
        return any(s.service == service for s in spans) and any(
            s.service == APISERVER and s.name == GET_CONFIGMAP for s in spans
        )

    spans = await _stored(lambda: jaeger.trace(trace_id), complete, "the reconcile's trace")
    reconcile = next(s for s in spans if s.span_id == reconcile_id)
    assert (reconcile.service, reconcile.name) == (service, "reconcile ConfigMap")
    # The operator's own span of the call, made after it ended, is the reconcile's child...
    client_get = next(s for s in spans if s.service == service and s.name == "get configmaps")
    assert client_get.parent == reconcile_id
    # ...and so is the server's: the header carried the reconcile's span, current at the call.
    server_get = next(s for s in spans if s.service == APISERVER and s.name == GET_CONFIGMAP)
    assert server_get.parent == reconcile_id
    assert server_get.links == ()
    assert server_get.tags["http.target"].startswith(
        f"/api/v1/namespaces/{traced_namespace}/configmaps/target"
    )
    # Under it, in the same trace, the API server's read from etcd.
    below = _descendants(spans, server_get)
    assert any(s.name == "etcdserverpb.KV/Range" for s in below), [s.name for s in below]


async def test_unprivileged_clients_api_call_starts_a_trace_linked_to_the_reconcile(
    jaeger: LocalJaeger,
    traced_plane: ControlPlane,
    admin: Client,
    traced_namespace: str,
    operator_tracing: tuple[TracerProvider, str],
    kubectl: Path,
    tmp_path: Path,
) -> None:
    token = await _reader_token(admin, traced_plane, traced_namespace, kubectl)
    kubeconfig = _token_kubeconfig(traced_plane, token, tmp_path / "reader.kubeconfig")
    provider, _ = operator_tracing
    async with await Client.from_kubeconfig(kubeconfig) as reader:
        trace_id, reconcile_id = _hex(await _reconcile_once(reader, traced_namespace, provider))

    def linked(spans: list[JaegerSpan]) -> bool:
        return any((trace_id, reconcile_id) in s.links for s in spans)

    def server_traces() -> list[JaegerSpan]:
        found = jaeger.traces(service=APISERVER, operation=GET_CONFIGMAP, lookback="5m")
        return next((spans for spans in found if linked(spans)), [])

    spans = await _stored(server_traces, linked, "the API server's trace linked to the reconcile")
    server_get = next(s for s in spans if (trace_id, reconcile_id) in s.links)
    # A trace of its own: the server does not trust the caller's context as its parent.
    assert server_get.trace_id != trace_id
    assert server_get.parent is None
    assert server_get.name == GET_CONFIGMAP
    assert any(s.name == "etcdserverpb.KV/Range" for s in _descendants(spans, server_get))
    # The reconcile's own trace holds no span of the server.
    assert all(s.service != APISERVER for s in jaeger.trace(trace_id))


async def test_audit_id_of_the_response_finds_the_servers_span(
    jaeger: LocalJaeger,
    traced_plane: ControlPlane,
    admin: Client,
    traced_namespace: str,
    kubectl: Path,
) -> None:
    token = await _reader_token(admin, traced_plane, traced_namespace, kubectl)
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    tls = ssl.create_default_context(cafile=str(traced_plane.ca_cert))
    url = f"{traced_plane.server_url}/api/v1/namespaces/{traced_namespace}/configmaps/target"
    headers = {"Authorization": f"Bearer {token}", "traceparent": f"00-{trace_id}-{span_id}-01"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=tls) as response,
    ):
        assert response.status == 200
        audit_id = response.headers["Audit-Id"]
        # The server's trace context is not sent back: the Audit-Id is the handle.
        assert "traceparent" not in response.headers

    def by_audit_id() -> list[JaegerSpan]:
        found = jaeger.traces(service=APISERVER, tags={"audit-id": audit_id}, lookback="5m")
        return found[0] if found else []

    def has_request_span(spans: list[JaegerSpan]) -> bool:
        return any(s.name == GET_CONFIGMAP for s in spans)

    spans = await _stored(by_audit_id, has_request_span, f"the span of Audit-Id {audit_id}")
    # The request's span and the storage layer's under it carry it.
    server_get = next(s for s in spans if s.name == GET_CONFIGMAP)
    assert server_get.tags["audit-id"] == audit_id
    assert server_get.links == ((trace_id, span_id),)
    assert server_get.trace_id != trace_id


async def test_the_servers_webhook_call_carries_the_trace_on(
    jaeger: LocalJaeger,
    traced_plane: ControlPlane,
    admin: Client,
    traced_namespace: str,
    operator_tracing: tuple[TracerProvider, str],
) -> None:
    provider, _ = operator_tracing
    async with _recording_webhook(admin, traced_plane, traced_namespace) as received:

        async def create(client: Client, namespace: str) -> object:
            made = {"metadata": {"name": "made", "namespace": namespace}}
            return await client.create(CONFIGMAPS, made)

        received.clear()
        reconcile = await _reconcile_once(admin, traced_namespace, provider, create)
    trace_id, reconcile_id = _hex(reconcile)
    [headers] = received
    _, sent_trace, sent_parent, _ = headers["traceparent"].split("-")
    assert sent_trace == trace_id

    def complete(spans: list[JaegerSpan]) -> bool:
        return _rooted(spans, sent_parent) and any(s.name == "etcdserverpb.KV/Txn" for s in spans)

    spans = await _stored(lambda: jaeger.trace(trace_id), complete, "the create's trace")
    by_id = {s.span_id: s for s in spans}
    server_post = next(s for s in spans if s.name == CREATE_CONFIGMAP)
    assert server_post.parent == reconcile_id
    # The webhook's request is the API server's client span, under its call of the webhook.
    webhook_post = by_id[sent_parent]
    assert (webhook_post.name, webhook_post.tags["span.kind"]) == ("HTTP POST", "client")
    assert by_id[str(webhook_post.parent)].name == "Call validating webhook"
    assert by_id[str(webhook_post.parent)].tags["webhook"] == "trace.wukong.test"
    below = _descendants(spans, server_post)
    assert webhook_post in below
    assert any(s.name == "etcdserverpb.KV/Txn" for s in below)


@asynccontextmanager
async def _recording_webhook(
    admin: Client, plane: ControlPlane, namespace: str
) -> AsyncIterator[list[dict[str, str]]]:
    """A validating webhook for ConfigMaps created in `namespace` that allows each and
    keeps its request's headers; yields once the API server calls it."""
    received: list[dict[str, str]] = []

    async def review(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        uid = (await request.json())["request"]["uid"]
        answer = {"uid": uid, "allowed": True}
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}
        )

    app = web.Application()
    app.router.add_post("/validate", review)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs = plane.webhook_cert_dir
    tls.load_cert_chain(certs / "tls.crt", certs / "tls.key")
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    webhook = {
        "name": "trace.wukong.test",
        "clientConfig": {
            "url": f"https://127.0.0.1:{port}/validate",
            "caBundle": base64.b64encode(plane.ca_cert.read_bytes()).decode(),
        },
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
            }
        ],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    }
    await admin.create(
        VALIDATING_WEBHOOK_CONFIGURATIONS, {"metadata": {"name": namespace}, "webhooks": [webhook]}
    )
    try:
        # The API server loads the configuration asynchronously: write until it calls.
        for attempt in range(100):
            if received:
                break
            marker = {"metadata": {"name": f"marker-{attempt}", "namespace": namespace}}
            await admin.create(CONFIGMAPS, marker)
            await asyncio.sleep(0.1)
        assert received, "the API server never called the webhook"
        yield received
    finally:
        await admin.delete(VALIDATING_WEBHOOK_CONFIGURATIONS, namespace)
        await runner.cleanup()


async def _reader_token(admin: Client, plane: ControlPlane, namespace: str, kubectl: Path) -> str:
    """A token of a new ServiceAccount `reader` allowed to get, list and watch ConfigMaps."""
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
    meta = {"name": "reader", "namespace": namespace}
    await admin.create(SERVICE_ACCOUNTS, {"metadata": meta})
    await admin.create(ROLES, {"metadata": meta, "rules": [rule]})
    binding = {
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    await admin.create(ROLE_BINDINGS, binding)
    return await asyncio.to_thread(
        service_account_token, kubectl, plane.kubeconfig, namespace, "reader"
    )


def _token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": "reader", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "reader"
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def _traced_wukong_webhook(
    admin: Client, plane: ControlPlane, namespace: str, provider: TracerProvider
) -> AsyncIterator[None]:
    """Wukong's webhook served by a traced manager and registered for `namespace`."""
    await install_dev_apis(admin)
    manager = Manager(
        client=admin,
        # No plain admission kept at a ratio: only the caller's sampled flag keeps it.
        observers=[ReconcileTracer(provider=provider, sampling=TailSampling(keep_ratio=0.0))],
        options=ManagerOptions(
            block_warning_seconds=None,
            webhook_bind="127.0.0.1:0",
            webhook_tls=load_serving_certificate(plane.webhook_cert_dir),
        ),
    )
    add_wukong_webhook(manager)
    async with running(manager):
        await eventually(
            lambda: manager.webhook_port is not None and manager.ready, timeout=30, what="webhook"
        )
        async with registered_webhook(
            admin, plane, url=f"https://127.0.0.1:{manager.webhook_port}", namespace=namespace
        ):
            yield


def _admission_span(spans: list[JaegerSpan], service: str) -> JaegerSpan | None:
    """Wukong's span of the admission review, if it is in `spans`."""
    return next((s for s in spans if s.service == service and s.tags.get("k8s.operation")), None)


def _admission_trace(
    jaeger: LocalJaeger, service: str, namespace: str, name: str
) -> Callable[[], list[JaegerSpan]]:
    """A lookup of the trace holding the admission span of Wukong `name`."""
    tags = {"wukong.object.name": name, "k8s.namespace.name": namespace}

    def admission_trace() -> list[JaegerSpan]:
        found = jaeger.traces(service=service, operation="admission Wukong", tags=tags)
        return found[0] if found else []

    return admission_trace


async def test_wukongs_webhook_span_continues_the_servers_trace(
    jaeger: LocalJaeger,
    traced_plane: ControlPlane,
    admin: Client,
    traced_namespace: str,
    operator_tracing: tuple[TracerProvider, str],
) -> None:
    provider, service = operator_tracing
    async with _traced_wukong_webhook(admin, traced_plane, traced_namespace, provider):
        await admin.create(WUKONGS, wukong_object("traced", traced_namespace))
    await asyncio.to_thread(provider.force_flush)
    admission_trace = _admission_trace(jaeger, service, traced_namespace, "traced")

    def joined(spans: list[JaegerSpan]) -> bool:
        admission = _admission_span(spans, service)
        return admission is not None and _rooted(spans, admission.span_id)

    spans = await _stored(admission_trace, joined, "the webhook's span in the server's trace")
    by_id = {s.span_id: s for s in spans}
    admission = _admission_span(spans, service)
    assert admission is not None
    assert admission.tags["wukong.trace.kept"] == "caller"
    assert admission.tags["wukong.admission.allowed"] is True
    assert admission.tags["url.path"] == WEBHOOK_PATH
    assert admission.tags["span.kind"] == "server"
    # Its parent is the API server's request to the webhook, in the server's trace,
    # under its call of the validating webhook and its handling of the create.
    assert admission.parent is not None
    caller = by_id[admission.parent]
    assert (caller.service, caller.name, caller.trace_id) == (
        APISERVER,
        "HTTP POST",
        admission.trace_id,
    )
    call = by_id[str(caller.parent)]
    assert call.name == "Call validating webhook"
    # Up the chain, the server's span of the create that called it.
    ancestors = []
    while call.parent in by_id:
        call = by_id[call.parent]
        ancestors.append(call)
    assert any(
        s.service == APISERVER
        and s.name.startswith("POST ")
        and f"/namespaces/{traced_namespace}/wukongs" in str(s.tags.get("http.target"))
        for s in ancestors
    ), [(s.name, s.tags.get("http.target")) for s in ancestors]


async def test_the_validators_api_calls_are_children_of_its_admission_span(
    jaeger: LocalJaeger,
    traced_plane: ControlPlane,
    admin: Client,
    traced_namespace: str,
    operator_tracing: tuple[TracerProvider, str],
) -> None:
    provider, service = operator_tracing
    async with _traced_wukong_webhook(admin, traced_plane, traced_namespace, provider):
        # A NetworkAttachmentDefinition the cache does not have: the validator
        # asks the API server, which does not have it either.
        network = [{"name": "data", "nadName": "absent"}]
        with pytest.raises(ApiError) as rejected:
            await admin.create(
                WUKONGS, wukong_object("looked-up", traced_namespace, networks=network)
            )
    assert rejected.value.status == 403
    await asyncio.to_thread(provider.force_flush)
    admission_trace = _admission_trace(jaeger, service, traced_namespace, "looked-up")

    def lookups(spans: list[JaegerSpan]) -> list[JaegerSpan]:
        return [s for s in spans if "network-attachment-definitions" in s.name]

    def both_sides(spans: list[JaegerSpan]) -> bool:
        admission = _admission_span(spans, service)
        return (
            {s.service for s in lookups(spans)} == {service, APISERVER}
            and admission is not None
            and _rooted(spans, admission.span_id)
        )

    spans = await _stored(admission_trace, both_sides, "the lookup's spans in the trace")
    admission = _admission_span(spans, service)
    assert admission is not None
    assert admission.tags["wukong.admission.reason"] == "NetworkAttachmentDefinitionNotFound"
    by_id = {s.span_id: s for s in spans}
    assert by_id[str(admission.parent)].service == APISERVER  # the caller's
    # The operator's span of the GET and the server's of the same request: both
    # children of the admission, in its trace.
    ours = next(s for s in lookups(spans) if s.service == service)
    assert (ours.name, ours.parent, ours.trace_id) == (
        "get network-attachment-definitions",
        admission.span_id,
        admission.trace_id,
    )
    assert ours.tags["http.response.status_code"] == 404
    server = next(s for s in lookups(spans) if s.service == APISERVER and s.name.startswith("GET "))
    assert (server.parent, server.trace_id) == (admission.span_id, admission.trace_id)
