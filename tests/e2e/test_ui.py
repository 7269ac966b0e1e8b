"""The web view: `helicone-addon ui` runs Datasette (read-only, 127.0.0.1, behind the API token) on a
seeded log; canned queries answer what independent SQL says, and headless Chromium sees the queries and
the chart after opening the printed `?token=` URL once.

Chromium is Debian's (`apt-get install -y chromium`). Without it the browser test is skipped, except
in CI (env CI set), where it must run. Same for Datasette (the `ui` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlite_utils

from helicone_addon import cli_reports, security
from helicone_addon.store import migrations
from helicone_addon.ui import metadata as ui_metadata
from helicone_addon.ui.chart import CHART_ID, cost_chart_svg

pytestmark = pytest.mark.timeout(120)

IN_CI = bool(os.environ.get("CI"))

try:
    import datasette  # noqa: F401

    HAVE_DATASETTE = True
except ImportError:
    HAVE_DATASETTE = False

needs_datasette = pytest.mark.skipif(
    not HAVE_DATASETTE and not IN_CI, reason="datasette not installed (pip install '.[ui]')"
)


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = chromium_binary()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI, reason="chromium not installed (apt-get install -y chromium)"
)

MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-sonnet"), ("gemini", "gemini-1.5-flash")]
DAYS = ["2025-05-01", "2025-05-02", "2025-05-03"]


def seed(path: Path) -> None:
    db = sqlite_utils.Database(path)
    migrations.migrate(db)
    rows, props = [], []
    n = 0
    for d, day in enumerate(DAYS):
        for m, (provider, model) in enumerate(MODELS):
            for k in range(m + 1):
                n += 1
                rid = f"00000000-0000-4000-8000-{n:012d}"
                status = 500 if (n % 7 == 0) else 200
                rows.append({
                    "id": rid,
                    "created_at": f"{day}T{10 + k:02d}:{m:02d}:00.000Z",
                    "provider": provider,
                    "model": model,
                    "status": status,
                    "latency_ms": 100.0 * n,
                    "prompt_tokens": 10 * n,
                    "completion_tokens": n,
                    "total_tokens": 11 * n,
                    "cost_usd": None if status >= 400 else round(0.001 * (m + 1) * (d + 1), 6),
                    "cache_hit": int(n % 5 == 0),
                    "cache_saved_usd": 0.01 if n % 5 == 0 else None,
                    "user_id": ["alice", "bob"][n % 2],
                    "session_id": "sess-1" if n <= 4 else None,
                    "session_path": "/plan" if n <= 4 else None,
                    "session_name": "demo" if n <= 4 else None,
                    "error": "upstream 500" if status >= 400 else None,
                    "properties": json.dumps({"team": ["search", "ads"][n % 2]}),
                    "request_body": json.dumps({"model": model, "messages": [{"role": "user", "content": f"hello {n}"}]}),
                    "response_body": json.dumps({"choices": [{"message": {"content": f"world {n}"}}]}),
                })
                props.append({"request_id": rid, "key": "team", "value": ["search", "ads"][n % 2]})
    rows.append({"id": "00000000-0000-4000-8000-999999999999", "created_at": "2025-05-03T23:00:00.000Z",
                 "provider": "openai", "model": "<b>evil</b>", "status": 200, "cost_usd": 0.0005})
    db["requests"].insert_all(rows, alter=False)
    db["properties"].insert_all(props)
    db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def log_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "helicone.db"
    seed(path)
    return path


AUTH: dict[str, str] = {}  # Authorization: Bearer <the data dir's token>, once the server is up


@pytest.fixture(scope="module")
def server(log_path, tmp_path_factory):
    if not HAVE_DATASETTE:  # only reached in CI (needs_datasette skips otherwise)
        pytest.fail("CI is set but datasette is missing: install the 'ui' extra")
    port = free_port()
    logfile = tmp_path_factory.mktemp("uilog") / "ui.log"
    data_dir = tmp_path_factory.mktemp("uidata")
    AUTH["Authorization"] = f"Bearer {security.ensure_token(data_dir)}"  # as the proxy would have made it
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "helicone_addon.cli_reports", "ui", "--db", str(log_path), "--port", str(port),
             "--data-dir", str(data_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ui exited with {proc.returncode}:\n{logfile.read_text()}")
            try:
                if httpx.get(f"{base}/-/versions.json", headers=AUTH, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ui did not come up in 30 s:\n{logfile.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def q(base: str, name: str, **params) -> list[dict]:
    r = httpx.get(f"{base}/helicone/{name}.json", params={"_shape": "array", **params}, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def sql(path: Path, query: str, params=()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query, params).fetchall()


# ---------------------------------------------------------------------------------------------


def test_datasette_argv_is_loopback_and_read_only(tmp_path):
    argv = cli_reports.datasette_argv(tmp_path / "helicone.db", tmp_path / "m.json", 9999)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "9999"
    assert "--template-dir" in argv and "--immutable" not in argv  # live log: new calls show up
    meta = ui_metadata.build_metadata("helicone")
    queries = meta["databases"]["helicone"]["queries"]
    assert not any(qd.get("write") for qd in queries.values())
    assert {"cost_per_day", "cost_per_day_by_model", "cost_by_model", "cost_by_user", "cost_by_property",
            "slowest_calls", "errors", "cache_savings", "sessions"} <= set(queries)


def test_request_column_descriptions_cover_the_schema():
    db = sqlite_utils.Database(memory=True)
    migrations.migrate(db)
    assert set(db["requests"].columns_dict) == set(ui_metadata.REQUEST_COLUMNS)


def test_chart_svg():
    empty = cost_chart_svg([])
    assert empty.startswith("<svg") and "No calls logged yet" in empty
    svg = cost_chart_svg([("2025-05-01", "a", 1.0), ("2025-05-03", "b", 2.0), ("2025-05-03", "<x>", 0.5)])
    assert f'id="{CHART_ID}"' in svg and svg.endswith("</svg>")
    assert "05-02" in svg  # the missing day is filled in
    assert "<x>" not in svg and "&lt;x&gt;" in svg
    assert svg.count("<rect") == 3 + 3  # three segments, three legend swatches
    many = cost_chart_svg([("2025-05-01", f"m{i}", float(i + 1)) for i in range(12)], max_series=8)
    assert "other" in many and "m0 " not in many and "m11" in many


@needs_datasette
def test_canned_queries_match_sql(server, log_path):
    by_model = q(server, "cost_by_model")
    exp = sql(log_path, "select model, count(*), sum(ifnull(cost_usd, 0)) from requests group by model")
    assert {r["model"]: (r["calls"], round(r["cost_usd"], 6)) for r in by_model} == {
        m: (c, round(cost, 6)) for m, c, cost in exp}
    per_day = q(server, "cost_per_day")
    exp = sql(log_path, "select date(created_at), count(*), sum(ifnull(cost_usd,0)), sum(ifnull(cache_saved_usd,0)) "
                        "from requests group by 1 order by 1 desc")
    assert [(r["day"], r["calls"], round(r["cost_usd"], 6), round(r["cache_saved_usd"], 6)) for r in per_day] == [
        (d, c, round(cost, 6), round(saved, 6)) for d, c, cost, saved in exp]
    errors = q(server, "errors")
    assert {r["id"] for r in errors} == {r[0] for r in sql(log_path, "select id from requests where status >= 500")}
    slowest = q(server, "slowest_calls")
    assert [r["latency_ms"] for r in slowest] == sorted((r["latency_ms"] for r in slowest), reverse=True)
    assert slowest[0]["latency_ms"] == sql(log_path, "select max(latency_ms) from requests")[0][0]
    team = q(server, "cost_by_property", key="team")
    exp = sql(log_path, "select p.value, count(*) from properties p where p.key = 'team' group by 1")
    assert {r["value"]: r["calls"] for r in team} == dict(exp)
    assert q(server, "cost_by_property", key="nosuchkey") == []
    sessions = q(server, "sessions")
    assert [(s["session_id"], s["calls"], s["session_name"]) for s in sessions] == [("sess-1", 4, "demo")]
    users = q(server, "cost_by_user")
    assert {u["user_id"]: u["calls"] for u in users} == dict(sql(log_path, "select user_id, count(*) from requests group by 1"))
    savings = q(server, "cache_savings")
    assert sum(r["cache_hits"] for r in savings) == sql(log_path, "select sum(cache_hit) from requests")[0][0]


@needs_datasette
def test_web_view_is_read_only_and_searchable(server, log_path):
    before = sql(log_path, "select count(*) from requests")[0][0]
    r = httpx.get(f"{server}/helicone.json", params={"sql": "delete from requests"}, headers=AUTH, timeout=10)
    assert r.status_code >= 400
    assert sql(log_path, "select count(*) from requests")[0][0] == before
    r = httpx.post(f"{server}/helicone/cost_by_model", data={}, headers=AUTH, timeout=10)
    assert r.status_code >= 400
    # full-text search box on the requests table (requests_fts)
    r = httpx.get(f"{server}/helicone/requests.json", params={"_search": "world", "_shape": "array", "_size": "max"}, headers=AUTH, timeout=10)
    assert r.status_code == 200 and len(r.json()) == before - 1
    page = httpx.get(f"{server}/helicone/requests", headers=AUTH, timeout=10).text
    assert "Column descriptions" in page and "time to first token" in page
    assert httpx.get(f"{server}/helicone.db", headers=AUTH, timeout=10).status_code in (403, 404)  # download off


@needs_datasette
def test_web_view_needs_the_token_and_our_host(server):
    token = AUTH["Authorization"].removeprefix("Bearer ")
    page = f"{server}/helicone/requests.json"
    assert httpx.get(page, timeout=10).status_code == 401
    assert httpx.get(page, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    assert httpx.get(page, params={"token": "nope"}, timeout=10).status_code == 401
    # DNS rebinding: a foreign name for 127.0.0.1 is refused even with the token
    r = httpx.get(page, headers={**AUTH, "Host": "attacker.example.com"}, timeout=10)
    assert r.status_code == 403
    r = httpx.get(page, headers={**AUTH, "Origin": "http://attacker.example.com"}, timeout=10)
    assert r.status_code == 403
    # the printed URL: the token once, then a cookie (not the token itself) and the URL without it
    with httpx.Client(timeout=10) as browser:
        r = browser.get(page, params={"token": token, "_shape": "array"})
        assert r.status_code == 303 and r.headers["location"] == "/helicone/requests.json?_shape=array"
        cookie = r.cookies["helicone_ui"]
        assert token not in cookie and "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        r = browser.get(f"{server}{r.headers['location']}")
        assert r.status_code == 200 and len(r.json()) > 0
    assert httpx.get(page, cookies={"helicone_ui": "forged"}, timeout=10).status_code == 401


@needs_datasette
@needs_chromium
def test_chromium_sees_canned_queries_and_chart(server, log_path, tmp_path):
    if CHROMIUM is None:
        pytest.fail("CI is set but chromium is missing: apt-get install -y chromium")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1400",
    ]  # fmt: skip

    def dump(url: str) -> str:
        res = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout

    token = AUTH["Authorization"].removeprefix("Bearer ")
    dom = dump(f"{server}/helicone?token={token}")  # once: a cookie, then the page without the token
    for query in ui_metadata.CANNED_QUERIES.values():
        assert query["title"] in dom, query["title"]
    assert f'id="{CHART_ID}"' in dom
    chart = dom[dom.index(f'id="{CHART_ID}"'):]
    chart = chart[: chart.index("</svg>")]
    for _, model in MODELS:
        assert model in chart
    assert "&lt;b&gt;evil&lt;/b&gt;" in chart and "<b>evil</b>" not in chart
    # one bar segment per (day, model) with a cost, each with its tooltip
    segments = sql(log_path, "select count(*) from (select date(created_at), model from requests "
                             "group by 1, 2 having total(cost_usd) > 0)")[0][0]
    legend = sql(log_path, "select count(distinct model) from requests")[0][0]
    assert chart.count("<rect") == segments + legend
    assert "2025-05-02 · claude-3-5-sonnet" in chart

    dom = dump(f"{server}/helicone/cost_per_day_by_model?token={token}")
    assert f'id="{CHART_ID}"' in dom and "Cost per day by model (USD)" in dom
    assert "<table" in dom and "claude-3-5-sonnet" in dom

    shot = tmp_path / "chart.png"
    res = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", f"{server}/helicone?token={token}"],
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_ui_without_database_fails_cleanly(tmp_path, capsys):
    assert cli_reports.main(["ui", "--db", str(tmp_path / "missing.db"), "--port", "0"]) == 1
    assert "no log database at" in capsys.readouterr().err
