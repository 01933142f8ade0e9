"""The runtime's own spans, made as the SDK's tracer makes them, for a fraction of its CPU.

Why: a reconcile makes at least two spans (its own, one per API call), and the
SDK's `Tracer.start_span` and `Span.__init__` were most of what tracing cost per
reconcile: a `BoundedAttributes` (with its lock) cleaning every value one by one,
a `BoundedList` for events and one for links, a snapshot copied at `end`
(bench/WHERE_THE_TIME_GOES.md, "Telemetry").

`SpanRecorder.start` takes the steps of `Tracer.start_span` in the same order,
with the provider's own parts, so nothing of the configuration is lost: the
tracer's configuration (a disabled tracer makes no spans), the id generator, the
sampler (`OTEL_TRACES_SAMPLER`: its decision, attributes and trace state), the
span limits, the resource and instrumentation scope, the SDK's own span metrics,
and every span processor's `on_start`, `_on_ending` and `on_end`. A sampled-out
span is the SDK's `NonRecordingSpan`, as the tracer would return.

`RecordedSpan` is an SDK `Span` (the same class for processors and exporters;
status, exceptions, `update_name`, the context manager and `to_json` are the
SDK's own methods). It differs in what it keeps, never in what it exports:

- attributes the SDK's cleaning would store unchanged (a non-empty `str` key and
  a `str`, `bool`, `int` or `float` value, within the count and length limits)
  go into a plain dict; the first one that would not (a list, a value to cut, one
  attribute past the limit) moves the span to the SDK's `BoundedAttributes`,
  which then cleans and drops exactly as it would have from the start. Events
  and links likewise stay in a plain list until a limit could drop one;
- `end` hands processors the span itself (immutable once ended, as the SDK's
  snapshot is), not a copy.

tests/unit/test_span_recorder.py makes the same spans both ways and compares
what the exporter sends, byte for byte, under default and tight limits.
"""

import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import Event, EventBase, SpanLimits
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

# Values the SDK's attribute cleaning keeps as they are (given no length limit).
_KEPT = frozenset({str, bool, int, float})
_UNSET = Status(StatusCode.UNSET)
_FLAGS = {  # (sampled, random trace id) -> flags: TraceFlags are ints, made once
    (sampled, random_id): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
    )
    for sampled in (False, True)
    for random_id in (False, True)
}
# The SDK's logger: its warnings (an ended span changed) read as the SDK's do.
_sdk_logger = sdk_trace.logger


def _kept_as_is(
    attributes: Mapping[Any, Any], count: int, max_count: int | None, max_length: int | None
) -> bool:
    """Whether `BoundedAttributes` holding `count` attributes would add `attributes`
    unchanged: nothing cleaned, cut or dropped."""
    if max_count is not None and count + len(attributes) > max_count:
        return False
    for key, value in attributes.items():
        kind = type(value)
        if type(key) is not str or not key or kind not in _KEPT:
            return False
        if max_length is not None and kind is str and len(value) > max_length:
            return False
    return True


def _link_kept(link: Link, limits: SpanLimits) -> bool:
    return _kept_as_is(
        link.attributes or {}, 0, limits.max_link_attributes, limits.max_attribute_length
    )


class RecordedSpan(sdk_trace.Span):
    """An SDK span with plain containers while nothing can be cleaned or dropped
    (see the module's docstring). Made by `SpanRecorder.start`, never directly."""

    # Span.__init__ sets these on every span; they are the same for all of these.
    _trace_config = None
    _record_exception = True
    _set_status_on_exception = True

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        tracer: sdk_trace.Tracer,
        kind: SpanKind,
        attributes: Mapping[str, types.AnyValue],
        links: "list[Link] | BoundedList[Link]",
        record_end_metrics: Any,
    ) -> None:
        # Span.__init__'s fields, set directly: it would build the containers
        # this class avoids (ReadableSpan.__init__ only stores them).
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = tracer.instrumentation_info
        self._instrumentation_scope = tracer._instrumentation_scope
        self._parent = parent
        self._start_time: int | None = None
        self._end_time: int | None = None
        self._events: list[Event] | BoundedList[Event] = []
        self._links = links
        self._resource = tracer.resource
        self._status = _UNSET
        self._sampler = tracer.sampler
        self._span_processor = tracer.span_processor
        self._limits = limits = tracer._span_limits
        self._lock = threading.Lock()
        self._record_end_metrics = record_end_metrics
        self._attributes: dict[str, types.AnyValue] | BoundedAttributes
        if _kept_as_is(attributes, 0, limits.max_span_attributes, limits.max_span_attribute_length):
            self._attributes = dict(attributes)
        else:
            self._attributes = {}
            self._bounded()._set_items(attributes)

    def _bounded(self) -> BoundedAttributes:
        """The SDK's container from now on (it cleans and drops as from the start)."""
        attributes = self._attributes
        if type(attributes) is not BoundedAttributes:
            attributes = self._attributes = BoundedAttributes(
                self._limits.max_span_attributes,
                attributes,
                immutable=False,
                max_value_len=self._limits.max_span_attribute_length,
            )
        return attributes

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self._set(attributes, one=False)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self._set({key: value}, one=True)

    def _set(self, attributes: Mapping[str, types.AnyValue], *, one: bool) -> None:
        with self._lock:
            if self._end_time is not None:
                _sdk_logger.warning("Setting attribute on ended span.")
                return
            own = self._attributes
            limits = self._limits
            if type(own) is dict and _kept_as_is(
                attributes, len(own), limits.max_span_attributes, limits.max_span_attribute_length
            ):
                for key, value in attributes.items():
                    own.pop(key, None)  # a key set again moves to the end, as in the SDK
                    own[key] = value
            elif one:  # the SDK's set_attribute: BoundedAttributes.__setitem__ checks the key
                for key, value in attributes.items():
                    self._bounded()[key] = value
            else:
                self._bounded()._set_items(attributes)

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        limits = self._limits
        kept: types.Attributes
        if _kept_as_is(
            attributes or {}, 0, limits.max_event_attributes, limits.max_attribute_length
        ):
            kept = dict(attributes or {})  # a copy (never None), as the SDK's container is
        else:
            kept = BoundedAttributes(
                limits.max_event_attributes,
                attributes,
                max_value_len=limits.max_attribute_length,
                immutable=True,
            )
        self._add_event(Event(name=name, attributes=kept, timestamp=timestamp))

    def _add_event(self, event: EventBase) -> None:
        with self._lock:
            if self._end_time is None:
                self._events = _append(self._events, event, self._limits.max_events)
                return
        _sdk_logger.warning("Tried calling %s on an ended span.", "_add_event")

    def _add_link(self, link: Link) -> None:
        with self._lock:
            if self._end_time is None:
                self._links = _append(self._links, link, self._limits.max_links)
                return
        _sdk_logger.warning("Tried calling %s on an ended span.", "_add_link")

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                _sdk_logger.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if type(self._attributes) is BoundedAttributes:
                self._attributes._immutable = True
        if self._record_end_metrics:
            self._record_end_metrics()
        self._span_processor._on_ending(self)
        # Ended, the span changes no more: processors get it, not a snapshot of it.
        self._span_processor.on_end(self)


