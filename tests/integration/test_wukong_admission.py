"""The Wukong admission webhook, called by the real API server over TLS.

Each test serves the webhook from a manager on a free port with the test
cluster's webhook certificate and registers it by URL (failurePolicy Fail, so
an unanswered review fails the write and cannot pass unnoticed), scoped to the
test's namespace.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.integration.helpers import RecordingObserver, running
from tests.integration.webhooks import MARKER, registered_webhook, wukong_object
from wukong.devcluster import ControlPlane
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.devcluster.processes import free_port
from wukong.metrics import RuntimeMetrics
from wukong.operator.admission import WEBHOOK_PATH, add_wukong_webhook, webhook_configuration
from wukong.operator.api import WUKONGS
from wukong.runtime import (
    ApiError,
    ApiTimeout,
    Client,
    Manager,
    ManagerOptions,
    Object,
    controller_reference,
)
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS
from wukong.runtime.observe import WebhookReview
from wukong.runtime.resources import STORAGE_CLASSES, VALIDATING_WEBHOOK_CONFIGURATIONS
from wukong.runtime.serving import load_serving_certificate
from wukong.tracing.spans import ReconcileTracer

pytestmark = pytest.mark.usefixtures("infrastructure")


class Reviews(RecordingObserver):
    def __init__(self) -> None:
        super().__init__()
        self.reviews: list[WebhookReview] = []
        self.markers = 0
        self.writes: list[set[str]] = []  # the reasons given during each `write()`

    def admission_reviewed(self, review: WebhookReview) -> None:
        if (review.name or "").startswith(MARKER):
            self.markers += 1
        else:
            self.reviews.append(review)

    @contextmanager
    def write(self) -> Iterator[None]:
        """Marks one write: the reasons its reviews gave are appended to `writes` as a set.

        The API server may review one write twice. An update starts from its watch cache's
        copy of the object; when that copy is older than etcd's (right after another
        write), a PATCH that passed admission fails etcd's compare-and-swap, and any write
        that admission rejected is tried again, and either is re-run on etcd's copy,
        admission and all (GuaranteedUpdate in k8s.io/apiserver's etcd3 store)."""
        first = len(self.reviews)
        try:
            yield
        finally:
            self.writes.append({r.reason for r in self.reviews[first:]})

    @property
    def served(self) -> int:
        """Every review the webhook answered, the fixture's markers included."""
        return len(self.reviews) + self.markers


Serve = Callable[..., AbstractAsyncContextManager[Manager]]


@pytest.fixture
def serve_webhook(control_plane: ControlPlane, client: Client, namespace: str) -> Serve:
    """A context manager: a manager serving the Wukong webhook, registered for `namespace`."""

    @asynccontextmanager
    async def serve(
        *,
        observers: list[object],
        via: Client | None = None,
        timeout_seconds: int = 10,
        admit_on_error: bool = False,
        failure_policy: str = "Fail",
    ) -> AsyncIterator[Manager]:
        manager = Manager(
            client=via or client,
            observers=observers,  # type: ignore[arg-type]
            options=ManagerOptions(
                block_warning_seconds=None,
                webhook_bind="127.0.0.1:0",
                webhook_tls=load_serving_certificate(control_plane.webhook_cert_dir),
            ),
        )
        add_wukong_webhook(manager, admit_on_error=admit_on_error)
        async with running(manager):
            while manager.webhook_port is None or not manager.ready:
                await _tick()
            async with registered_webhook(
                client,
                control_plane,
                url=f"https://127.0.0.1:{manager.webhook_port}",
                namespace=namespace,
                timeout_seconds=timeout_seconds,
                failure_policy=failure_policy,
            ):
                yield manager

    return serve


async def _tick() -> None:
    await asyncio.sleep(0.02)


async def _storage_class(client: Client, *, expandable: bool) -> str:
    name = f"test-class-{uuid.uuid4().hex[:8]}"
    body: Object = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "sim.wukong.dev/test",
        "volumeBindingMode": "Immediate",
    }
    if expandable:
        body["allowVolumeExpansion"] = True
    await client.create(STORAGE_CLASSES, body)
    return name


