"""Fast addon dispatch for mitmproxy's stock `AddonManager`.

Stock dispatch walks the whole addon chain for every event: for each of the ~36 default addons it
enters a `safecall()` context manager, creates a `traverse()` generator and does a `getattr` for
the hook name, although only a handful of addons implement any given hook; and after every flow
hook it repeats the walk for an `update` hook that no default addon implements. On a small request
that is about half of mitmdump's CPU.

`install(master.addons)` keeps the master and every addon, and patches THAT `AddonManager`
instance (never the class) so that each hook name maps to a cached plan: the (addon, method) pairs
that exist, in stock order, grouped by top-level addon. Semantics kept from stock dispatch:

* same addons, same order, nested `addons` sub-chains included (ScriptLoader -> Script -> the
  `-s` script module), depth first, parent before children;
* an exception in a handler is logged exactly like `safecall()` does ("Addon error: ..." on the
  `mitmproxy.addonmanager` logger) and skips the rest of that top-level addon's sub-tree only;
  `AddonHalt` stops the event; `OptionsError` propagates; a non-callable hook attribute raises
  `AddonManagerError` (logged), a module attribute with a hook's name is skipped; async handlers
  are awaited in `trigger_event` and refused (logged) by the sync `trigger`;
* `update` events that no addon implements are not even created;
* the plan is dropped whenever addons are added, registered, removed or cleared, after every
  `configure`, when the chain list is replaced, and when any nested `addons` list changes (checked
  on every dispatch); if an addon is added or removed *during* a dispatch, the rest of that
  dispatch falls back to stock semantics;
* `load`, `configure`, `running` and `done` (rare, and the ones that reshape the chain) always use
  stock dispatch.

mitmproxy's DEBUG records per connection, and the deprecated `add_log` event it makes of each, are
kept from costing anything while nobody reads them (`quietlogs.py`): the plans say whether any
addon implements `add_log`.

Not kept: a hook method assigned or replaced on an addon *after* the plan was built is seen at the
next rebuild (next add/remove/configure), not immediately.

It is enabled only on the mitmproxy minor versions it was tested against (`SUPPORTED`), and only
for an `AddonManager` whose dispatch methods are not overridden; `HELICONE_FAST_DISPATCH=0`
turns it off. Otherwise `install` returns False and mitmproxy dispatches as usual.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import operator
import os
import sys
import types
from typing import Any

from mitmproxy import addonmanager, exceptions, flow, hooks
from mitmproxy.addonmanager import AddonManager, cut_traceback, traverse

from . import quietlogs

logger = logging.getLogger(__name__)
_am_logger = addonmanager.logger  # "Addon error" lines go where stock dispatch puts them

SUPPORTED = ("12.2.",)
ENV = "HELICONE_FAST_DISPATCH"
STOCK_HOOKS = frozenset({"load", "configure", "running", "done"})
_PATCHED = ("trigger_event", "trigger", "handle_lifecycle", "register", "add", "remove", "clear")

# handler kinds
_CALL = 0  # a sync or async callable
_CORO = 1  # an `async def` (the sync `trigger` refuses it, like invoke_addon_sync)
_NOT_CALLABLE = 2  # raises AddonManagerError when reached
_DYNAMIC = 3  # getattr raised while planning: look it up again when reached (raises there)


def _mitmproxy_version() -> str:
    from mitmproxy import version

    return version.VERSION


def enabled_by_env() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def supported(version: str | None = None) -> bool:
    v = _mitmproxy_version() if version is None else version
    return any(v.startswith(p) for p in SUPPORTED)


def is_installed(addons: Any) -> bool:
    return isinstance(getattr(addons, "__dict__", None), dict) and "_helicone_fast" in addons.__dict__


def install(addons: AddonManager) -> bool:
    """Patch this AddonManager instance to dispatch through cached plans. True if active."""
    if not enabled_by_env():
        logger.debug("fast dispatch off (%s=0)", ENV)
        return False
    if not supported():
        logger.info("fast dispatch not enabled: tested on mitmproxy %s only, running %s",
                    "/".join(p + "x" for p in SUPPORTED), _mitmproxy_version())
        return False
    if not isinstance(addons, AddonManager):
        return False
    cls = type(addons)
    for name in (*_PATCHED, "invoke_addon", "invoke_addon_sync", "_iter_hooks"):
        if getattr(cls, name) is not getattr(AddonManager, name):
            logger.info("fast dispatch not enabled: %s.%s is overridden", cls.__name__, name)
            return False
    if is_installed(addons):
        return True
    _FastDispatch(addons)
    return True


def uninstall(addons: AddonManager) -> bool:
    """Back to stock dispatch (for tests and benchmarks)."""
    if not is_installed(addons):
        return False
    fast = addons.__dict__["_helicone_fast"]
    fast.log_gate.detach()
    fast.log_level.restore()
    for name in (*_PATCHED, "_helicone_fast"):
        addons.__dict__.pop(name, None)
    return True


_ARGS: dict[type, Any] = {}


def _hook_args(event: hooks.Hook) -> list:
    """`event.args()`, without `dataclasses.fields()` per event (4% of a new connection's CPU)."""
    get = _ARGS.get(type(event))
    if get is None:
        cls = type(event)
        if cls.args is not hooks.Hook.args:  # a hook with its own args(): ask it every time
            get = cls.args
        else:
            names = tuple(f.name for f in dataclasses.fields(cls))
            fetch = operator.attrgetter(*names) if names else None
            if len(names) == 1:  # attrgetter of one name gives the value, not a tuple
                get = lambda e, fetch=fetch: [fetch(e)]  # noqa: E731
            elif names:
                get = lambda e, fetch=fetch: list(fetch(e))  # noqa: E731
            else:
                get = lambda e: []  # noqa: E731
        _ARGS[cls] = get
    return get(event)


class _HookPlans:
    """Which handlers each hook has, in chain order: built once per hook, rebuilt when the addon
    tree changes (an addon added or removed anywhere, or `configure`)."""

    def __init__(self, mgr: AddonManager) -> None:
        self.mgr = mgr
        self.generation = 0
        self._built_gen = -1
        self.chain: list | None = None
        self._chain_len = -1
        self._containers: tuple = ()
        self.plans: dict[str, tuple] = {}
        self.rebuilds = 0

    def invalidate(self) -> None:
        self.generation += 1

    def _valid(self) -> bool:
        chain = self.mgr.chain
        if self._built_gen != self.generation or chain is not self.chain or len(chain) != self._chain_len:
            return False
        for container, kids in self._containers:
            try:
                cur = container.addons
            except Exception:  # noqa: BLE001 - a broken `addons` property: rebuild (and fail there as stock does)
                return False
            if len(cur) != len(kids):
                return False
            for x, y in zip(cur, kids):
                if x is not y:
                    return False
        return True

    def _reset(self) -> None:
        chain = self.mgr.chain
        containers = []
        for a in traverse(chain):
            if hasattr(a, "addons"):
                containers.append((a, tuple(a.addons)))
        self._containers = tuple(containers)
        self.chain = chain
        self._chain_len = len(chain)
        self._built_gen = self.generation
        self.plans = {}
        self.rebuilds += 1

    def known_absent(self, name: str) -> bool:
        """True only if the current plans are valid and no addon implements `name`. Reads state only
        (no rebuild), so it is safe from any thread: a stale plan answers False."""
        return self.plans.get(name) == () and self._valid()

    def plan(self, name: str) -> tuple:
        """((index in chain, top-level addon, ((addon, func, kind), ...)), ...) for one hook."""
        if not self._valid():
            self._reset()
        p = self.plans.get(name)
        if p is None:
            p = self.plans[name] = self._build(name)
        return p

    def _build(self, name: str) -> tuple:
        groups = []
        for idx, top in enumerate(self.chain):
            handlers = []
            for a in traverse([top]):
                try:
                    func = getattr(a, name, None)
                except Exception:  # noqa: BLE001 - re-raised when the handler is reached, as in stock
                    handlers.append((a, None, _DYNAMIC))
                    continue
                if not func:
                    continue
                if callable(func):
                    handlers.append((a, func, _CORO if inspect.iscoroutinefunction(func) else _CALL))
                elif isinstance(func, types.ModuleType):
                    continue
                else:
                    handlers.append((a, func, _NOT_CALLABLE))
            if handlers:
                groups.append((idx, top, tuple(handlers)))
        return tuple(groups)


class _FastDispatch:
    """Installed on an AddonManager: its trigger methods walk the cached plans; structural changes
    (register, add, remove, clear) go the stock way and invalidate the plans."""

    def __init__(self, mgr: AddonManager) -> None:
        self.mgr = mgr
        self.hooks = _HookPlans(mgr)
        # stock bound methods (class attributes), used for structural hooks and fallbacks
        self._stock_trigger_event = types.MethodType(AddonManager.trigger_event, mgr)
        self._stock_trigger = types.MethodType(AddonManager.trigger, mgr)
        self._stock_register = types.MethodType(AddonManager.register, mgr)
        self._stock_add = types.MethodType(AddonManager.add, mgr)
        self._stock_remove = types.MethodType(AddonManager.remove, mgr)
        self._stock_clear = types.MethodType(AddonManager.clear, mgr)
        d = mgr.__dict__
        d["_helicone_fast"] = self
        d["trigger_event"] = self.trigger_event
        d["trigger"] = self.trigger
        d["handle_lifecycle"] = self.handle_lifecycle
        d["register"] = self.register
        d["add"] = self.add
        d["remove"] = self.remove
        d["clear"] = self.clear
        self.log_gate = quietlogs.LogEventGate(lambda: self.hooks.known_absent("add_log"))
        self.log_gate.attach(getattr(getattr(mgr, "master", None), "_legacy_log_events", None))
        self.log_level = quietlogs.ConnectionLogLevel(self.log_gate)
        self._structure_changed()

    def _structure_changed(self) -> None:
        """The addons or the options changed: stale plans; the connection logger's level again."""
        self.hooks.invalidate()
        try:
            listened = any(getattr(a, "add_log", None) for a in traverse(self.mgr.chain))
        except Exception:  # noqa: BLE001 - a broken addon attribute: records keep flowing
            listened = True
        self.log_level.update(listened)

    @property
    def rebuilds(self) -> int:
        return self.hooks.rebuilds

    # -- structural changes: stock, then the plans are stale -------------------------------------
    def register(self, addon):
        try:
            return self._stock_register(addon)
        finally:
            self._structure_changed()

    def add(self, *addons) -> None:
        try:
            self._stock_add(*addons)  # calls self.register (ours) per addon
        finally:
            self._structure_changed()

    def remove(self, addon) -> None:
        try:
            self._stock_remove(addon)
        finally:
            self._structure_changed()

    def clear(self) -> None:
        try:
            self._stock_clear()
        finally:
            self._structure_changed()

    # -- dispatch ----------------------------------------------------------------------------------
    @staticmethod
    def _resolve(a, name: str, kind: int, func):
        """Handlers whose plan entry is not a plain call: behave as stock _iter_hooks does."""
        if kind == _DYNAMIC:
            func = getattr(a, name, None)  # may raise, as in stock dispatch
            if not func or isinstance(func, types.ModuleType):
                return None
            if callable(func):
                return func
        raise exceptions.AddonManagerError(f"Addon handler {name} ({a}) not callable")

    @staticmethod
    def _log_error(frame: str) -> None:
        """What safecall() logs; the traceback starts at the handler (our frame is cut off)."""
        etype, value, tb = sys.exc_info()
        tb = cut_traceback(tb, frame)
        _am_logger.error(f"Addon error: {value}", exc_info=(etype, value, tb))

    async def trigger_event(self, event: hooks.Hook) -> None:
        name = event.name
        if name in STOCK_HOOKS:
            try:
                await self._stock_trigger_event(event)
            finally:
                if name == "configure":
                    self._structure_changed()
            return
        hooks = self.hooks
        plan = hooks.plan(name)
        if not plan:
            return
        chain = hooks.chain
        gen = hooks.generation
        args = _hook_args(event)
        for idx, top, handlers in plan:
            try:
                for a, func, kind in handlers:
                    if kind > _CORO:
                        func = self._resolve(a, name, kind, func)
                        if func is None:
                            continue
                    res = func(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
                    if hooks.generation != gen:  # an addon was added/removed: finish the stock way
                        await self._rest_of_group_stock(top, a, event)
                        break
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception:  # noqa: BLE001 - what safecall() does
                self._log_error("trigger_event")
            if hooks.generation != gen:
                await self._rest_of_chain_stock(chain, idx + 1, event)
                return

    async def _rest_of_group_stock(self, top, last, event) -> None:
        seen = False
        for a, func in self.mgr._iter_hooks(top, event):
            if not seen:
                seen = a is last
                continue
            res = func(*_hook_args(event))
            if res is not None and inspect.isawaitable(res):
                await res

    async def _rest_of_chain_stock(self, chain: list, start: int, event) -> None:
        j = start
        while j < len(chain):  # like stock's `for i in self.chain`: sees in-place appends
            i = chain[j]
            j += 1
            try:
                with addonmanager.safecall():
                    await self.mgr.invoke_addon(i, event)
            except exceptions.AddonHalt:
                return

    def trigger(self, event: hooks.Hook) -> None:
        name = event.name
        if name in STOCK_HOOKS:
            try:
                self._stock_trigger(event)
            finally:
                if name == "configure":
                    self._structure_changed()
            return
        hooks = self.hooks
        plan = hooks.plan(name)
        if not plan:
            return
        chain = hooks.chain
        gen = hooks.generation
        args = _hook_args(event)
        for idx, top, handlers in plan:
            try:
                for a, func, kind in handlers:
                    if kind:
                        if kind == _CORO:
                            raise exceptions.AddonManagerError(
                                f"Async handler {name} ({a}) cannot be called from sync context"
                            )
                        func = self._resolve(a, name, kind, func)
                        if func is None:
                            continue
                        if inspect.iscoroutinefunction(func):
                            raise exceptions.AddonManagerError(
                                f"Async handler {name} ({a}) cannot be called from sync context"
                            )
                    func(*args)
                    if hooks.generation != gen:
                        self._rest_of_group_stock_sync(top, a, event)
                        break
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception:  # noqa: BLE001 - what safecall() does
                self._log_error("trigger")
            if hooks.generation != gen:
                j = idx + 1
                while j < len(chain):
                    i = chain[j]
                    j += 1
                    try:
                        with addonmanager.safecall():
                            self.mgr.invoke_addon_sync(i, event)
                    except exceptions.AddonHalt:
                        return
                return

    def _rest_of_group_stock_sync(self, top, last, event) -> None:
        seen = False
        for a, func in self.mgr._iter_hooks(top, event):
            if not seen:
                seen = a is last
                continue
            if inspect.iscoroutinefunction(func):
                raise exceptions.AddonManagerError(
                    f"Async handler {event.name} ({a}) cannot be called from sync context"
                )
            func(*_hook_args(event))

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        message = _hook_args(event)[0]
        await self.trigger_event(event)
        if isinstance(message, flow.Flow) and self.hooks.plan("update"):
            await self.trigger_event(hooks.UpdateHook([message]))
