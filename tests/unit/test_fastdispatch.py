"""Fast dispatch (helicone_addon/fastdispatch.py): same hooks, same addons, same order as stock.

Every scenario runs twice on identical addon chains, once with mitmproxy's stock AddonManager and
once with `fastdispatch.install()`, and the call logs (and the "Addon error" log lines) must match.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import textwrap
import threading
import types
import uuid
from pathlib import Path

import pytest
from mitmproxy import addonmanager, ctx, eventsequence, exceptions, hooks, options
from mitmproxy.addons import script
from mitmproxy.test import taddons, tflow
from mitmproxy.tools import dump

from helicone_addon.proxy import fastdispatch

FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error", "update")


# -- recording addons ------------------------------------------------------------------------------
def recorder(name: str, log: list, hooks_: tuple[str, ...] = FLOW_HOOKS, async_hooks: tuple[str, ...] = (), **extra):
    """An addon object named `name` implementing `hooks_` (those in `async_hooks` as `async def`)."""
    ns: dict = {"name": name, "__repr__": lambda self: f"<{self.name}>"}

    def make(h: str, is_async: bool):
        if is_async:
            async def handler(self, *args):
                await asyncio.sleep(0)
                log.append((self.name, h, _argkey(args)))
        else:
            def handler(self, *args):
                log.append((self.name, h, _argkey(args)))
        handler.__name__ = h
        return handler

    for h in hooks_:
        ns[h] = make(h, h in async_hooks)
    ns.update(extra)
    return type(f"Rec_{name.replace(':', '_')}", (), ns)()


def _argkey(args) -> tuple:
    out = []
    for a in args:
        if isinstance(a, list):
            out.append(tuple(getattr(x, "id", repr(x)) for x in a))
        else:
            out.append(getattr(a, "id", type(a).__name__))
    return tuple(out)


class Raiser:
    """Raises in `request`; its sub-addon must then be skipped for that event (stock semantics)."""

    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log
        self.addons = [recorder(name + ":child", log)]

    def request(self, f) -> None:
        self.log.append((self.name, "request", (f.id,)))
        raise ValueError(f"boom from {self.name}")

    def response(self, f) -> None:
        self.log.append((self.name, "response", (f.id,)))


class Container:
    """Hosts sub-addons like ScriptLoader does (a plain `addons` list, two levels deep)."""

    def __init__(self, name: str, log: list) -> None:
        self.name = name
        inner = recorder(name + ":inner", log, async_hooks=("request",))
        inner.addons = [recorder(name + ":inner:leaf", log, ("request", "response"))]
        self.addons = [recorder(name + ":a", log, ("request",)), inner]

    def response(self, f) -> None:
        pass  # present but silent


class Odd:
    """Hook-named attributes that are not handlers: a module (skipped) and a non-callable (error)."""

    name = "odd"
    response = types.ModuleType("response")
    error = 5

    def __repr__(self) -> str:
        return "<odd>"


def build_chain(log: list) -> list:
    return [
        recorder("first", log, async_hooks=("response",)),
        Container("cont", log),
        Raiser("raiser", log),
        Odd(),
        recorder("last", log, ("request", "response", "error", "tick", "client_connected")),
    ]


class tctx_clean(taddons.context):
    """taddons.context that also removes the master's log handler on exit (it would outlive the loop)."""

    def __exit__(self, *exc):
        self.master._legacy_log_events.uninstall()
        return super().__exit__(*exc)


def flows():
    return [tflow.tflow(resp=True), tflow.tflow(err=True), tflow.tflow()]