async def test_a_missing_network_attachment_definition_is_rejected_naming_the_field(
    client: Client, namespace: str, serve_webhook: Serve
) -> None:
    reviews = Reviews()
    metrics = RuntimeMetrics()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = ReconcileTracer(provider=provider)
    async with serve_webhook(observers=[reviews, metrics, tracer]):
        with pytest.raises(ApiError) as rejected:
            await client.create(
                WUKONGS,
                wukong_object("web", namespace, networks=[{"name": "data", "nadName": "absent"}]),
            )
        assert rejected.value.status == 403
        assert "spec.networks[0].nadName" in rejected.value.message
        assert f"NetworkAttachmentDefinition {namespace}/absent does not exist" in (
            rejected.value.message
        )
        # Once it exists (the cache may not have it yet: the webhook then asks the API
        # server, within the review's deadline), the same Wukong is admitted.
        await client.create(
            NETWORK_ATTACHMENT_DEFINITIONS,
            {
                "apiVersion": NETWORK_ATTACHMENT_DEFINITIONS.api_version,
                "kind": NETWORK_ATTACHMENT_DEFINITIONS.kind,
                "metadata": {"name": "absent", "namespace": namespace},
                "spec": {"config": '{"type": "bridge"}'},
            },
        )
        await client.create(
            WUKONGS,
            wukong_object("web", namespace, networks=[{"name": "data", "nadName": "absent"}]),
        )
    denied, admitted = (r for r in reviews.reviews if r.operation == "CREATE")
    assert (denied.allowed, denied.reason) == (False, "NetworkAttachmentDefinitionNotFound")
    assert (admitted.allowed, admitted.reason) == (True, "Allowed")
    assert denied.timeout == 10.0  # the configuration's timeoutSeconds, sent as ?timeout=
    assert (denied.webhook, denied.namespace, denied.name) == (WEBHOOK_PATH, namespace, "web")
    # One span per review: its deadline, decision and reason, the rejection as an event.
    (rejection,) = [
        s
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get("wukong.admission.allowed") is False
        and (s.attributes or {}).get("wukong.object.name") == "web"
    ]
    assert (rejection.name, rejection.kind) == ("admission Wukong", SpanKind.SERVER)
    assert rejection.status.status_code is StatusCode.OK  # a rejection is no error
    attributes = dict(rejection.attributes or {})
    assert attributes["wukong.admission.reason"] == "NetworkAttachmentDefinitionNotFound"
    assert attributes["wukong.admission.deadline"] == denied.deadline.isoformat()
    assert attributes["wukong.admission.timeout_ms"] == 10_000
    assert attributes["k8s.namespace.name"] == namespace
    (event,) = rejection.events
    assert event.name == "NetworkAttachmentDefinitionNotFound"
    assert "spec.networks[0].nadName" in str((event.attributes or {})["message"])
    registry = metrics.metrics.registry
    assert (
        registry.get_sample_value(
            "controller_runtime_webhook_requests_total", {"webhook": WEBHOOK_PATH, "code": "200"}
        )
        == reviews.served
    )
    assert (
        registry.get_sample_value(
            "controller_runtime_webhook_requests_in_flight", {"webhook": WEBHOOK_PATH}
        )
        == 0
    )
    assert (
        registry.get_sample_value(
            "controller_runtime_webhook_latency_seconds_count", {"webhook": WEBHOOK_PATH}
        )
        == reviews.served
    )
    assert (
        registry.get_sample_value(
            "wukong_webhook_decisions_total",
            {
                "webhook": WEBHOOK_PATH,
                "allowed": "false",
                "reason": "NetworkAttachmentDefinitionNotFound",
            },
        )
        == 1
    )


async def test_a_missing_storage_class_is_rejected_naming_the_field(
    client: Client, namespace: str, serve_webhook: Serve
) -> None:
    reviews = Reviews()
    async with serve_webhook(observers=[reviews]):
        disks = [
            {"name": "root", "size": "1Gi"},
            {"name": "data", "size": "1Gi", "storageClassName": "gold"},
        ]
        with pytest.raises(ApiError) as rejected:
            await client.create(WUKONGS, wukong_object("db", namespace, disks=disks))
        assert rejected.value.status == 403
        assert "spec.disks[1].storageClassName: StorageClass gold does not exist" in (
            rejected.value.message
        )
        existing = await _storage_class(client, expandable=False)
        disks[1]["storageClassName"] = existing
        await client.create(WUKONGS, wukong_object("db", namespace, disks=disks))
    assert [r.reason for r in reviews.reviews] == ["StorageClassNotFound", "Allowed"]


