"""What the call layer reports of a finished API call, and to whom.

The report is a named tuple built from its fields in order (`api_call_of`):
each field must land under its own name. Nobody listening (the node agent's
probe points alone leave calls alone): no report is built at all.
"""

from typing import Any

import pytest

from wukong.runtime import ApiTimeout, CancelReason, RuntimeObserver, _calls
from wukong.runtime._calls import CallLayer
from wukong.runtime._fanout import ObserverFanout
from wukong.runtime._observer import ApiCall, LifecycleEvent
from wukong.runtime._transport import PATCH, Call, Transport
from wukong.runtime.resources import CONFIGMAPS


class _Calls(RuntimeObserver):
    def __init__(self) -> None:
        self.calls: list[ApiCall] = []

    def api_call(self, call: ApiCall) -> None:
        self.calls.append(call)


class _ReconcilesOnly(RuntimeObserver):
    def reconcile(self, event: LifecycleEvent) -> None:
        return None


def _layer(*observers: RuntimeObserver) -> CallLayer:
    under = Transport(None, host="apiserver:6443")  # type: ignore[arg-type]  # never sends
    return CallLayer(under, observer=ObserverFanout(observers))


def _patch_call() -> Call:
    path = CONFIGMAPS.path(namespace="ns", name="cm")
    return Call(PATCH, CONFIGMAPS, "ns", path, [])


def test_a_finished_call_reaches_its_observer_with_each_field_under_its_name() -> None:
    calls = _Calls()
    error = ApiTimeout(verb="patch", path="/api/v1/namespaces/ns/configmaps/cm", timeout=1.0)
    _layer(calls).report(
        _patch_call(), None, started_wall=1000.5, started=0.0, retries=2, error=error
    )
    (call,) = calls.calls
    assert call._asdict() == {
        "verb": "patch",
        "method": "PATCH",
        "resource": "configmaps",
        "host": "apiserver:6443",
        "namespace": "ns",
        "path": "/api/v1/namespaces/ns/configmaps/cm",
        "status_code": None,
        "started": 1000.5,
        "duration": call.duration,
        "retries": 2,
        "error": error,
        "cancel_reason": CancelReason.API_TIMEOUT,
        "reconcile": None,
    }
    assert call.duration > 0


def test_no_report_is_built_when_nobody_listens_to_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[Any] = []

    def counting(fields: Any) -> ApiCall:
        built.append(fields)
        return ApiCall._make(fields)

    monkeypatch.setattr(_calls, "api_call_of", counting)
    _layer(_ReconcilesOnly()).report(
        _patch_call(), 200, started_wall=1000.5, started=0.0, retries=0, error=None
    )
    assert built == []
    listened = _Calls()
    _layer(_ReconcilesOnly(), listened).report(
        _patch_call(), 200, started_wall=1000.5, started=0.0, retries=0, error=None
    )
    assert len(built) == 1
    assert [call.status_code for call in listened.calls] == [200]