async def drive(master, log: list, fl) -> None:
    """Fire every kind of dispatch mitmproxy uses at the chain."""
    for f in fl:
        for evt in eventsequence.iterate(f):
            await master.addons.handle_lifecycle(evt)
    master.addons.trigger(hooks.UpdateHook([fl[0]]))  # sync trigger (core/view/comment use it)
    master.addons.trigger(tflow_hook("request", fl[0]))  # sync trigger of a hook with an async handler
    await master.addons.trigger_event(hooks.UpdateHook([]))
    from mitmproxy.proxy.server_hooks import ClientConnectedHook

    await master.addons.trigger_event(ClientConnectedHook(fl[0].client_conn))
    log.append(("--", "end", ()))


def tflow_hook(name: str, f):
    from mitmproxy.proxy.layers import http as http_layer

    cls = {"request": http_layer.HttpRequestHook, "response": http_layer.HttpResponseHook}[name]
    return cls(f)


def run_scenario(fast: bool, scenario, caplog=None) -> tuple[list, list[str]]:
    log: list = []

    async def go():
        with tctx_clean() as tctx:
            m = tctx.master
            m.addons.add(*build_chain(log))
            if fast:
                assert fastdispatch.install(m.addons)
                assert fastdispatch.is_installed(m.addons)
            else:
                assert not fastdispatch.is_installed(m.addons)
            await scenario(m, log)

    if caplog is not None:
        caplog.clear()
    with caplog.at_level(logging.ERROR, logger="mitmproxy.addonmanager") if caplog else _null():
        asyncio.run(go())
    errors = [r.getMessage() for r in caplog.records if r.name == "mitmproxy.addonmanager"] if caplog else []
    return log, errors


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def both(scenario, caplog):
    stock = run_scenario(False, scenario, caplog)
    fast = run_scenario(True, scenario, caplog)
    return stock, fast


# -- equivalence -----------------------------------------------------------------------------------
def test_same_calls_same_order_same_errors(caplog):
    fl = flows()

    async def scenario(m, log):
        await drive(m, log, fl)

    (slog, serr), (flog, ferr) = both(scenario, caplog)
    assert slog == flog
    assert serr == ferr
    # and the scenario did exercise what it should
    assert ("cont:inner:leaf", "request", (fl[0].id,)) in flog  # nested two levels, async parent
    assert ("raiser:child", "request", (fl[0].id,)) not in flog  # sub-tree of a raising addon skipped
    assert ("raiser:child", "response", (fl[0].id,)) in flog
    assert ("last", "request", (fl[0].id,)) in flog  # a raising addon does not stop the others
    assert any("boom from raiser" in e for e in ferr)
    assert any("Addon handler error" in e and "not callable" in e for e in ferr)
    assert any("cannot be called from sync context" in e for e in ferr)
    assert ("first", "update", ((fl[0].id,),)) in flog


def test_nothing_reaches_the_wrong_addon_in_a_real_dumpmaster(caplog):
    """The full default chain of `mitmdump`, our recorders before and after it."""

    def run(fast: bool):
        log: list = []

        async def go():
            m = dump.DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
            m.addons.chain.insert(0, m.addons.register(recorder("head", log)))
            m.addons.add(Container("tail", log), recorder("end", log))
            if fast:
                assert fastdispatch.install(m.addons)
            try:
                await drive(m, log, flows_fixed)
            finally:
                m._legacy_log_events.uninstall()

        asyncio.run(go())
        return log

    flows_fixed = flows()
    stock = run(False)
    fast = run(True)
    assert stock == fast
    assert stock[0][0] == "head"


