"""The browsable web view: Datasette with our metadata, canned queries, templates and a chart plugin.

`helicone-addon ui` (cli_reports.cmd_ui) runs `datasette serve` with:
  --metadata      a file written from metadata.build_metadata() (keyed by the database's name)
  --template-dir  TEMPLATES_DIR: database.html / query.html / table.html extending Datasette's own
and registers the plugin module helicone_addon.ui.plugin (server-side SVG charts: no JavaScript, no
network) with Datasette's plugin manager, in process.
"""

from __future__ import annotations

from pathlib import Path

UI_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = UI_DIR / "templates"


def register_plugin() -> None:
    """Register helicone_addon.ui.plugin with Datasette (idempotent)."""
    from datasette.plugins import pm

    from . import plugin

    if not pm.is_registered(plugin):
        pm.register(plugin, name="helicone_addon_ui")