def _append(items: Any, item: Any, limit: int | None) -> Any:
    """`items` with `item` appended: a plain list while under `limit`, else the SDK's
    BoundedList (which drops the oldest and counts it)."""
    if type(items) is list and (limit is None or len(items) < limit):
        items.append(item)
        return items
    if type(items) is list:
        items = BoundedList.from_seq(limit, items)
    items.append(item)
    return items


class SpanRecorder:
    """Starts spans of one instrumentation scope as the provider's tracer would.

    With an SDK `TracerProvider` the spans are `RecordedSpan`s; with any other
    provider (the API's no-op or proxy provider, another implementation) its own
    tracer makes them."""

    def __init__(self, provider: trace.TracerProvider, scope: str) -> None:
        self._tracer = provider.get_tracer(scope)

    def start(
        self,
        name: str,
        *,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: dict[str, types.AnyValue],
        links: Sequence[Link] = (),
        start_time: int,
    ) -> trace.Span:
        """`Tracer.start_span(name, context, kind, attributes, links, start_time)`."""
        tracer = self._tracer
        if type(tracer) is not sdk_trace.Tracer:
            return tracer.start_span(
                name,
                context=context,
                kind=kind,
                attributes=attributes,
                links=links,
                start_time=start_time,
            )
        # The steps of sdk.trace.Tracer.start_span, in its order.
        current = trace.get_current_span(context).get_span_context()
        if not tracer._is_enabled():
            return NonRecordingSpan(context=current)
        ids = tracer.id_generator
        parent: SpanContext | None = current
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
        else:
            trace_id = parent.trace_id
        sampling = tracer.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        decision = sampling.decision
        random_id = bool(
            ids.is_trace_id_random() if parent is None else parent.trace_flags.random_trace_id
        )
        span_context = SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[decision is Decision.RECORD_AND_SAMPLE, random_id],
            trace_state=sampling.trace_state,
        )
        record_end_metrics = tracer._tracer_metrics.start_span(parent, decision)
        if decision is Decision.DROP:
            return NonRecordingSpan(context=span_context)
        # What the sampler gives back (our attributes, unless it adds some) is
        # what the span starts with, as in the SDK.
        span = RecordedSpan(
            name,
            span_context,
            parent,
            tracer,
            kind,
            sampling.attributes,
            self._links(links, tracer._span_limits) if links else [],
            record_end_metrics,
        )
        span.start(start_time=start_time, parent_context=context)
        return span

    @staticmethod
    def _links(links: Sequence[Link], limits: SpanLimits) -> "list[Link] | BoundedList[Link]":
        """Span._new_links: valid links only, their attributes bounded (unless kept as is)."""
        valid = []
        for link in links:
            context = link.context
            if not (context and (context.is_valid or link.attributes or context.trace_state)):
                continue
            if _link_kept(link, limits):
                link._attributes = dict(link.attributes or {})  # a copy, as the SDK's
            else:
                link._attributes = BoundedAttributes(
                    limits.max_link_attributes,
                    link.attributes,
                    max_value_len=limits.max_attribute_length,
                    immutable=True,
                )
            valid.append(link)
        if limits.max_links is not None and len(valid) > limits.max_links:
            return BoundedList.from_seq(limits.max_links, valid)
        return valid