def test_script_loaded_later_is_dispatched(tmp_path, caplog):
    """A real `-s` script: ScriptLoader -> Script -> module, loaded by the watcher after configure."""
    path = tmp_path / "myscript.py"
    path.write_text(textwrap.dedent("""
        import logging
        from mitmproxy import ctx
        LOG = []
        def request(flow):
            LOG.append(("script", "request", flow.id))
        async def response(flow):
            LOG.append(("script", "response", flow.id))
        def update(flows):
            LOG.append(("script", "update", tuple(f.id for f in flows)))
    """))

    def run(fast: bool):
        log: list = []

        async def go():
            with tctx_clean() as tctx:
                m = tctx.master
                sl = script.ScriptLoader()
                m.addons.add(recorder("before", log), sl, recorder("after", log))
                if fast:
                    assert fastdispatch.install(m.addons)
                f0 = tflow.tflow(resp=True)
                for evt in eventsequence.iterate(f0):  # no script yet: plans cached without it
                    await m.addons.handle_lifecycle(evt)
                m.options.update(scripts=[str(path)])
                for _ in range(50):
                    await asyncio.sleep(0.01)
                    if sl.addons and sl.addons[0].ns is not None:
                        break
                mod = sl.addons[0].ns
                assert mod is not None
                f1 = tflow.tflow(resp=True)
                for evt in eventsequence.iterate(f1):
                    await m.addons.handle_lifecycle(evt)
                log.extend(("mod",) + e for e in mod.LOG)
                ids = {f0.id: "f0", f1.id: "f1"}
                m.options.update(scripts=[])  # unloaded again
                f2 = tflow.tflow(resp=True)
                ids[f2.id] = "f2"
                for evt in eventsequence.iterate(f2):
                    await m.addons.handle_lifecycle(evt)
                for s in sl.addons:
                    s.done()
            return log, ids

        return asyncio.run(go())

    slog, sids = run(False)
    flog, fids = run(True)

    def norm(x, ids):
        if isinstance(x, (list, tuple)):
            return type(x)(norm(y, ids) for y in x)
        return ids.get(x, x) if isinstance(x, str) else x

    slog, flog = norm(slog, sids), norm(flog, fids)

    assert slog == flog
    got = flog
    assert ("mod", "script", "request", "f1") in got
    assert ("mod", "script", "response", "f1") in got
    assert not any(e[:2] == ("mod", "script") and "f0" in e for e in got)


def test_addon_added_and_removed_during_dispatch(caplog):
    """An addon that adds another addon from a hook, and one that removes itself: stock semantics."""

    class Adder:
        name = "adder"

        def __init__(self, log):
            self.log = log
            self.done_ = False

        def request(self, f):
            self.log.append(("adder", "request", (f.id,)))
            if not self.done_:
                self.done_ = True
                ctx.master.addons.add(recorder("late", self.log))

    class SelfRemover:
        name = "selfremover"

        def __init__(self, log):
            self.log = log

        def response(self, f):
            self.log.append(("selfremover", "response", (f.id,)))
            ctx.master.addons.remove(self)

    class Grower:
        """Like ScriptLoader: a child grows the parent's sub-chain (and registers it) mid-event."""

        name = "grower"

        def __init__(self, log):
            self.log = log
            parent = self

            class Seed:
                name = "grower:seed"

                def request(self, f):
                    log.append(("grower:seed", "request", (f.id,)))
                    if len(parent.addons) == 2:
                        new = recorder("grower:new", log, ("request", "response"))
                        parent.addons.insert(1, new)
                        ctx.master.addons.register(new)

            self.addons = [Seed(), recorder("grower:old", log, ("request", "response"))]

    fl = flows()

    async def scenario(m, log):
        m.addons.add(Grower(log), Adder(log), SelfRemover(log), recorder("tail", log))
        await drive(m, log, fl)

    (slog, serr), (flog, ferr) = both(scenario, caplog)
    assert slog == flog
    assert serr == ferr
    assert ("late", "request", (fl[0].id,)) in flog  # added mid-dispatch, called in the same event
    first = [e[0] for e in flog if e[1] == "request" and e[2] == (fl[0].id,)]
    assert first.index("grower:seed") < first.index("grower:new") < first.index("grower:old")