async def test_growing_a_disk_on_a_class_without_expansion_is_rejected(
    client: Client, namespace: str, serve_webhook: Serve
) -> None:
    fixed = await _storage_class(client, expandable=False)
    expandable = await _storage_class(client, expandable=True)
    reviews = Reviews()
    async with serve_webhook(observers=[reviews]):
        disks = [
            {"name": "fixed", "size": "1Gi", "storageClassName": fixed},
            {"name": "grows", "size": "1Gi", "storageClassName": expandable},
        ]
        with reviews.write():
            await client.create(WUKONGS, wukong_object("vm", namespace, disks=disks))

        async def resize(index: int, size: str) -> Object:
            current = await client.get(WUKONGS, "vm", namespace=namespace)
            current["spec"]["disks"][index]["size"] = size
            with reviews.write():
                return await client.update(WUKONGS, current)

        with pytest.raises(ApiError) as rejected:
            await resize(0, "2Gi")
        assert rejected.value.status == 403
        assert rejected.value.message.endswith(
            f"spec.disks[0].size: cannot grow from 1Gi to 2Gi: StorageClass {fixed} does not "
            "allow volume expansion (allowVolumeExpansion)"
        )
        grown = await resize(1, "2Gi")
        assert grown["spec"]["disks"][1]["size"] == "2Gi"
        # An update that does not grow the fixed disk is admitted.
        with reviews.write():
            labelled = await client.patch(
                WUKONGS, "vm", {"metadata": {"labels": {"tier": "db"}}}, namespace=namespace
            )
        assert labelled["metadata"]["labels"] == {"tier": "db"}
    assert reviews.writes == [{"Allowed"}, {"ExpansionNotSupported"}, {"Allowed"}, {"Allowed"}]
    # Both classes existed before the webhook started: it read them from its cache and
    # asked the API server nothing (the markers' absent class is looked up live).
    assert [
        c.path
        for c in reviews.calls
        if c.verb == "get" and c.resource == STORAGE_CLASSES.plural and "marker" not in c.path
    ] == []


@pytest.mark.parametrize("admit_on_error", [False, True], ids=["errored", "admit-on-error"])
async def test_the_reviews_deadline_bounds_the_webhooks_api_call(
    control_plane: ControlPlane,
    client: Client,
    namespace: str,
    serve_webhook: Serve,
    tmp_path: Path,
    admit_on_error: bool,
) -> None:
    """A hung API server: the webhook's lookup ends by the review's deadline and it answers
    itself before the API server would give up on it. It has checked nothing, so it
    answers Errored (allowed: false, code 500), and the write fails with that, even under
    failurePolicy Ignore (an answer is no call failure); `--webhook-admit-on-error`
    admits it with a warning instead."""
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=control_plane.config.apiserver_port)
    await proxy.start()
    kubeconfig = kubeconfig_via(control_plane.kubeconfig, tmp_path / "kubeconfig", port=proxy.port)
    reviews = Reviews()
    body = wukong_object("late", namespace, networks=[{"name": "data", "nadName": "unseen"}])
    try:
        async with await Client.from_kubeconfig(kubeconfig) as slow:
            async with serve_webhook(
                observers=[reviews],
                via=slow,
                timeout_seconds=2,
                admit_on_error=admit_on_error,
                failure_policy="Ignore",
            ):
                proxy.delay = 60.0  # every answer to the webhook's client is held back
                if admit_on_error:
                    created = await client.create(WUKONGS, body)
                    assert created["metadata"]["name"] == "late"
                else:
                    with pytest.raises(ApiError) as failed:
                        await client.create(WUKONGS, body)
                    assert failed.value.status == 500
                    assert "spec.networks[0].nadName: the API server did not answer" in (
                        failed.value.message
                    )
                proxy.delay = 0.0
    finally:
        await proxy.close()
    (review,) = [r for r in reviews.reviews if r.name == "late"]
    assert review.timeout == 2.0
    if admit_on_error:
        assert (review.allowed, review.reason) == (True, "Unverified")
        assert "not verified: spec.networks[0].nadName" in review.message
    else:
        assert (review.allowed, review.reason) == (False, "Errored")
        assert review.message.startswith("not verified: spec.networks[0].nadName")
    assert review.duration < review.timeout  # answered before the API server stopped waiting
    (lookup,) = [
        c
        for c in reviews.calls
        if c.resource == NETWORK_ATTACHMENT_DEFINITIONS.plural and c.verb == "get"
    ]
    assert isinstance(lookup.error, ApiTimeout)
    assert lookup.duration < review.timeout


