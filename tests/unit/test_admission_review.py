"""The webhook server and the Wukong validator on bad input, over plain HTTP with no
API server: malformed reviews, validators that fail or run out of time, the body
limit, the caller's timeout, and values the Wukong webhook cannot read."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s_client

from wukong.operator.admission import WukongAdmission
from wukong.runtime import (
    Admission,
    AdmissionRequest,
    AdmitOnError,
    Client,
    Object,
    RuntimeObserver,
    Store,
)
from wukong.runtime._webhook import MAX_BODY_BYTES, Malformed, read_review, review_timeout
from wukong.runtime.observe import WebhookReview
from wukong.runtime.serving import WebhookServer

GVK = {"group": "vm.novasphere.dev", "version": "v1alpha1", "kind": "Wukong"}


def review(**request: Any) -> dict[str, Any]:
    body = {"uid": "u-1", "kind": GVK, "operation": "CREATE", "namespace": "ns", **request}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


class ReviewObserver(RuntimeObserver):
    def __init__(self) -> None:
        self.reviews: list[WebhookReview] = []

    def admission_reviewed(self, review: WebhookReview) -> None:
        self.reviews.append(review)


class Raises:
    async def validate(self, request: AdmissionRequest) -> Admission:
        raise RuntimeError("the validator broke")


class Hangs:
    async def validate(self, request: AdmissionRequest) -> Admission:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Allows:
    async def validate(self, request: AdmissionRequest) -> Admission:
        return Admission.allow()


class Served:
    def __init__(self, session: aiohttp.ClientSession, port: int, recorder: ReviewObserver) -> None:
        self.session, self.port, self.recorder = session, port, recorder

    async def post(
        self, path: str, body: bytes | object, *, query: str = "", content_type: str = ""
    ) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": content_type or "application/json"}
        url = f"http://127.0.0.1:{self.port}{path}{query}"
        async with self.session.post(url, data=data, headers=headers) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    recorder = ReviewObserver()
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as api:
        server = WebhookServer(
            client=api,
            validators={
                "/raises": Raises(),
                "/hangs": Hangs(),
                "/allows": Allows(),
                "/raises-admitted": AdmitOnError(Raises()),
                "/hangs-admitted": AdmitOnError(Hangs()),
            },
            observer=recorder,
        )
        port = await server.start("127.0.0.1:0", ssl_context=None)
        try:
            async with aiohttp.ClientSession() as session:
                yield Served(session, port, recorder)
        finally:
            await server.stop()


MALFORMED: list[tuple[str, bytes | object, str]] = [
    ("not JSON", b"{not json", "the body is not JSON"),
    ("not UTF-8", b"\xff\xfe\xfa", "the body is not JSON"),
    ("nested past recursion", b"[" * 100_000, "the body is not JSON"),
    ("an array", [review()], "an AdmissionReview is a JSON object"),
    ("a string", "AdmissionReview", "an AdmissionReview is a JSON object"),
    ("no request", {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request"),
    ("request null", {**review(), "request": None}, "request: must be an object"),
    ("request a string", {**review(), "request": "x"}, "request: must be an object"),
    ("another kind", {**review(), "kind": "Pod"}, "expected kind AdmissionReview"),
    ("v1beta1", {**review(), "apiVersion": "admission.k8s.io/v1beta1"}, "apiVersion"),
    ("no uid", review(uid=None), "request.uid"),
    ("uid a number", review(uid=7), "request.uid"),
    ("kind a string", review(kind="Wukong", object="x"), "request.kind"),
    ("kind of numbers", review(kind={"kind": 1}), "request.kind"),
    ("unknown operation", review(operation="PATCH"), "request.operation"),
    ("object a string", review(object="a Wukong"), "request.object: must be an object"),
    ("oldObject a list", review(oldObject=[]), "request.oldObject: must be an object"),
    ("namespace a list", review(namespace=["ns"]), "request.namespace: must be a string"),
    ("dryRun a string", review(dryRun="yes"), "request.dryRun: must be a boolean"),
    ("metadata a string", review(object={"metadata": "m"}), "request.object.metadata"),
]


@pytest.mark.parametrize(
    ("body", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
async def test_a_malformed_review_is_a_400_counted_and_never_admitted(
    served: Served, body: bytes | object, message: str
) -> None:
    status, text = await served.post("/allows", body)
    assert status == 400
    assert isinstance(text, str) and text.startswith("not an AdmissionReview: ")
    assert message in text
    (reported,) = served.recorder.reviews
    assert (reported.code, reported.allowed, reported.reason) == (400, None, "Malformed")
    assert message in reported.message


async def test_a_body_that_is_not_json_by_its_content_type_is_a_400(served: Served) -> None:
    status, text = await served.post("/allows", review(), content_type="text/plain")
    assert status == 400 and "expected application/json" in text


async def test_read_review_returns_the_review_and_its_request() -> None:
    body = review(object={"metadata": {"name": "a"}})
    assert read_review(json.dumps(body).encode()) == (body, body["request"])
    with pytest.raises(Malformed, match=r"request\.uid"):
        read_review(json.dumps(review(uid="")).encode())


async def test_a_validator_that_raises_answers_errored_for_the_failure_policy(
    served: Served,
) -> None:
    status, answer = await served.post("/raises", review(object={"metadata": {"name": "a"}}))
    assert status == 200
    response = answer["response"]
    assert (response["uid"], response["allowed"]) == ("u-1", False)
    assert response["status"]["code"] == 500
    assert "the validator broke" in response["status"]["message"]
    (reported,) = served.recorder.reviews
    assert (reported.code, reported.allowed, reported.reason) == (200, False, "Errored")


async def test_a_validator_out_of_time_answers_errored_before_the_caller_gives_up(
    served: Served,
) -> None:
    status, answer = await served.post("/hangs", review(), query="?timeout=1s")
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "not decided within the review's 1s deadline" in response["status"]["message"]
    (reported,) = served.recorder.reviews
    assert reported.reason == "Errored"
    assert reported.duration < 1.0


@pytest.mark.parametrize("path", ["/raises-admitted", "/hangs-admitted"])
async def test_admitting_on_error_is_an_opt_in_that_warns(served: Served, path: str) -> None:
    status, answer = await served.post(path, review(), query="?timeout=1s")
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert warning.startswith("not verified: ")
    assert served.recorder.reviews[0].reason == "Unverified"


async def test_a_body_over_the_limit_is_a_413_and_one_under_it_is_reviewed(
    served: Served,
) -> None:
    padding = "x" * (MAX_BODY_BYTES - 1024)
    status, answer = await served.post("/allows", review(object={"metadata": {"p": padding}}))
    assert status == 200 and answer["response"]["allowed"] is True
    status, text = await served.post(
        "/allows", b" " * MAX_BODY_BYTES + json.dumps(review()).encode()
    )
    assert status == 413
    assert text == f"the body is larger than {MAX_BODY_BYTES} bytes"
    assert [(r.code, r.reason) for r in served.recorder.reviews] == [
        (200, "Allowed"),
        (413, "Malformed"),
    ]


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [
        (None, 10.0),
        ("5s", 5.0),
        ("30s", 30.0),
        ("31s", 30.0),
        ("1h", 30.0),
        ("9" * 400 + "h", 30.0),
        ("0s", 10.0),
        ("-1s", 10.0),
        ("soon", 10.0),
        ("", 10.0),
    ],
)
def test_the_callers_timeout_is_capped_and_a_bad_one_is_the_default(
    timeout: str | None, seconds: float
) -> None:
    assert review_timeout({} if timeout is None else {"timeout": timeout}) == seconds


async def test_the_capped_timeout_is_the_one_reported(served: Served) -> None:
    await served.post("/allows", review(), query="?timeout=10m")
    assert served.recorder.reviews[0].timeout == 30.0


# -- the Wukong validator on values it cannot read ----------------------------------------


def wukong(name: str = "vm", *, uid: str = "uid-vm", **spec: Any) -> Object:
    return {
        "apiVersion": "vm.novasphere.dev/v1alpha1",
        "kind": "Wukong",
        "metadata": {"name": name, "namespace": "ns", "uid": uid},
        "spec": {"cpu": 1, "memory": "1Gi", **spec},
    }


def request(
    obj: Object | None,
    old: Object | None = None,
    *,
    operation: str = "UPDATE",
    client: Client,
    kind: dict[str, str] = GVK,
) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        operation=operation,
        group=kind["group"],
        kind=kind["kind"],
        namespace="ns",
        name="vm",
        object=obj,
        old_object=old,
        dry_run=False,
        timeout=10.0,
        deadline=asyncio.get_running_loop().time() + 10,
        client=client,
    )


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as plain:
        yield plain


def admission(*nads: Object, classes: tuple[Object, ...] = ()) -> WukongAdmission:
    nad_store, class_store = Store(), Store()
    for nad in nads:
        nad_store.upsert(nad)
    for storage_class in classes:
        class_store.upsert(storage_class)
    return WukongAdmission(
        network_attachment_definitions=nad_store, storage_classes=class_store, claims=Store()
    )


@pytest.mark.parametrize(
    ("disks", "field"),
    [
        ([{"name": "root", "size": "1.2.3"}], "spec.disks[0].size: not a quantity: '1.2.3'"),
        ([{"name": "root", "size": "."}], "spec.disks[0].size: not a quantity: '.'"),
        ([{"name": "root", "size": "1e9999999Gi"}], "spec.disks[0].size: not a quantity"),
        ([{"name": "root", "size": "0"}], "spec.disks[0].size: must be greater than zero"),
        ([{"name": "root", "size": 5}], "spec.disks[0].size: must be a string"),
        ([{"name": "root"}], "spec.disks[0].size: must be a string"),
        ([{"name": "a", "size": "1Gi"}, "b"], "spec.disks[1]: must be an object"),
        ("disks", "spec.disks: must be a list"),
        (False, "spec.disks: must be a list"),  # found by the fuzzer: falsy is no empty list
        ({}, "spec.disks: must be a list"),
        (
            [{"name": "root", "size": "1Gi", "storageClassName": ["gold"]}],
            "spec.disks[0].storageClassName: must be a string",
        ),
    ],
)
async def test_an_update_with_a_value_that_cannot_be_read_is_denied_naming_the_field(
    api: Client, disks: object, field: str
) -> None:
    old = wukong(disks=[{"name": "root", "size": "1Gi"}])
    answer = await admission().validate(request(wukong(disks=disks), old, client=api))
    assert (answer.allowed, answer.reason, answer.code) == (False, "Invalid", 403)
    assert answer.message.startswith(field)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({**wukong(), "spec": "big"}, "spec: must be an object"),
        ({**wukong(), "spec": 0}, "spec: must be an object"),
        (wukong(networks=""), "spec.networks: must be a list"),
        (wukong(memory="lots"), "spec.memory: not a quantity"),
        (wukong(cpu="2"), "spec.cpu: must be an integer"),
        (wukong(cpu=True), "spec.cpu: must be an integer"),
        (wukong(running="yes"), "spec.running: must be a boolean"),
        (wukong(networks=[{"name": 3}]), "spec.networks[0].name: must be a string"),
        (
            wukong(networks=[{"name": "a", "nadName": {"x": 1}}]),
            "spec.networks[0].nadName: must be a string",
        ),
        ({**wukong(), "metadata": {"name": 5}}, "metadata.name: must be a string"),
        # Names it would look up, which would otherwise become other API paths.
        (
            wukong(networks=[{"name": "a", "nadName": ".."}]),
            "spec.networks[0].nadName: '..' is not an object name",
        ),
        (
            wukong(networks=[{"name": "a", "nadName": "nad\n"}]),
            "spec.networks[0].nadName: 'nad\\n' is not an object name",
        ),
        (
            wukong(disks=[{"name": "a", "size": "1Gi", "storageClassName": "../secrets/x"}]),
            "spec.disks[0].storageClassName: '../secrets/x' is not an object name",
        ),
    ],
)
async def test_other_values_that_cannot_be_read_are_denied_naming_the_field(
    api: Client, obj: Object, field: str
) -> None:
    answer = await admission().validate(request(obj, operation="CREATE", client=api))
    assert (answer.allowed, answer.reason) == (False, "Invalid")
    assert answer.message.startswith(field)


async def test_an_old_object_that_cannot_be_read_checks_every_reference_as_new(
    api: Client,
) -> None:
    webhook = admission(nad("taken", owner("Wukong", "other", "uid-other")))
    networks = [{"name": "data", "nadName": "taken"}]
    unchanged = await webhook.validate(
        request(wukong(networks=networks), wukong(networks=networks), client=api)
    )
    assert unchanged.allowed  # only what an update changes is checked
    old = {**wukong(networks=networks), "spec": {"networks": "garbage"}}
    answer = await webhook.validate(request(wukong(networks=networks), old, client=api))
    assert (answer.allowed, answer.reason) == (False, "NetworkAttachmentDefinitionOfAnotherWukong")


@pytest.mark.parametrize(
    ("kind", "operation", "obj"),
    [
        ({"group": "", "version": "v1", "kind": "Pod"}, "CREATE", wukong()),
        ({**GVK, "group": "example.com"}, "CREATE", wukong()),
        (GVK, "CREATE", None),
        (GVK, "UPDATE", None),
    ],
)
async def test_a_request_for_another_resource_or_without_an_object_is_malformed(
    api: Client, kind: dict[str, str], operation: str, obj: Object | None
) -> None:
    answer = await admission().validate(request(obj, operation=operation, client=api, kind=kind))
    assert (answer.allowed, answer.reason, answer.code) == (False, "Malformed", 400)


def nad(name: str, *owners: dict[str, object]) -> Object:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": "ns", "ownerReferences": list(owners)},
        "spec": {"config": '{"type": "bridge"}'},
    }


def owner(kind: str, name: str, uid: str, *, api_version: str = "vm.novasphere.dev/v1alpha1"):
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}


async def test_another_wukongs_network_attachment_definition_cannot_be_reused(
    api: Client,
) -> None:
    webhook = admission(
        nad("other-data", owner("Wukong", "other", "uid-other")),
        nad("mine-data", owner("Wukong", "vm", "uid-vm")),
        nad("shared", owner("Thing", "t", "uid-t", api_version="example.com/v1")),
        nad("plain"),
    )

    async def create(nad_name: str) -> Admission:
        obj = wukong(networks=[{"name": "a", "config": "{}"}, {"name": "b", "nadName": nad_name}])
        return await webhook.validate(request(obj, operation="CREATE", client=api))

    denied = await create("other-data")
    assert (denied.allowed, denied.reason) == (False, "NetworkAttachmentDefinitionOfAnotherWukong")
    assert denied.message.startswith(
        "spec.networks[1].nadName: NetworkAttachmentDefinition ns/other-data belongs to "
        "Wukong ns/other"
    )
    # Its own, one controlled by something else, and one nobody controls are reused.
    for name in ("mine-data", "shared", "plain"):
        assert (await create(name)).allowed, name
    # The same name made again is another Wukong (by uid).
    again = wukong(uid="uid-new", networks=[{"name": "b", "nadName": "mine-data"}])
    answer = await webhook.validate(request(again, operation="CREATE", client=api))
    assert answer.reason == "NetworkAttachmentDefinitionOfAnotherWukong"


async def test_a_request_in_no_namespace_that_can_exist_is_malformed(api: Client) -> None:
    obj = wukong()
    obj["metadata"]["namespace"] = ".."
    answer = await admission().validate(
        AdmissionRequest(
            **{**request(obj, operation="CREATE", client=api).__dict__, "namespace": None}
        )
    )
    assert (answer.reason, answer.message) == (
        "Invalid",
        "metadata.namespace: not a namespace's name",
    )
    answer = await admission().validate(
        AdmissionRequest(
            **{**request(wukong(), operation="CREATE", client=api).__dict__, "namespace": "a/b"}
        )
    )
    assert (answer.reason, answer.code) == ("Malformed", 400)


async def test_a_wukong_being_deleted_is_admitted_whatever_its_values(api: Client) -> None:
    obj = wukong(disks=[{"name": "root", "size": "1.2.3"}])
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    answer = await admission().validate(request(obj, wukong(), client=api))
    assert answer.allowed


async def test_a_caller_that_goes_away_mid_body_is_counted_as_malformed(served: Served) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /allows HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"apiVersion":'
    )
    await writer.drain()
    writer.close()
    for _ in range(100):
        if served.recorder.reviews:
            break
        await asyncio.sleep(0.02)
    (reported,) = served.recorder.reviews
    assert (reported.code, reported.reason) == (400, "Malformed")
    assert reported.message.startswith("the body could not be read")
