"""HeliconeGcFreeze: at `running`, the price tables are loaded and everything alive is frozen."""

from __future__ import annotations

import gc

import pytest
from mitmproxy import hooks
from mitmproxy.test import taddons

from helicone_addon.proxy.gcfreeze import HeliconeGcFreeze


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_running_freezes_what_lives_as_long_as_the_proxy(unfrozen, monkeypatch):
    from genai_prices.data_snapshot import get_snapshot

    from helicone_addon import pricing

    calls = []
    monkeypatch.setattr(pricing, "warm", lambda: calls.append(get_snapshot()))
    addon = HeliconeGcFreeze()
    with taddons.context(addon) as tctx:
        assert gc.get_freeze_count() == 0
        tctx.master.addons.invoke_addon_sync(addon, hooks.RunningHook())
        assert len(calls) == 1  # the price tables are loaded first, so they are frozen too
        assert addon.frozen > 1000 and gc.get_freeze_count() > 1000
        snapshot = calls[0]
        assert gc.is_tracked(snapshot)
        assert not any(o is snapshot for o in gc.get_objects())  # frozen: in no generation the collector walks
        garbage = [[]]
        garbage[0].append(garbage)  # a cycle made after start-up is still collected
        del garbage
        assert gc.collect() >= 2


def test_option_off_freezes_nothing(unfrozen):
    addon = HeliconeGcFreeze()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, helicone_gc_freeze=False)
        tctx.master.addons.invoke_addon_sync(addon, hooks.RunningHook())
        assert addon.frozen == 0
        assert gc.get_freeze_count() == 0


def test_a_table_that_cannot_load_does_not_stop_the_proxy(unfrozen, monkeypatch):
    from helicone_addon import pricing

    def broken():
        raise OSError("no snapshot")

    monkeypatch.setattr(pricing, "warm", broken)
    addon = HeliconeGcFreeze()
    with taddons.context(addon) as tctx:
        tctx.master.addons.invoke_addon_sync(addon, hooks.RunningHook())
        assert addon.frozen > 1000 and gc.get_freeze_count() > 1000
