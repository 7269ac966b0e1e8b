"""`helicone-addon run` and `helicone-addon web`: mitmdump / mitmweb with the addons loaded.

Every argument after the command goes to mitmproxy unchanged (-p, --mode, --set, --map-remote, -q,
...). Defaults: listen 127.0.0.1:8080. `launch` runs one; `register` lists both in the top-level
help (main() sends them here before argparse sees them).
"""

from __future__ import annotations

import argparse
import os
import sys

COMMANDS = ("run", "web")


def _with_defaults(args: list[str]) -> list[str]:
    """Listen on loopback unless the user chose a listen host."""
    if not any(a == "--listen-host" or a.startswith("--listen-host=") or a.startswith("listen_host=") for a in args):
        args = ["--listen-host", "127.0.0.1", *args]
    return args


def _raise_nofile() -> None:
    """Each proxied call holds two descriptors: lift the soft limit to the hard one, and say so."""
    from helicone_addon.limits import raise_nofile_limit

    old, new, hard = raise_nofile_limit()
    if new != old:
        print(f"helicone: raised the open-file limit from {old} to {new} (hard limit {hard})", file=sys.stderr)


def run_dump(args: list[str]) -> int:
    from mitmproxy.proxy import mode_servers
    from mitmproxy.tools import cmdline, dump
    from mitmproxy.tools import main as mitm_main

    from helicone_addon import workers
    from helicone_addon.proxy import fastdispatch, make_addons

    class HeliconeDumpMaster(dump.DumpMaster):
        def __init__(self, options, **kwargs) -> None:
            super().__init__(options, **kwargs)
            self.addons.add(*make_addons())
            workers.add_worker_addons(self.addons)  # X-Helicone-Worker, only under --workers N > 1
            fastdispatch.install(self.addons)

    workers.prepare_worker(mode_servers)  # SO_REUSEPORT, only under --workers N > 1
    _raise_nofile()
    mitm_main.run(HeliconeDumpMaster, cmdline.mitmdump, _with_defaults(args))
    return 0


def run_web(args: list[str]) -> int:
    from mitmproxy.tools import cmdline
    from mitmproxy.tools import main as mitm_main
    from mitmproxy.tools.web.master import WebMaster

    from helicone_addon.proxy import fastdispatch, make_addons

    class HeliconeWebMaster(WebMaster):
        def __init__(self, options, **kwargs) -> None:
            super().__init__(options, **kwargs)
            self.addons.add(*make_addons())
            fastdispatch.install(self.addons)

    # mitmweb shows bodies: keep streamed (SSE) bodies on the flow so the LLM view can render them
    if not any("store_streamed_bodies" in a for a in args):
        args = ["--set", "store_streamed_bodies=true", *args]
    if not any("web_columns" in a for a in args):  # the comment (model, tokens, cost, user) in the list
        args = [*(a for c in ("path", "status", "time", "comment") for a in ("--set", f"web_columns={c}")), *args]
    mitm_main.run(HeliconeWebMaster, cmdline.mitmweb, _with_defaults(args))
    return 0


USAGE = """\
usage: helicone-addon {cmd} [mitm{tool} options] [--set helicone_OPTION=VALUE ...]

The local LLM observability proxy: mitm{tool} with the helicone addons loaded. Every LLM call is logged
to <helicone_data_dir>/helicone.db; Helicone-* request headers shape it and are stripped upstream.
Listens on 127.0.0.1:8080 unless --listen-host/-p say otherwise; the local API on 127.0.0.1:8585.

--workers N|auto (run only): N proxy processes on the same port(s) and data dir (auto: one per CPU).

other commands: helicone-addon env | report | logs | sessions | ui   (helicone-addon -h)

helicone options (--set name=value):
"""


def helicone_options() -> list[tuple[str, str, str]]:
    """(name, default, help) of every option the addons declare, in chain order."""
    from helicone_addon.proxy import make_addons

    found: list[tuple[str, str, str]] = []

    class Loader:
        def add_option(self, name, typespec, default, help, choices=None):
            found.append((name, repr(default) if isinstance(default, str) else str(default), help))

    for addon in make_addons():
        if hasattr(addon, "load") and type(addon).__name__ != "HeliconeMitmweb":  # it adds a view, no option
            addon.load(Loader())
    return found


