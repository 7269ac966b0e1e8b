"""Datasette metadata for the log: titles, column descriptions and canned queries.

Datasette keys metadata by database name (the file's stem), so it is built for a given name.
Canned queries only read; the chart plugin draws a chart on any query page whose columns include
`day` and `cost_usd` (stacked by `model` when present), and on the database page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..columns import DESCRIPTIONS

ERROR = "(status IS NULL OR status >= 400 OR coalesce(error, '') != '')"

REQUEST_COLUMNS: dict[str, str] = DESCRIPTIONS

CANNED_QUERIES: dict[str, dict[str, Any]] = {
    "cost_per_day": {
        "title": "Cost per day",
        "description": "Calls, errors, tokens, cost and cache savings per UTC day.",
        "sql": f"""select substr(created_at, 1, 10) as day,
  count(*) as calls,
  sum(case when {ERROR} then 1 else 0 end) as errors,
  coalesce(sum(total_tokens), 0) as total_tokens,
  round(total(cost_usd), 6) as cost_usd,
  round(total(cache_saved_usd), 6) as cache_saved_usd
from requests
group by day
order by day desc""",
    },
    "cost_per_day_by_model": {
        "title": "Cost per day by model (chart)",
        "description": "Cost per UTC day and model, drawn as a stacked bar chart.",
        "sql": """select substr(created_at, 1, 10) as day,
  coalesce(model, '(none)') as model,
  count(*) as calls,
  coalesce(sum(total_tokens), 0) as total_tokens,
  round(total(cost_usd), 6) as cost_usd
from requests
group by day, model
order by day desc, cost_usd desc""",
    },
    "cost_by_model": {
        "title": "Cost by model",
        "description": "Calls, errors, tokens, cost and mean latency per provider and model.",
        "sql": f"""select provider, model,
  count(*) as calls,
  sum(case when {ERROR} then 1 else 0 end) as errors,
  coalesce(sum(prompt_tokens), 0) as prompt_tokens,
  coalesce(sum(completion_tokens), 0) as completion_tokens,
  coalesce(sum(total_tokens), 0) as total_tokens,
  round(total(cost_usd), 6) as cost_usd,
  round(avg(latency_ms)) as avg_latency_ms
from requests
group by provider, model
order by cost_usd desc, calls desc""",
    },
    "cost_by_user": {
        "title": "Cost by user",
        "description": "Calls, tokens and cost per Helicone-User-Id.",
        "sql": """select user_id,
  count(*) as calls,
  coalesce(sum(total_tokens), 0) as total_tokens,
  round(total(cost_usd), 6) as cost_usd,
  min(created_at) as first_at,
  max(created_at) as last_at
from requests
group by user_id
order by cost_usd desc, calls desc""",
    },
    "cost_by_property": {
        "title": "Cost by property",
        "description": "Calls, tokens and cost per custom property value. Leave key empty for every property.",
        "sql": """select p.key, p.value,
  count(*) as calls,
  coalesce(sum(r.total_tokens), 0) as total_tokens,
  round(total(r.cost_usd), 6) as cost_usd
from properties p join requests r on r.id = p.request_id
where :key = '' or p.key = :key
group by p.key, p.value
order by p.key, cost_usd desc""",
    },
    "slowest_calls": {
        "title": "Slowest calls",
        "description": "The 100 calls with the highest latency.",
        "sql": """select id, created_at, provider, model, status, latency_ms, ttft_ms,
  total_tokens, cost_usd, user_id, session_id
from requests
where latency_ms is not null
order by latency_ms desc
limit 100""",
    },
    "errors": {
        "title": "Errors",
        "description": "Calls with no response, an HTTP status >= 400 or an error message, newest first.",
        "sql": f"""select id, created_at, provider, model, status, error, retries, rate_limited,
  user_id, session_id, path
from requests
where {ERROR}
order by created_at desc
limit 500""",
    },
    "cache_savings": {
        "title": "Cache savings",
        "description": "Proxy cache hits and the money they saved, per UTC day.",
        "sql": """select substr(created_at, 1, 10) as day,
  count(*) as calls,
  sum(case when cache_hit then 1 else 0 end) as cache_hits,
  round(100.0 * sum(case when cache_hit then 1 else 0 end) / count(*), 1) as hit_rate_pct,
  round(total(cache_saved_usd), 6) as cache_saved_usd
from requests
group by day
order by day desc""",
    },
    "sessions": {
        "title": "Sessions",
        "description": "Sessions (Helicone-Session-Id) with their calls, cost and first/last time.",
        "sql": f"""select session_id,
  max(session_name) as session_name,
  count(*) as calls,
  sum(case when {ERROR} then 1 else 0 end) as errors,
  coalesce(sum(total_tokens), 0) as total_tokens,
  round(total(cost_usd), 6) as cost_usd,
  min(created_at) as first_at,
  max(created_at) as last_at
from requests
where session_id is not null and session_id != ''
group by session_id
order by last_at desc""",
    },
}


def database_name(path: str | Path) -> str:
    """The name Datasette gives a database file (its stem)."""
    return Path(path).stem


def build_metadata(db_name: str) -> dict[str, Any]:
    return {
        "title": "helicone-addon",
        "description_html": (
            "LLM calls logged by the helicone-addon proxy. Read-only. "
            "Start with the <a href=\"#queries\">queries</a> below; search bodies on the "
            "<code>requests</code> table."
        ),
        "databases": {
            db_name: {
                "title": "LLM call log",
                "description": "Every LLM call seen by the proxy, with tokens, cost, latency, user, session and properties.",
                "tables": {
                    "requests": {
                        "description": "One row per LLM call.",
                        "sort_desc": "created_at",
                        "facets": ["provider", "model", "status", "user_id"],
                        "columns": REQUEST_COLUMNS,
                        "units": {"latency_ms": "ms", "ttft_ms": "ms"},
                    },
                    "properties": {
                        "description": "Custom properties (Helicone-Property-*), one row per call and key.",
                        "columns": {
                            "request_id": "the call (requests.id)",
                            "key": "property name, lower-cased header suffix",
                            "value": "property value",
                        },
                        "facets": ["key"],
                    },
                    "feedback": {
                        "description": "User feedback on calls.",
                        "columns": {"request_id": "the call", "rating": "1 good, 0 bad", "created_at": "when (UTC)"},
                    },
                    "scores": {
                        "description": "Named scores attached to calls.",
                        "columns": {"request_id": "the call", "name": "score name", "value": "score", "created_at": "when (UTC)"},
                    },
                    "store_counters": {"description": "Health counters of the log writer (rows spilled, dropped, reloaded)."},
                    "_migrations": {"hidden": True},
                },
                "queries": CANNED_QUERIES,
            }
        },
    }