@pytest.mark.parametrize("policy", ["Ignore", "Fail"])
async def test_a_webhook_that_is_down_follows_the_failure_policy_and_says_why(
    control_plane: ControlPlane, client: Client, namespace: str, policy: str
) -> None:
    """Nobody listens at the registered URL: Ignore admits the Wukong and the API server's
    audit log names the failed webhook and why; Fail rejects it with that reason."""
    port = free_port()  # nothing listens there
    name = f"wukong-down-{uuid.uuid4().hex[:8]}"
    await client.create(
        VALIDATING_WEBHOOK_CONFIGURATIONS,
        webhook_configuration(
            name,
            url=f"https://127.0.0.1:{port}",
            ca_bundle=control_plane.ca_cert.read_bytes(),
            failure_policy=policy,
            timeout_seconds=2,
            namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        ),
    )
    networks = [{"name": "data", "nadName": "absent"}]

    def failed_open(wukong: str) -> list[str]:
        annotations = []
        for line in control_plane.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if ref.get("namespace") == namespace and ref.get("name") == wukong:
                annotations += [
                    value
                    for key, value in (event.get("annotations") or {}).items()
                    if key.startswith("failed-open.validating.webhook.admission.k8s.io/")
                ]
        return annotations

    # The API server loads the configuration asynchronously: a Wukong created
    # before that passes no webhook at all, so try again with a new one until
    # the policy shows (as the marker Wukongs of `registered_webhook` do).
    try:
        for attempt in range(100):
            wukong = f"down-{attempt}"
            body = wukong_object(wukong, namespace, networks=networks)
            if policy == "Fail":
                try:
                    await client.create(WUKONGS, body)
                except ApiError as rejected:
                    assert 'failed calling webhook "vwukong.vm.novasphere.dev"' in rejected.message
                    assert "connection refused" in rejected.message
                    return
                await client.delete(WUKONGS, wukong, namespace=namespace)
            else:
                created = await client.create(WUKONGS, body)
                assert created["metadata"]["name"] == wukong
                for _ in range(10):  # the audit event is written as the request ends
                    if annotations := failed_open(wukong):
                        (annotation,) = annotations
                        assert "vwukong.vm.novasphere.dev" in annotation
                        return
                    await asyncio.sleep(0.1)
        raise AssertionError(f"the API server never called the webhook registered with {policy}")
    finally:
        await client.delete(VALIDATING_WEBHOOK_CONFIGURATIONS, name)