def print_help(cmd: str) -> None:
    import textwrap

    tool = "dump" if cmd == "run" else "web"
    out = [USAGE.format(cmd=cmd, tool=tool)]
    for name, default, text in helicone_options():
        out.append(f"  {name} (default {default})")
        out.append(textwrap.fill(text, 100, initial_indent="      ", subsequent_indent="      "))
    out.append(f"\nmitm{tool} options follow.\n")
    print("\n".join(out), flush=True)


# What the proxy imports at start or on its first calls (lazily): their packages are compiled for -O.
RUNTIME_MODULES = (
    "mitmproxy.tools.dump", "mitmproxy.tools.web.master", "helicone_addon.proxy", "helicone_addon.proxy.relay",
    "helicone_addon.api", "helicone_addon.ui", "helicone_addon.exporters.otel", "helicone_addon.record",
    "httpcore", "sqlite_utils",
)


def _mitmproxy_http_source() -> str | None:
    """The source file of mitmproxy's HTTP layer (found without importing mitmproxy)."""
    import importlib.util

    spec = importlib.util.find_spec("mitmproxy")  # a top-level spec: nothing is imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(spec.submodule_search_locations[0], "proxy", "layers", "http", "__init__.py")


def _optimized_bytecode_ready() -> bool:
    """Whether `python -O` will find mitmproxy compiled for it: already there (bootstrap.sh), or
    writable on the first start. Otherwise (PYTHONDONTWRITEBYTECODE set, or a read-only
    site-packages) every start would compile mitmproxy and its dependencies again: seconds of
    startup and of stalls on the first calls, far more than -O saves."""
    import importlib.util

    source = _mitmproxy_http_source()
    if source is None:
        return False
    cached = importlib.util.cache_from_source(source, optimization=1)
    if os.path.exists(cached):
        return True
    return not sys.dont_write_bytecode and os.access(os.path.dirname(os.path.dirname(cached)), os.W_OK)


def precompile_optimized() -> int:
    """Compile, for `python -O`, every package the proxy imports (bootstrap.sh runs this once)."""
    import compileall
    import importlib
    import importlib.util
    from pathlib import Path

    for name in RUNTIME_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional part not installed
            pass
    dirs = set()
    for mod in list(sys.modules.values()):
        top = (getattr(mod, "__spec__", None) and mod.__spec__.parent or "").split(".")[0]
        path = getattr(sys.modules.get(top), "__path__", None)
        if path:
            dirs.update(Path(p) for p in path)
    for d in sorted(dirs):
        compileall.compile_dir(d, quiet=2, optimize=1, workers=0)  # a file that does not compile is skipped
    source = _mitmproxy_http_source()
    return 0 if source and os.path.exists(importlib.util.cache_from_source(source, optimization=1)) else 1


def optimized_reexec(argv: list[str]) -> None:
    """Run the proxy under `python -O`: mitmproxy then skips its debug-only checks (a dataclass
    type check on every HTTP message, an event-type check on every state-machine step), about a
    fifth of its CPU per request. Only when the optimized bytecode exists or can be written (see
    `_optimized_bytecode_ready`). HELICONE_ADDON_NO_OPTIMIZE=1 keeps the plain interpreter."""
    if sys.flags.optimize or os.environ.get("HELICONE_ADDON_NO_OPTIMIZE") == "1" or not _optimized_bytecode_ready():
        return
    try:
        os.execv(sys.executable, [sys.executable, "-O", "-m", "helicone_addon", *argv])
    except OSError:
        pass  # stay in this interpreter


def launch(cmd: str, rest: list[str]) -> int:
    """Run `cmd` (run or web) with the mitmproxy arguments `rest`."""
    if "-h" in rest or "--help" in rest:
        print_help(cmd)
    sys.argv[0] = f"helicone-addon {cmd}"  # mitmproxy's usage line names the program
    if cmd == "web":
        return run_web(rest)
    from helicone_addon import workers

    try:
        n, rest = workers.split_workers_flag(rest)
    except ValueError as e:
        print(f"helicone-addon run: {e}", file=sys.stderr)
        return 2
    if n > 1:
        return workers.run_workers(n, rest)
    return run_dump(rest)


def register(subparsers: argparse._SubParsersAction) -> None:
    """List run and web in the top-level help; their arguments are mitmproxy's, never parsed here."""
    subparsers.add_parser("run", help="start the proxy (mitmdump options follow)")
    subparsers.add_parser("web", help="start the proxy with mitmweb's UI (mitmweb options follow)")
