"""`helicone-addon env`: the shell exports an app needs to send its calls through the proxy.

Also the home of where a client finds the proxy by default (its URL, mitmproxy's confdir with the
CA certificate), which `rerun` shares."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

DEFAULT_PROXY = "http://127.0.0.1:8080"


def default_confdir() -> str:
    return os.environ.get("MITMPROXY_CONFDIR", "~/.mitmproxy")


def env_exports(confdir: str, proxy: str, data_dir: str | None = None) -> str:
    from helicone_addon import security

    ca = str(Path(confdir).expanduser() / "mitmproxy-ca-cert.pem")
    lines = [
        f"export HTTPS_PROXY={shlex.quote(proxy)}",
        f"export HTTP_PROXY={shlex.quote(proxy)}",
        "export NO_PROXY=localhost,127.0.0.1",
        f"export SSL_CERT_FILE={shlex.quote(ca)}",
        f"export REQUESTS_CA_BUNDLE={shlex.quote(ca)}",
        f"export NODE_EXTRA_CA_CERTS={shlex.quote(ca)}",
        security.env_export(data_dir),  # the local API's token, as Helicone's SDKs read it
    ]
    if not Path(ca).exists():
        lines.insert(0, f"# note: {ca} does not exist yet; start the proxy once to create it")
    return "\n".join(lines)


def cmd_env(args: argparse.Namespace) -> int:
    print(env_exports(args.confdir, args.proxy, args.data_dir))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("env", help="print the shell exports an app needs to use the proxy")
    p.add_argument("--confdir", default=default_confdir())
    p.add_argument("--proxy", default=DEFAULT_PROXY)
    p.add_argument("--data-dir", default=None, help="the proxy's helicone_data_dir (default: ~/.helicone-addon)")
    p.set_defaults(func=cmd_env)