async def test_another_wukongs_network_attachment_definition_cannot_be_reused(
    client: Client, namespace: str, serve_webhook: Serve
) -> None:
    """A NetworkAttachmentDefinition that a Wukong created from its config goes when that
    Wukong does: another Wukong naming it in `nadName` is rejected, naming the owner."""
    reviews = Reviews()
    async with serve_webhook(observers=[reviews]):
        with reviews.write():
            owner = await client.create(
                WUKONGS,
                wukong_object("owner", namespace, networks=[{"name": "data", "config": "{}"}]),
            )
        # As the controller makes it: controlled by its Wukong.
        await client.create(
            NETWORK_ATTACHMENT_DEFINITIONS,
            {
                "apiVersion": NETWORK_ATTACHMENT_DEFINITIONS.api_version,
                "kind": NETWORK_ATTACHMENT_DEFINITIONS.kind,
                "metadata": {
                    "name": "owner-data",
                    "namespace": namespace,
                    "ownerReferences": [
                        controller_reference(owner, resource=WUKONGS),
                    ],
                },
                "spec": {"config": "{}"},
            },
        )
        networks = [{"name": "data", "nadName": "owner-data"}]
        with pytest.raises(ApiError) as rejected, reviews.write():
            await client.create(WUKONGS, wukong_object("thief", namespace, networks=networks))
        assert rejected.value.status == 403
        assert (
            f"spec.networks[0].nadName: NetworkAttachmentDefinition {namespace}/owner-data "
            f"belongs to Wukong {namespace}/owner" in rejected.value.message
        )
        # Nor by an update that adds it.
        with reviews.write():
            await client.create(WUKONGS, wukong_object("later", namespace))
        with pytest.raises(ApiError) as rejected_update, reviews.write():
            await client.patch(
                WUKONGS, "later", {"spec": {"networks": networks}}, namespace=namespace
            )
        assert rejected_update.value.status == 403
    assert reviews.writes == [
        {"Allowed"},
        {"NetworkAttachmentDefinitionOfAnotherWukong"},
        {"Allowed"},
        {"NetworkAttachmentDefinitionOfAnotherWukong"},
    ]


def _maximal_wukong(namespace: str, storage_class: str, size: str) -> Object:
    """A Wukong at the schema's limits: 16 networks with a 64 KiB config, 16 disks with
    the longest name, size, class name and image (names within the limits of the names
    derived from them: `<wukong>-<child>` is at most 63 characters)."""
    prefix = '{"type": "bridge", "padding": "'
    config = prefix + "p" * (65536 - len(prefix) - 2) + '"}'
    assert len(config) == 65536
    return wukong_object(
        "m",
        namespace,
        networks=[{"name": f"n{i:02d}" + "x" * 58, "config": config} for i in range(16)],
        disks=[
            {
                "name": f"d{i:02d}" + "y" * 58,
                "size": size,
                "storageClassName": storage_class,
                "image": "docker://registry.example/" + "i" * (2048 - 26),
            }
            for i in range(16)
        ],
    )


async def test_a_wukong_at_the_schemas_maximum_size_is_reviewed_on_update(
    client: Client, namespace: str, serve_webhook: Serve
) -> None:
    """An UPDATE's review carries the object twice: over 2 MiB for the largest Wukong,
    beyond aiohttp's default 1 MiB body limit and within the webhook's 7 MiB."""
    # The longest DNS subdomain as the class name; expandable, so disks may grow.
    storage_class = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(storage_class) == 253
    await client.create(
        STORAGE_CLASSES,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": storage_class},
            "provisioner": "sim.wukong.dev/test",
            "allowVolumeExpansion": True,
        },
    )
    reviews = Reviews()
    try:
        async with serve_webhook(observers=[reviews]):
            small, large = "0" * 61 + "1Gi", "0" * 61 + "2Gi"
            assert len(small) == 64
            wukong = await client.create(WUKONGS, _maximal_wukong(namespace, storage_class, small))
            assert len(json.dumps(wukong)) * 2 > 2 * 1024 * 1024
            for disk in wukong["spec"]["disks"]:
                disk["size"] = large
            updated = await client.update(WUKONGS, wukong)
            assert {d["size"] for d in updated["spec"]["disks"]} == {large}
            # One that is denied is answered as well: a class added to a new disk is
            # looked up and does not exist.
            updated["spec"]["disks"][15] = {
                "name": "new",
                "size": "1Gi",
                "storageClassName": "absent",
            }
            with pytest.raises(ApiError) as rejected:
                await client.update(WUKONGS, updated)
            assert rejected.value.status == 403
            assert "spec.disks[15].storageClassName: StorageClass absent does not exist" in (
                rejected.value.message
            )
    finally:
        await client.delete(STORAGE_CLASSES, storage_class)
    assert [(r.operation, r.reason, r.code) for r in reviews.reviews] == [
        ("CREATE", "Allowed", 200),
        ("UPDATE", "Allowed", 200),
        ("UPDATE", "StorageClassNotFound", 200),
    ]
