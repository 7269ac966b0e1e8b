"""TraceBook: what the API remembers between OTLP exports, to turn spans into rows.

Spans of one trace arrive in many exports (a span is exported when it ends: an LLM call before the
task around it, the task before the workflow), and some calls are described twice (the provider's
SDK traces itself while OpenLLMetry wraps the same call; an instrumentation's log events arrive
apart from its span). The book keeps, for a while:

- every span's place in its trace (parent, label, LLM or not), to draw the session path of a call
  from the spans around it: the trace is the session (its id the session id), the non-LLM spans
  above a call its path, the workflow (else the root span) the session name;
- every logged call by (trace id, span id): a span sent again is not logged again, a call is
  logged again (same request id, the row replaced) when more is learned about it: its ancestors
  arrived and its path changed, a twin description or its log events came in;
- log events whose span has not arrived yet.

Everything is bounded (traces, calls and the bytes of their content, pending events) and forgotten
after `ttl` seconds; a forgotten span sent again replaces its row (same request id).
Thread-safe: exports may be ingested concurrently.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .. import headers as hdrs
from ..record import CallState
from .decode import EventView, SpanView
from .genai import Call, call_of, is_llm, merge, messages_from_events, usage_fits
from .wire import call_state

NAMESPACE = uuid.UUID("6f1f6a43-3b55-4d1c-9a0e-8c1d0b7e2a11")  # request ids of traced calls
USER_KEYS = frozenset({"user_id", "userid", "user", "user.id", "helicone_user_id", "helicone-user-id"})
WORKFLOW = "traceloop.workflow.name"
ENTITY_NAME = "traceloop.entity.name"
ENTITY_PATH = "traceloop.entity.path"
TWIN_WINDOW = 120.0  # seconds a call waits for a second description of itself
CONTAIN_EPS = 0.002


def request_id(trace_id: str, span_id: str) -> str:
    """The request id of the call an LLM span timed: the same span always gets the same id."""
    return str(uuid.uuid5(NAMESPACE, f"{trace_id}:{span_id}"))


def _own_id(s: SpanView) -> str | None:
    """The request id a span carries (our exporter's `helicone.request_id`), when it is a UUID."""
    rid = s.attrs.get("helicone.request_id")
    try:
        return str(uuid.UUID(str(rid))) if rid else None
    except ValueError:
        return None


@dataclass
class _Node:
    parent: str | None
    label: str
    llm: bool


@dataclass
class _Where:
    """Where one span of a call sits."""

    trace_id: str
    parent: str | None
    workflow: str | None
    entity_path: str | None


@dataclass
class _Entry:
    id: str
    call: Call  # what its span(s) say
    where: list[_Where]
    events: list[EventView] = field(default_factory=list)
    session: tuple | None = None  # (id, name, path) last written
    seen: float = 0.0
    complete: bool = True


def _label(s: SpanView) -> str:
    name = str(s.attrs.get(ENTITY_NAME) or s.name or "span").strip().replace("/", "_")
    return name or "span"


def _size(call: Call) -> int:
    return 512 + sum(len(str(m)) for m in call.messages) + sum(len(str(m)) for m in call.outputs)


def _contains(a: Call, b: Call) -> bool:
    return (a.start <= b.start + CONTAIN_EPS and b.end <= a.end + CONTAIN_EPS) or (
        b.start <= a.start + CONTAIN_EPS and a.end <= b.end + CONTAIN_EPS
    )


def options(call: Call, rid: str, session: tuple | None) -> tuple[hdrs.CallOptions, list[tuple[str, str]]]:
    """CallOptions of a traced call: association properties as Helicone headers (a user id as the
    user, Helicone-* names as themselves, the rest as properties), then the trace's session."""
    pairs: list[tuple[str, str]] = []
    for k, v in call.assoc.items():
        low = k.lower()
        if low.startswith(hdrs.PREFIX):
            pairs.append((hdrs.canonical(low), v))
        elif low in USER_KEYS:
            pairs.append(("Helicone-User-Id", v))
        else:
            pairs.append((f"Helicone-Property-{k}", v))
    opts = hdrs.parse(pairs, strict=False)
    sid, name, path = session or (None, None, None)
    opts = dataclasses.replace(
        opts,
        request_id=rid,
        client_request_id=None,
        session_id=opts.session_id or sid,
        session_name=opts.session_name or (name if opts.session_id in (None, sid) else None),
        session_path=opts.session_path or (path if (opts.session_id or sid) else None),
    )
    return opts, pairs


class TraceBook:
    def __init__(
        self,
        *,
        max_traces: int = 5000,
        max_spans_per_trace: int = 10000,
        max_calls: int = 50000,
        max_pending: int = 10000,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self.max_calls = max_calls
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, dict[str, _Node]] = OrderedDict()
        self._seen: dict[str, float] = {}
        self._calls: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._sizes: dict[tuple[str, str], int] = {}  # the content each span brought, roughly, in bytes
        self._bytes = 0
        self._open: dict[str, list[_Entry]] = {}  # trace -> calls whose ancestors are not all known
        self._twins: dict[tuple, deque[_Entry]] = {}
        self._pending: OrderedDict[tuple[str, str], list[EventView]] = OrderedDict()

    # -- input ---------------------------------------------------------------------------------
    def add_spans(self, spans: Iterable[SpanView]) -> list[tuple[CallState, Call]]:
        """Take one export's spans; returns the calls to (re)write, as (CallState, Call)."""
        spans = list(spans)
        with self._lock:
            now = self.clock()
            for s in spans:
                self._place(s, now)
            dirty: dict[str, _Entry] = {}
            for s in spans:
                if not is_llm(s) or s.key in self._calls:
                    continue  # structure, or a span already logged
                e = self._take(s, now)
                dirty[e.id] = e
            for e in dirty.values():
                self._settle(e)
            out = [self._state(e) for e in dirty.values()]
            out += self._recheck({s.trace_id for s in spans}, dirty)
            self._prune(now)
            return out

    def add_events(self, items: Iterable[tuple[tuple[str, str], EventView]]) -> list[tuple[CallState, Call]]:
        """Take log events tied to spans (GenAI content events); returns the calls to rewrite."""
        dirty: dict[str, _Entry] = {}
        with self._lock:
            now = self.clock()
            for key, ev in items:
                e = self._calls.get(key)
                if e is not None:
                    e.events.append(ev)
                    grow = len(str(ev.body)) + len(str(ev.attrs))
                    self._sizes[key] = self._sizes.get(key, 0) + grow
                    self._bytes += grow
                    e.seen = now
                    dirty[e.id] = e
                elif key in self._pending or len(self._pending) < self.max_pending:
                    self._pending.setdefault(key, []).append(ev)
            for e in dirty.values():
                self._settle(e)
            self._prune(now)
            return [self._state(e) for e in dirty.values()]

    # -- inside ----------------------------------------------------------------------------------
    def _place(self, s: SpanView, now: float) -> None:
        nodes = self._traces.get(s.trace_id)
        if nodes is None:
            nodes = self._traces[s.trace_id] = {}
        self._traces.move_to_end(s.trace_id)
        self._seen[s.trace_id] = now
        if len(nodes) < self.max_spans_per_trace:
            nodes[s.span_id] = _Node(s.parent_id, _label(s), is_llm(s))

    def _take(self, s: SpanView, now: float) -> _Entry:
        events = self._pending.pop(s.key, [])
        call = call_of(s)
        where = _Where(s.trace_id, s.parent_id, s.attrs.get(WORKFLOW), s.attrs.get(ENTITY_PATH))
        twin = self._twin(s, call)
        if twin is not None:
            twin.call = merge(twin.call, call)
            twin.where.append(where)
            twin.events += events
            e = twin
        else:
            e = _Entry(_own_id(s) or request_id(*s.key), call, [where], events)
            key = (call.provider, call.request_model or call.response_model)
            self._twins.setdefault(key, deque(maxlen=1000)).append(e)
        e.seen = now
        self._calls[s.key] = e
        self._calls.move_to_end(s.key)
        size = _size(call) + sum(len(str(ev.body)) + len(str(ev.attrs)) for ev in events)
        self._sizes[s.key] = size
        self._bytes += size
        return e

    def _twin(self, s: SpanView, call: Call) -> _Entry | None:
        """An already logged call this span describes again: its LLM parent, or a call of the same
        provider and model, from another instrumentation, whose span contains this one (or the
        reverse) and whose tokens agree."""
        if s.parent_id and (s.trace_id, s.parent_id) in self._calls:
            return self._calls[(s.trace_id, s.parent_id)]
        for e in self._twins.get((call.provider, call.request_model or call.response_model), ()):
            if e.call.scopes.isdisjoint(call.scopes) and _contains(e.call, call) and usage_fits(e.call, call):
                return e
        return None

    def _session_of(self, w: _Where) -> tuple[tuple | None, bool]:
        """((session id, name, path) or None, whether every ancestor is known)."""
        if not w.parent and not w.workflow:
            return None, True
        nodes = self._traces.get(w.trace_id, {})
        labels: list[str] = []
        cur, complete = w.parent, True
        for _ in range(512):
            if not cur:
                break
            n = nodes.get(cur)
            if n is None:
                complete = False
                break
            if not n.llm:
                labels.append(n.label)
            cur = n.parent
        labels.reverse()
        if not complete and w.workflow:
            labels = [w.workflow, *(p.replace("/", "_") for p in (w.entity_path or "").split(".") if p)]
        name = w.workflow or (labels[0] if complete and labels else None)
        return (w.trace_id, name, "/" + "/".join(labels)), complete

    def _settle(self, e: _Entry) -> bool:
        """Work out the call's session; True when it changed (the row must be written again)."""
        found = [self._session_of(w) for w in e.where]
        best = max(found, key=lambda f: (f[0] is not None, f[1], len(f[0][2]) if f[0] else 0))
        session, complete = best
        changed = session != e.session
        e.session = session
        trace = e.where[0].trace_id
        waiting = self._open.setdefault(trace, [])
        if not complete and e not in waiting:
            waiting.append(e)
        elif complete and e in waiting:
            waiting.remove(e)
        if not waiting:
            self._open.pop(trace, None)
        e.complete = complete
        return changed

    def _recheck(self, traces: set[str], done: dict[str, _Entry]) -> list[tuple[CallState, Call]]:
        """Calls logged before whose ancestors may just have arrived."""
        out = []
        for t in traces:
            for e in list(self._open.get(t, ())):
                if e.id not in done and self._settle(e) and e.session is not None:
                    out.append(self._state(e))
        return out

    def _state(self, e: _Entry) -> tuple[CallState, Call]:
        call = e.call
        if e.events and (not call.messages or not call.outputs):
            msgs, outs = messages_from_events(e.events)
            call = dataclasses.replace(call, messages=call.messages or msgs, outputs=call.outputs or outs)
        opts, pairs = options(call, e.id, e.session)
        return call_state(call, e.id, opts, pairs), call

    def _prune(self, now: float) -> None:
        old = now - self.ttl
        while self._traces and (len(self._traces) > self.max_traces or self._seen.get(next(iter(self._traces)), 0) < old):
            t, _ = self._traces.popitem(last=False)
            self._seen.pop(t, None)
            self._open.pop(t, None)
        while self._calls and (
            len(self._calls) > self.max_calls
            or self._bytes > self.max_bytes
            or next(iter(self._calls.values())).seen < old
        ):
            key, e = self._calls.popitem(last=False)
            self._bytes -= self._sizes.pop(key, 0)
            waiting = self._open.get(key[0])
            if waiting and e in waiting:
                waiting.remove(e)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        for key in list(self._twins):
            q = self._twins[key]
            while q and q[0].seen < now - TWIN_WINDOW:
                q.popleft()
            if not q:
                del self._twins[key]