def test_halt_and_options_error():
    class Halter:
        name = "halter"

        def request(self, f):
            raise exceptions.AddonHalt()

    class Bad:
        name = "bad"

        def response(self, f):
            raise exceptions.OptionsError("nope")

    async def go(fast: bool) -> list:
        log: list = []
        with tctx_clean() as tctx:
            m = tctx.master
            m.addons.add(recorder("a", log), Halter(), recorder("b", log), Bad(), recorder("c", log))
            if fast:
                fastdispatch.install(m.addons)
            f = tflow.tflow(resp=True)
            await m.addons.trigger_event(tflow_hook("request", f))
            m.addons.trigger(tflow_hook("request", f))
            with pytest.raises(exceptions.OptionsError):
                await m.addons.trigger_event(tflow_hook("response", f))
            with pytest.raises(exceptions.OptionsError):
                m.addons.trigger(tflow_hook("response", f))
            return [e[:2] for e in log]

    expected = [("a", "request"), ("a", "request"), ("a", "response"), ("b", "response"),
                ("a", "response"), ("b", "response")]
    assert asyncio.run(go(False)) == expected
    assert asyncio.run(go(True)) == expected


# -- the cache -------------------------------------------------------------------------------------
def test_plan_cache_invalidation():
    log: list = []

    async def go():
        with tctx_clean() as tctx:
            m = tctx.master
            a = recorder("a", log, ("request",))
            m.addons.add(a)
            assert fastdispatch.install(m.addons)
            fd = m.addons._helicone_fast
            f = tflow.tflow()
            ev = tflow_hook("request", f)

            async def fire():
                log.clear()
                await m.addons.trigger_event(ev)
                return [e[0] for e in log]

            assert await fire() == ["a"]
            n = fd.rebuilds
            assert await fire() == ["a"]
            assert fd.rebuilds == n  # cached
            b = recorder("b", log, ("request",))
            m.addons.add(b)
            assert await fire() == ["a", "b"]
            m.addons.remove(a)
            assert await fire() == ["b"]
            # a nested list changed without register(): seen on the next dispatch
            c = recorder("c", log, ("request",))
            b.addons = []
            m.addons.remove(b)
            m.addons.add(b)
            b.addons.append(c)
            assert await fire() == ["b", "c"]
            b.addons.remove(c)
            assert await fire() == ["b"]
            # configure drops the plan (an addon may have grown a hook in configure)
            n = fd.rebuilds
            m.options.update(listen_port=1234)
            await fire()
            assert fd.rebuilds == n + 1
            # the chain list replaced behind our back
            m.addons.chain = list(m.addons.chain) + [recorder("d", log, ("request",))]
            assert await fire() == ["b", "d"]
            m.addons.clear()
            assert await fire() == []

    asyncio.run(go())


def test_update_not_created_when_nobody_implements_it(monkeypatch):
    created = []
    real = hooks.UpdateHook.__init__

    def spy(self, *a, **kw):
        created.append(1)
        real(self, *a, **kw)

    monkeypatch.setattr(hooks.UpdateHook, "__init__", spy)
    log: list = []

    async def go():
        with tctx_clean() as tctx:
            m = tctx.master
            m.addons.add(recorder("a", log, ("request",)))
            fastdispatch.install(m.addons)
            f = tflow.tflow()
            await m.addons.handle_lifecycle(tflow_hook("request", f))
            assert created == []
            m.addons.add(recorder("u", log, ("update",)))
            await m.addons.handle_lifecycle(tflow_hook("request", f))
            assert created == [1]
            assert ("u", "update", ((f.id,),)) in log

    asyncio.run(go())


