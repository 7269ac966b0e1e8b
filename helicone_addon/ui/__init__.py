"""The browsable web view of the log: `helicone-addon ui`.

A small Starlette app of our own (ui/app.py): overview, requests with facets and search, call
pages with the conversation, sessions as tree and timeline. Pages are Jinja templates
(ui/templates), charts are SVG drawn on the server (ui/chart.py), the only stylesheet is
ui/static/style.css: no JavaScript, nothing fetched from the network. Read-only: every page opens
the log with `PRAGMA query_only`.

    create_app(db_path, middleware=()) -> Starlette   the ASGI app (wrap it, mount it, serve it)
    serve(db_path, host, port, middleware=())         run it with uvicorn until interrupted
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from starlette.middleware import Middleware

from .app import create_app

__all__ = ["create_app", "serve"]


def serve(db_path: str | Path, host: str = "127.0.0.1", port: int = 8001, *, open_browser: bool = False,
          middleware: Sequence[Middleware] = ()) -> None:
    """Serve the web view on host:port (blocks until interrupted); middleware as for create_app."""
    import uvicorn

    app = create_app(db_path, middleware=middleware)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [f"http://{host}:{port}/"]).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
