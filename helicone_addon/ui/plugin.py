"""Datasette plugin: server-side SVG charts for the helicone-addon log.

`helicone-addon ui` registers this module with Datasette's plugin manager before serving (it is a
module of the package, so it ships with it; nothing is registered for other Datasette instances).

* the database page gets "cost per day by model" for the last 60 logged days (template
  database.html includes `helicone_chart`);
* any query page whose columns include `day` and `cost_usd` gets a chart of its rows, stacked by
  `model` when that column exists (template query.html calls `helicone_rows_chart`).
Everything is rendered on the server as inline SVG: no JavaScript, no network.

It also puts the view behind the local API's token and Host / Origin rules (ui/guard.py).
"""

from __future__ import annotations

from datasette import hookimpl
from markupsafe import Markup

from helicone_addon.ui import guard
from helicone_addon.ui.chart import cost_chart_svg

DB_PAGE_SQL = """
select substr(created_at, 1, 10) as day, coalesce(model, '(none)') as model, total(cost_usd) as cost_usd
from requests
where created_at >= date((select substr(max(created_at), 1, 10) from requests), '-59 days')
group by day, model
"""


def rows_chart(rows, columns) -> Markup:
    cols = list(columns or [])
    if "day" not in cols or "cost_usd" not in cols:
        return Markup("")
    has_model = "model" in cols
    points = []
    for row in rows or []:
        points.append((row["day"], row["model"] if has_model else "all models", row["cost_usd"]))
    title = "Cost per day by model (USD)" if has_model else "Cost per day (USD)"
    return Markup(cost_chart_svg(points, title=title))


@hookimpl
def asgi_wrapper(datasette):
    return guard.wrap


@hookimpl
def prepare_jinja2_environment(env, datasette):
    env.globals["helicone_rows_chart"] = rows_chart


@hookimpl
def extra_template_vars(template, database, datasette):
    if template != "database.html" or not database:
        return {}

    async def inner():
        try:
            db = datasette.get_database(database)
            if not await db.table_exists("requests"):
                return {}
            result = await db.execute(DB_PAGE_SQL)
        except Exception as e:  # never break the page for a chart
            return {"helicone_chart": Markup(f"<!-- helicone chart failed: {type(e).__name__} -->")}
        points = [(r["day"], r["model"], r["cost_usd"]) for r in result.rows]
        return {"helicone_chart": Markup(cost_chart_svg(points, title="Cost per day by model, last 60 days (USD)"))}

    return inner