# -- install() guards ------------------------------------------------------------------------------
def test_install_guards(monkeypatch):
    async def go():
        with tctx_clean() as tctx:
            m = tctx.master
            other = addonmanager.AddonManager(m)
            assert fastdispatch.install(m.addons) is True
            assert fastdispatch.install(m.addons) is True  # idempotent
            assert not fastdispatch.is_installed(other)  # the instance, not the class
            assert "trigger_event" not in vars(addonmanager.AddonManager) or \
                addonmanager.AddonManager.trigger_event.__qualname__ == "AddonManager.trigger_event"
            assert fastdispatch.uninstall(m.addons)
            assert not fastdispatch.is_installed(m.addons)
            assert m.addons.trigger_event.__func__ is addonmanager.AddonManager.trigger_event

            monkeypatch.setenv("HELICONE_FAST_DISPATCH", "0")
            assert fastdispatch.install(m.addons) is False
            monkeypatch.delenv("HELICONE_FAST_DISPATCH")

            monkeypatch.setattr(fastdispatch, "_mitmproxy_version", lambda: "12.3.0")
            assert fastdispatch.install(m.addons) is False
            monkeypatch.setattr(fastdispatch, "_mitmproxy_version", lambda: "13.0.1")
            assert fastdispatch.install(m.addons) is False
            monkeypatch.setattr(fastdispatch, "_mitmproxy_version", lambda: "12.2.9")
            assert fastdispatch.install(m.addons) is True
            fastdispatch.uninstall(m.addons)

            class Custom(addonmanager.AddonManager):
                async def trigger_event(self, event):
                    return await super().trigger_event(event)

            assert fastdispatch.install(Custom(m)) is False
            assert fastdispatch.install(object()) is False

    asyncio.run(go())


def test_supported_versions():
    assert fastdispatch.supported("12.2.3")
    assert not fastdispatch.supported("12.1.2")
    assert not fastdispatch.supported("12.20.0")


# -- e2e: the real `helicone-addon` master, fast dispatch on ---------------------------------------
def _in_process_proxy(tmp_path: Path, upstream: str, env_off: bool):
    """HeliconeDumpMaster exactly as cli/proxy.py's run_dump builds it, in a thread."""
    from helicone_addon.proxy import make_addons

    state: dict = {"ready": threading.Event()}

    class Ready:
        def running(self):
            state["addrs"] = ctx.master.addons.get("proxyserver").listen_addrs()
            state["ready"].set()

    def main():
        async def amain():
            m = dump.DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
            m.addons.add(*make_addons())
            state["installed"] = fastdispatch.install(m.addons)
            m.addons.add(Ready())
            m.options.update(
                confdir=str(tmp_path / "conf"),
                mode=[f"reverse:{upstream}@127.0.0.1:0"],
                helicone_data_dir=str(tmp_path / "data"),
                helicone_api_port=0,
                helicone_hosts=["127.0.0.1=openai"],
            )
            state["master"] = m
            await m.run()

        try:
            asyncio.run(amain())
        except BaseException as e:  # noqa: BLE001 - surfaced to the test
            state["exc"] = e
            state["ready"].set()

    if env_off:
        os.environ["HELICONE_FAST_DISPATCH"] = "0"
    try:
        t = threading.Thread(target=main, daemon=True)
        t.start()
        assert state["ready"].wait(20), "proxy did not start"
    finally:
        os.environ.pop("HELICONE_FAST_DISPATCH", None)
    if "exc" in state:
        raise state["exc"]
    return state, t


@pytest.mark.parametrize("env_off", [False, True], ids=["fast", "stock"])
def test_e2e_calls_are_logged(fake, tmp_path, env_off):
    import httpx

    state, thread = _in_process_proxy(tmp_path, fake.url, env_off)
    try:
        assert state["installed"] is (not env_off)
        port = state["addrs"][0][1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
            ids = []
            for _i, stream in enumerate([False, True, False]):
                rid = str(uuid.uuid4())
                r = c.post("/v1/chat/completions", headers={"Helicone-Request-Id": rid, "Helicone-Property-K": "v"},
                           json={"model": "gpt-4o-mini", "stream": stream,
                                 "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
                assert r.headers["helicone-id"] == rid
                ids.append(rid)
    finally:
        state["master"].event_loop.call_soon_threadsafe(state["master"].should_exit.set)
        thread.join(20)
    assert not thread.is_alive()
    db = tmp_path / "data" / "helicone.db"
    conn = sqlite3.connect(db)
    try:
        rows = {r[0]: r for r in conn.execute(
            "SELECT id, status, streamed, total_tokens, cost_usd FROM requests")}
        props = conn.execute("SELECT count(*) FROM properties WHERE key = 'k'").fetchone()[0]
    finally:
        conn.close()
    assert set(ids) <= set(rows)
    for rid in ids:
        _, status, _, total, cost = rows[rid]
        assert status == 200 and total and cost is not None
    assert props == 3


def test_cli_master_installs_fast_dispatch(monkeypatch):
    """`helicone-addon run` builds its master through fastdispatch.install (and survives without it)."""
    from helicone_addon.cli import proxy

    seen = {}

    def fake_run(master_cls, make_parser, args):
        async def go():
            m = master_cls(options.Options())
            seen["installed"] = fastdispatch.is_installed(m.addons)
            seen["names"] = [type(a).__name__ for a in m.addons.chain]
            m._legacy_log_events.uninstall()

        asyncio.run(go())

    from mitmproxy.tools import main as mitm_main

    monkeypatch.setattr(mitm_main, "run", fake_run)
    for run in (proxy.run_dump, proxy.run_web):
        monkeypatch.delenv("HELICONE_FAST_DISPATCH", raising=False)
        run([])
        assert seen["installed"] is True, run
        assert {"HeliconeCalls", "HeliconeLog", "HeliconeApi"} <= set(seen["names"])
        monkeypatch.setenv("HELICONE_FAST_DISPATCH", "0")
        run([])
        assert seen["installed"] is False, run


def test_add_log_events_only_while_an_addon_listens():
    """mitmproxy's master turns every DEBUG record into a deprecated `add_log` event (format, wake the
    loop, dispatch), and every connection logs several DEBUG records. With no `add_log` handler in
    the chain and termlog at INFO, the connection logger does not even build them, and a record from
    elsewhere stops at the gate; an addon with `add_log`, added later, gets every record again, and
    losing it again stops them again; termlog at debug brings the connection's records back."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    for h in saved_handlers:  # pytest's capture handlers take everything: test with mitmproxy's alone
        root.removeHandler(h)
    root.setLevel(logging.DEBUG)
    conn_log = logging.getLogger("mitmproxy.proxy.server")
    other = logging.getLogger("mitmproxy.addons.something")
    got: list[str] = []

    class Listener:
        def add_log(self, entry):
            got.append(entry.msg)

    async def go():
        m = dump.DumpMaster(options.Options(), with_termlog=True, with_dumper=False)
        assert conn_log.isEnabledFor(logging.DEBUG)  # stock: every connection record is built
        assert fastdispatch.install(m.addons)
        gate = m.addons._helicone_fast.log_gate
        handler = m._legacy_log_events
        emitted: list[str] = []
        real_emit = handler.emit
        handler.emit = lambda r: (emitted.append(r.getMessage()), real_emit(r))
        try:
            assert not conn_log.isEnabledFor(logging.DEBUG)
            assert conn_log.isEnabledFor(logging.INFO)
            conn_log.debug("not built")
            other.debug("one")  # plan not built yet: passes; dispatching it builds the (empty) plan
            await asyncio.sleep(0.05)
            other.debug("two")
            other.info("three")
            assert emitted == ["one"]
            assert gate.dropped == 2
            listener = Listener()
            m.addons.add(listener)
            assert conn_log.isEnabledFor(logging.DEBUG)
            for msg in ("four", "five"):
                conn_log.debug(msg)
                await asyncio.sleep(0.05)
            assert emitted == ["one", "four", "five"]
            assert [g.split()[-1] for g in got] == ["four", "five"]
            m.addons.remove(listener)
            assert not conn_log.isEnabledFor(logging.DEBUG)
            other.debug("six")
            await asyncio.sleep(0.05)
            other.debug("seven")
            assert emitted == ["one", "four", "five", "six"]
            m.options.update(termlog_verbosity="debug")
            assert conn_log.isEnabledFor(logging.DEBUG)
            m.options.update(termlog_verbosity="info")
            assert not conn_log.isEnabledFor(logging.DEBUG)
            assert fastdispatch.uninstall(m.addons)
            assert conn_log.level == logging.NOTSET and conn_log.isEnabledFor(logging.DEBUG)
            other.debug("eight")  # stock again: every record becomes an event
            assert emitted[-1] == "eight"
        finally:
            handler.uninstall()
            for h in list(root.handlers):
                if h not in saved_handlers:
                    root.removeHandler(h)

    try:
        asyncio.run(go())
    finally:
        root.setLevel(saved_level)
        conn_log.setLevel(logging.NOTSET)
        for h in saved_handlers:
            root.addHandler(h)


def test_connection_log_level_follows_the_handlers():
    """quietlogs.ConnectionLogLevel on a logger tree of its own."""
    from helicone_addon.proxy import quietlogs

    top = logging.getLogger(f"qtest{uuid.uuid4().hex}")
    top.propagate = False
    top.setLevel(logging.DEBUG)
    child = logging.getLogger(top.name + ".server")
    legacy = logging.Handler(logging.NOTSET)
    term = logging.Handler(logging.WARNING)
    top.addHandler(legacy)
    top.addHandler(term)
    gate = quietlogs.LogEventGate(lambda: True)
    gate.attach(legacy)
    lvl = quietlogs.ConnectionLogLevel(gate, child.name)
    lvl.update(add_log_listened=False)
    assert child.getEffectiveLevel() == logging.WARNING
    lvl.update(add_log_listened=True)  # the legacy handler takes everything again
    assert child.getEffectiveLevel() == logging.DEBUG
    capture = logging.Handler(logging.INFO)
    child.addHandler(capture)  # a handler on the logger itself counts too
    lvl.update(add_log_listened=False)
    assert child.getEffectiveLevel() == logging.INFO
    child.setLevel(logging.ERROR)  # somebody else's choice: kept
    lvl.update(add_log_listened=True)
    assert child.level == logging.ERROR
    lvl.restore()
    assert child.level == logging.ERROR
    child.setLevel(logging.NOTSET)
    lvl.update(add_log_listened=False)
    lvl.restore()
    assert child.level == logging.NOTSET
    gate.detach()
    assert legacy.filters == []
    broken = quietlogs.LogEventGate(lambda: 1 / 0)  # a gate that cannot tell never breaks a log call
    assert broken.filter(logging.LogRecord("x", logging.DEBUG, __file__, 1, "m", None, None)) is True

def test_hook_args_are_the_stock_args():
    """`_hook_args` (field getters cached per hook class) gives what `Hook.args()` gives, for hooks
    of zero, one and several fields, and asks a hook with its own `args()`."""
    import dataclasses as dc

    from mitmproxy.proxy import layers, server_hooks

    f = tflow.tflow(resp=True)

    @dc.dataclass
    class TwoHook(hooks.Hook):
        a: int
        b: str
        name = "helicone_test_two"

    @dc.dataclass
    class OwnArgs(hooks.Hook):
        x: int
        name = "helicone_test_own"

        def args(self):
            return [self.x * 2]

    events = [
        hooks.RunningHook(), hooks.DoneHook(), hooks.ConfigureHook({"a"}), hooks.UpdateHook([f]),
        layers.http.HttpRequestHook(f), layers.http.HttpResponseHook(f), server_hooks.ClientConnectedHook(f.client_conn),
        layers.http.HttpConnectHook(f), TwoHook(1, "x"), TwoHook(2, "y"), OwnArgs(3), OwnArgs(4),
    ]
    for e in events:
        for _ in range(2):  # the second time from the cache
            assert fastdispatch._hook_args(e) == e.args(), e
    assert fastdispatch._hook_args(OwnArgs(5)) == [10]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
