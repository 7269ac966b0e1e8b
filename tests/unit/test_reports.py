"""Reports, logs and sessions over a seeded log, each checked against SQL (or Python) written
independently here; plus the CLI handlers (exit codes, JSON/CSV/table output, error messages)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlite_utils

from helicone_addon import cli, render, reports
from helicone_addon.cli.output import fmt_usd
from helicone_addon.reports import Filters, ReportError
from helicone_addon.store import migrations

pytestmark = pytest.mark.timeout(60)

MODELS = {
    "openai": ["gpt-4o-mini", "gpt-4o"],
    "anthropic": ["claude-3-5-sonnet"],
    "gemini": ["gemini-1.5-flash"],
}
KINDS = ["ok", "hit", "http", "ok", "ratelimit", "noresponse", "ok", "streamerror", "unpriced", "ok", "ok"]
DAYS = ["2025-04-30", "2025-05-01", "2025-05-02", "2025-05-03"]


def _openai_req(text: str, model: str) -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]})


def _openai_resp(text: str) -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


def _row(i: int, **kw) -> dict:
    row = {
        "id": str(uuid.UUID(int=i + 1)),
        "created_at": "2025-05-01T10:00:00.000Z",
        "source": "proxy",
        "provider": "openai",
        "api": "openai-chat",
        "method": "POST",
        "host": "api.openai.com",
        "path": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "status": 200,
        "streamed": 0,
        "latency_ms": 100.0,
        "ttft_ms": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "usage_source": "provider",
        "cost_usd": 0.001,
        "cache_saved_usd": None,
        "user_id": None,
        "session_id": None,
        "session_path": None,
        "session_name": None,
        "properties": None,
        "cache_hit": 0,
        "retries": 0,
        "rate_limited": 0,
        "error": None,
        "request_body": _openai_req(f"question number {i}", "gpt-4o-mini"),
        "response_body": _openai_resp(f"answer number {i}"),
    }
    row.update(kw)
    # the searchable text columns, as the proxy's build_row fills them (render.texts)
    texts = render.texts(row["api"], row["request_body"], row["response_body"], status=row["status"])
    row.setdefault("prompt_text", texts[0])
    row.setdefault("response_text", texts[1])
    return row


def build_rows() -> tuple[list[dict], list[dict]]:
    """A deterministic log: several providers, users, properties, days, sessions, cache hits, errors."""
    rnd = random.Random(1234)
    rows: list[dict] = []
    props: list[dict] = []
    i = 0
    for day in DAYS:
        for _ in range(12):
            provider = rnd.choice(list(MODELS))
            model = rnd.choice(MODELS[provider])
            p, c = rnd.randint(5, 2000), rnd.randint(1, 800)
            ts = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(seconds=rnd.randint(0, 86399), milliseconds=rnd.randint(0, 999))
            kind = KINDS[i % len(KINDS)]
            row = _row(
                i,
                created_at=ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                provider=provider,
                model=model,
                prompt_tokens=p,
                completion_tokens=c,
                total_tokens=p + c,
                cached_tokens=rnd.choice([0, 0, p // 2]),
                reasoning_tokens=rnd.choice([0, 0, c // 3]),
                latency_ms=round(rnd.uniform(50, 5000), 3),
                cost_usd=round(p * 1e-6 + c * 4e-6, 9),
                user_id=rnd.choice(["alice", "bob", "carol", None]),
                request_body=_openai_req(f"tell me about {rnd.choice(['otters', 'rivers', 'mountains'])} {i}", model),
                response_body=_openai_resp(f"{rnd.choice(['otters', 'lakes', 'glaciers'])} are nice {i}"),
            )
            if kind == "hit":  # proxy cache hit
                row.update(cache_hit=1, cache_saved_usd=row["cost_usd"], cost_usd=0.0, latency_ms=round(rnd.uniform(1, 5), 3))
            elif kind == "http":  # HTTP error
                row.update(status=rnd.choice([500, 503, 400]), error="upstream error", cost_usd=None,
                           prompt_tokens=None, completion_tokens=None, total_tokens=None)
            elif kind == "ratelimit":  # rate limited by the proxy
                row.update(status=429, rate_limited=1, error="rate limited", cost_usd=None, latency_ms=1.0,
                           prompt_tokens=None, completion_tokens=None, total_tokens=None)
            elif kind == "noresponse":  # no response at all
                row.update(status=None, error="connection refused", latency_ms=None, cost_usd=None,
                           prompt_tokens=None, completion_tokens=None, total_tokens=None, retries=2)
            elif kind == "streamerror":  # error inside a 200 stream
                row.update(error="overloaded", streamed=1)
            elif kind == "unpriced":  # unknown price
                row.update(cost_usd=None, cost_note="no price")
            pr = {}
            if rnd.random() < 0.6:
                pr["team"] = rnd.choice(["search", "ads"])
            if rnd.random() < 0.5:
                pr["env"] = rnd.choice(["prod", "dev"])
            if pr:
                row["properties"] = json.dumps(pr)
                props += [{"request_id": row["id"], "key": k, "value": v} for k, v in pr.items()]
            rows.append(row)
            i += 1
    # session s1: a trace with nested paths (and one call without a path), across two days
    s1 = [
        ("2025-05-02T09:00:00.000Z", "/plan", 0.010, 1000.0, 100, 10),
        ("2025-05-02T09:00:01.000Z", "/plan/search", 0.002, 300.0, 50, 5),
        ("2025-05-02T09:00:02.000Z", "/plan/search", 0.003, 400.0, 60, 6),
        ("2025-05-02T09:00:03.000Z", "/plan/search/fetch", 0.001, 50.0, 7, 3),
        ("2025-05-02T09:00:04.000Z", "/answer", 0.020, 2000.0, 200, 80),
        ("2025-05-02T09:00:05.000Z", None, 0.004, 10.0, 1, 1),
        ("2025-05-03T00:00:06.000Z", "/critique/", 0.005, 700.0, 30, 30),
    ]
    for ts, path, cost, lat, p, c in s1:
        rows.append(_row(i, created_at=ts, session_id="s1", session_path=path, session_name="research",
                         cost_usd=cost, latency_ms=lat, prompt_tokens=p, completion_tokens=c, total_tokens=p + c,
                         user_id="alice"))
        i += 1
    rows[-1]["status"] = 500
    rows[-1]["error"] = "boom"
    # path starting without a slash, and an intermediate node with no call of its own (/draft)
    for ts, path in [("2025-05-03T10:00:00.000Z", "draft/outline"), ("2025-05-03T10:00:01.000Z", "/draft/body")]:
        rows.append(_row(i, created_at=ts, session_id="s2", session_path=path, session_name=None,
                         provider="anthropic", model="claude-3-5-sonnet", user_id="bob"))
        i += 1
    rows.append(_row(i, created_at="2025-05-03T10:00:02.000Z", session_id="s2", session_path="/draft/body",
                     session_name="writer", provider="anthropic", model="claude-3-5-sonnet", user_id="bob"))
    i += 1
    return rows, props


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "helicone.db"
    db = sqlite_utils.Database(path)
    migrations.migrate(db)
    rows, props = build_rows()
    db["requests"].insert_all(rows)
    db["properties"].insert_all(props)
    return db


@pytest.fixture
def db_path(log):
    return log.conn.execute("PRAGMA database_list").fetchone()[2]


# ---------------------------------------------------------------------------------------------
# independent expectations


def expected_groups(db, key_sql: str, where: str = "1", params=()) -> dict:
    """Aggregates per group, SQL written independently of reports.py (properties via JSON)."""
    sql = f"""
      SELECT {key_sql} AS k,
        COUNT(id) AS calls,
        SUM(CASE WHEN status IS NULL THEN 1 WHEN status >= 400 THEN 1 WHEN error IS NOT NULL AND error <> '' THEN 1 ELSE 0 END) AS errors,
        SUM(IFNULL(cache_hit, 0)) AS cache_hits,
        SUM(IFNULL(rate_limited, 0)) AS rate_limited,
        SUM(IFNULL(retries, 0)) AS retries,
        SUM(IFNULL(prompt_tokens, 0)) AS prompt_tokens,
        SUM(IFNULL(completion_tokens, 0)) AS completion_tokens,
        SUM(IFNULL(total_tokens, 0)) AS total_tokens,
        SUM(IFNULL(cached_tokens, 0)) AS cached_tokens,
        SUM(IFNULL(reasoning_tokens, 0)) AS reasoning_tokens,
        SUM(IFNULL(cost_usd, 0.0)) AS cost_usd,
        SUM(IFNULL(cache_saved_usd, 0.0)) AS cache_saved_usd
      FROM requests WHERE {where} GROUP BY 1"""
    cur = db.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    out = {}
    for row in cur.fetchall():
        d = dict(zip(names, row))
        lat = [r[0] for r in db.execute(
            f"SELECT latency_ms FROM requests WHERE ({where}) AND {key_sql} IS ? AND latency_ms IS NOT NULL",
            [*params, d["k"]]).fetchall()]
        d["p50"] = nearest_rank(lat, 50)
        d["p95"] = nearest_rank(lat, 95)
        out[d.pop("k")] = d
    return out


def nearest_rank(values, p):
    """Textbook nearest rank: the smallest value v with at least p% of the values <= v."""
    if not values:
        return None
    for v in sorted(values):
        if sum(1 for x in values if x <= v) * 100 >= p * len(values):
            return v


def assert_rows_match(rows, groups_name, expected):
    assert len(rows) == len(expected), (len(rows), len(expected))
    for r in rows:
        e = expected[r[groups_name]]
        for k in ("calls", "errors", "cache_hits", "rate_limited", "retries", "prompt_tokens",
                  "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"):
            assert r[k] == e[k], (r[groups_name], k, r[k], e[k])
        assert r["cost_usd"] == pytest.approx(e["cost_usd"], abs=1e-12)
        assert r["cache_saved_usd"] == pytest.approx(e["cache_saved_usd"], abs=1e-12)
        assert r["latency_p50_ms"] == e["p50"]
        assert r["latency_p95_ms"] == e["p95"]


# ---------------------------------------------------------------------------------------------
# percentiles and parsing


def test_percentile_nearest_rank_definition():
    assert reports.percentile([], 50) is None
    assert reports.percentile([7.0], 95) == 7.0
    assert reports.percentile([1, 2, 3, 4], 50) == 2
    assert reports.percentile([1, 2, 3, 4, 5], 50) == 3
    assert reports.percentile(list(range(1, 21)), 95) == 19
    assert reports.percentile(list(range(1, 101)), 95) == 95
    rnd = random.Random(5)
    for n in range(1, 60):
        vals = [rnd.uniform(0, 100) for _ in range(n)]
        for p in (1, 25, 50, 90, 95, 99, 100):
            assert reports.percentile(vals, p) == nearest_rank(vals, p)
            assert reports.percentile(vals, p) == sorted(vals)[math.ceil(p / 100 * n) - 1]


def test_parse_time():
    now = datetime(2025, 5, 3, 12, 30, tzinfo=UTC)
    assert reports.parse_time("2025-05-01") == "2025-05-01T00:00:00.000Z"
    assert reports.parse_time("2025-05-01", end=True) == "2025-05-02T00:00:00.000Z"
    assert reports.parse_time("2025-05-01T12:00") == "2025-05-01T12:00:00.000Z"
    assert reports.parse_time("2025-05-01T14:00+02:00") == "2025-05-01T12:00:00.000Z"
    assert reports.parse_time("2025-05-01T12:00:00Z") == "2025-05-01T12:00:00.000Z"
    assert reports.parse_time("7d", now=now) == "2025-04-26T12:30:00.000Z"
    assert reports.parse_time("90m", now=now) == "2025-05-03T11:00:00.000Z"
    assert reports.parse_time("today", now=now) == "2025-05-03T00:00:00.000Z"
    assert reports.parse_time("yesterday", end=True, now=now) == "2025-05-03T00:00:00.000Z"
    for bad in ("last tuesday", "2025-13-01", "7y", ""):
        with pytest.raises(ReportError):
            reports.parse_time(bad)


def test_parse_group_by_and_filters():
    assert reports.parse_group_by(["model,day", "property:team", "model"]) == ["model", "day", "property:team"]
    assert reports.parse_group_by(["none"]) == []
    assert reports.parse_group_by(["User", "session_id"]) == ["user", "session"]
    for bad in (["colour"], ["property:"], ["model,bogus"]):
        with pytest.raises(ReportError, match="group-by"):
            reports.parse_group_by(bad)
    assert reports.parse_property("team=a=b") == ("team", "a=b")
    with pytest.raises(ReportError):
        reports.parse_property("team")
    for ok in ("200", "4XX", "error", "ok", "none"):
        reports.parse_status(ok)
    for bad in ("fine", "6xx", "20"):
        with pytest.raises(ReportError, match="status"):
            reports.parse_status(bad)


def test_normalize_path():
    assert reports.normalize_path(None) == "/"
    assert reports.normalize_path("") == "/"
    assert reports.normalize_path("a//b/") == "/a/b"
    assert reports.normalize_path("/plan") == "/plan"


# ---------------------------------------------------------------------------------------------
# report


@pytest.mark.parametrize(
    "group,key_sql",
    [
        ("model", "model"),
        ("provider", "provider"),
        ("user", "user_id"),
        ("session", "session_id"),
        ("day", "date(created_at)"),
        ("property:team", "json_extract(properties, '$.team')"),
        ("property:env", "json_extract(properties, '$.env')"),
    ],
)
def test_report_single_group_matches_sql(log, group, key_sql):
    rows = reports.report(log, [group])
    assert_rows_match(rows, group, expected_groups(log, key_sql))


def test_report_several_groups(log):
    rows = reports.report(log, ["provider", "day", "property:team"])
    exp = expected_groups(log, "provider || '|' || date(created_at) || '|' || IFNULL(json_extract(properties, '$.team'), '<none>')")
    for r in rows:
        r["k"] = f"{r['provider']}|{r['day']}|{r['property:team'] or '<none>'}"
    assert_rows_match(rows, "k", exp)
    # grouping by day keeps the keys in order
    assert [(r["provider"], r["day"]) for r in rows] == sorted((r["provider"], r["day"]) for r in rows)


def test_report_totals_and_default_sort(log):
    (total,) = reports.report(log, [])
    exp = expected_groups(log, "'all'")["all"]
    assert total["calls"] == exp["calls"] == log["requests"].count
    assert total["cost_usd"] == pytest.approx(exp["cost_usd"])
    assert total["latency_p95_ms"] == exp["p95"]
    unpriced = log.execute(
        "SELECT count(*) FROM requests WHERE cost_usd IS NULL AND status < 400 AND error IS NULL").fetchone()[0]
    assert total["unpriced"] == unpriced > 0
    by_model = reports.report(log, ["model"])
    assert [r["cost_usd"] for r in by_model] == sorted((r["cost_usd"] for r in by_model), reverse=True)
    by_calls = reports.report(log, ["user"], sort="calls")
    assert [r["calls"] for r in by_calls] == sorted((r["calls"] for r in by_calls), reverse=True)
    with pytest.raises(ReportError, match="sort"):
        reports.report(log, ["user"], sort="colour")


@pytest.mark.parametrize(
    "filters,where,params",
    [
        (Filters(since="2025-05-01T00:00:00.000Z", until="2025-05-03T00:00:00.000Z"),
         "date(created_at) IN ('2025-05-01', '2025-05-02')", []),
        (Filters(users=["alice", "bob"]), "user_id = 'alice' OR user_id = 'bob'", []),
        (Filters(models=["gpt-4o*"]), "model LIKE 'gpt-4o%'", []),
        (Filters(models=["gpt-4o"]), "model = 'gpt-4o'", []),
        (Filters(providers=["gemini"]), "provider = 'gemini'", []),
        (Filters(properties=[("team", "search")]), "json_extract(properties, '$.team') = 'search'", []),
        (Filters(properties=[("team", "search"), ("env", "prod")]),
         "json_extract(properties, '$.team') = 'search' AND json_extract(properties, '$.env') = 'prod'", []),
        (Filters(statuses=["error"]), "status IS NULL OR status >= 400 OR error IS NOT NULL", []),
        (Filters(statuses=["ok"]), "status < 400 AND error IS NULL", []),
        (Filters(statuses=["5xx", "429"]), "status BETWEEN 500 AND 599 OR status = 429", []),
        (Filters(statuses=["none"]), "status IS NULL", []),
        (Filters(sessions=["s1"], statuses=["200"]), "session_id = 's1' AND status = 200", []),
    ],
)
def test_report_filters_match_sql(log, filters, where, params):
    rows = reports.report(log, ["model"], filters)
    exp = expected_groups(log, "model", where, params)
    assert exp, "the seed must make every filter select something"
    assert_rows_match(rows, "model", exp)


def test_report_empty(log):
    assert reports.report(log, ["model"], Filters(users=["nobody"])) == []
    (total,) = reports.report(log, [], Filters(users=["nobody"]))
    assert total["calls"] == 0 and total["cost_usd"] == 0 and total["latency_p50_ms"] is None
    (only,) = reports.report(log, ["property:nosuchkey"])  # every call lacks it: one group, key None
    assert only["property:nosuchkey"] is None and only["calls"] == log["requests"].count
    empty = sqlite_utils.Database(memory=True)
    migrations.migrate(empty)
    assert reports.report(empty, ["model", "day"]) == []


# ---------------------------------------------------------------------------------------------
# logs and full-text search


def test_logs_latest_oldest_first(log):
    rows = reports.logs(log, limit=5)
    exp = [r[0] for r in log.execute("SELECT id FROM requests ORDER BY created_at DESC LIMIT 5").fetchall()][::-1]
    assert [r["id"] for r in rows] == exp
    assert len(reports.logs(log, limit=0)) == log["requests"].count
    rows = reports.logs(log, Filters(users=["bob"], statuses=["ok"]), limit=0)
    assert {r["user_id"] for r in rows} == {"bob"}
    assert len(rows) == log.execute(
        "SELECT count(*) FROM requests WHERE user_id='bob' AND status < 400 AND error IS NULL").fetchone()[0]


def test_logs_full_text_search(log):
    def expected(word):
        return {r[0] for r in log.execute(
            "SELECT id FROM requests WHERE request_body LIKE ? OR response_body LIKE ?", [f"%{word}%"] * 2)}

    for word in ("otters", "glaciers", "rivers"):
        got = {r["id"] for r in reports.logs(log, limit=0, query=word)}
        assert got == expected(word) and got
    both = {r["id"] for r in reports.logs(log, limit=0, query="otters nice")}
    assert both == expected("otters") & expected("nice")
    # FTS syntax in user input is taken literally, not an error
    assert reports.logs(log, limit=0, query='otters" OR (') is not None
    assert reports.logs(log, limit=0, query="zebra") == []
    # triggers keep the index in sync with inserts, updates and deletes
    log["requests"].insert(_row(10_000, created_at="2025-06-01T00:00:00.000Z", response_body=_openai_resp("a zebra")))
    assert [r["id"] for r in reports.logs(log, limit=0, query="zebra")] == [str(uuid.UUID(int=10_001))]
    log["requests"].update(str(uuid.UUID(int=10_001)), {"response_body": _openai_resp("a giraffe"), "response_text": "a giraffe"})
    assert reports.logs(log, limit=0, query="zebra") == []
    assert len(reports.logs(log, limit=0, query="giraffe")) == 1
    # the store writes with INSERT OR REPLACE: sqlite-utils turns recursive_triggers on, so the
    # delete trigger fires for the replaced row and the index keeps no stale entry
    log["requests"].insert_all([_row(10_000, created_at="2025-06-01T00:00:00.000Z",
                                     response_body=_openai_resp("an okapi"))], replace=True)
    assert reports.logs(log, limit=0, query="giraffe") == []
    assert len(reports.logs(log, limit=0, query="okapi")) == 1
    log.execute("INSERT INTO requests_fts(requests_fts, rank) VALUES('integrity-check', 1)")
    log["requests"].delete(str(uuid.UUID(int=10_001)))
    assert reports.logs(log, limit=0, query="okapi") == []
    # combined with filters
    got = {r["id"] for r in reports.logs(log, Filters(users=["alice"]), limit=0, query="otters")}
    assert got == expected("otters") & {r[0] for r in log.execute("SELECT id FROM requests WHERE user_id='alice'")}


def test_fts_migration_indexes_existing_rows(tmp_path):
    db = sqlite_utils.Database(tmp_path / "old.db")
    migrations.migrate(db)
    db["requests"].disable_fts()
    db.execute("DELETE FROM _migrations WHERE name = 'm005_fts'")
    db.conn.commit()
    db["requests"].insert(_row(1, request_body="hello walrus"))
    assert migrations.migrate(db) == ["m005_fts"]
    assert [r["id"] for r in reports.logs(db, limit=0, query="walrus")] == [str(uuid.UUID(int=2))]
    assert migrations.migrate(db) == []


# ---------------------------------------------------------------------------------------------
# sessions


def test_sessions_list_matches_sql(log):
    rows = reports.sessions(log)
    exp = log.execute("""
        SELECT session_id, COUNT(*), SUM(IFNULL(cost_usd,0)), SUM(IFNULL(total_tokens,0)),
               MIN(created_at), MAX(created_at),
               SUM(CASE WHEN status IS NULL OR status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END)
        FROM requests WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY MAX(created_at) DESC""").fetchall()
    assert [r["session_id"] for r in rows] == [e[0] for e in exp] == ["s2", "s1"]
    for r, e in zip(rows, exp):
        assert (r["calls"], r["total_tokens"], r["first_at"], r["last_at"], r["errors"]) == (e[1], e[3], e[4], e[5], e[6])
        assert r["cost_usd"] == pytest.approx(e[2])
    assert rows[0]["session_name"] == "writer"  # the latest non-empty name
    assert rows[1]["session_name"] == "research"
    assert reports.sessions(log, Filters(users=["bob"])) == [rows[0]]
    assert reports.sessions(log, Filters(since="2025-06-01")) == []
    assert len(reports.sessions(log, limit=1)) == 1


def test_session_tree_totals_include_children(log):
    nodes = reports.session_tree(log, "s1")
    assert [n["path"] for n in nodes] == [
        "/", "/plan", "/plan/search", "/plan/search/fetch", "/answer", "/critique"]
    assert [n["depth"] for n in nodes] == [0, 1, 2, 3, 1, 1]

    def sub(path):  # independent SQL: a node's subtree by path prefix
        if path == "/":
            cond, params = "1", []
        else:
            cond, params = "(rtrim(session_path, '/') = ? OR session_path LIKE ?)", [path, path + "/%"]
        return log.execute(
            f"SELECT COUNT(*), SUM(cost_usd), SUM(total_tokens), SUM(prompt_tokens), SUM(latency_ms) "
            f"FROM requests WHERE session_id = 's1' AND {cond}", params).fetchone()

    for n in nodes:
        calls, cost, tokens, prompt, latency = sub(n["path"])
        assert n["calls"] == calls
        assert n["cost_usd"] == pytest.approx(cost)
        assert n["total_tokens"] == tokens and n["prompt_tokens"] == prompt
        assert n["latency_ms"] == pytest.approx(latency)
    by = {n["path"]: n for n in nodes}
    assert by["/"]["own_calls"] == 1 and by["/"]["calls"] == 7
    assert by["/plan/search"]["own_calls"] == 2 and by["/plan/search"]["calls"] == 3
    assert by["/critique"]["errors"] == 1 and by["/"]["errors"] == 1 and by["/plan"]["errors"] == 0

    s2 = reports.session_tree(log, "s2")
    assert [(n["path"], n["own_calls"], n["calls"]) for n in s2] == [
        ("/", 0, 3), ("/draft", 0, 3), ("/draft/outline", 1, 1), ("/draft/body", 2, 2)]
    assert reports.session_tree(log, "nope") == []
    assert [n["path"] for n in reports.session_tree(log, "s1", Filters(statuses=["error"]))] == ["/", "/critique"]


# ---------------------------------------------------------------------------------------------
# CLI


def run(argv, capsys):
    args = cli.build_parser().parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report_json_csv_table(db_path, log, capsys, monkeypatch):
    code, out, err = run(["report", "--db", db_path, "--by", "provider,day", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == json.loads(json.dumps(reports.report(log, ["provider", "day"])))

    code, out, _ = run(["report", "--db", db_path, "--by", "property:team", "--csv", "--status", "ok"], capsys)
    assert code == 0
    got = list(csv.DictReader(io.StringIO(out)))
    exp = reports.report(log, ["property:team"], Filters(statuses=["ok"]))
    assert [g["property:team"] for g in got] == [e["property:team"] or "" for e in exp]
    assert [int(g["calls"]) for g in got] == [e["calls"] for e in exp]
    assert list(got[0]) == ["property:team", *reports.METRICS]

    for plain in ("", "1"):
        monkeypatch.setenv("HELICONE_ADDON_PLAIN", plain)
        code, out, _ = run(["report", "--db", db_path, "-b", "model", "--user", "alice"], capsys)
        assert code == 0
        for m in ("gpt-4o-mini", "claude-3-5-sonnet", "TOTAL", "p95 ms", "cost"):
            assert m in out
        (total,) = reports.report(log, [], Filters(users=["alice"]))
        (footer,) = [line for line in out.splitlines() if "TOTAL" in line]
        assert f" {total['calls']:,} " in footer and fmt_usd(total["cost_usd"]) in footer
        if plain:
            assert "│" not in out and out.splitlines()[1].startswith("-----")

    code, out, err = run(["report", "--db", db_path, "--user", "nobody"], capsys)
    assert code == 0 and out == "" and "No calls match" in err
    code, out, _ = run(["report", "--db", db_path, "--user", "nobody", "--json"], capsys)
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    "argv,message",
    [
        (["report", "--by", "colour"], "unknown group-by 'colour'"),
        (["report", "--by", "model,property:"], "property:<name> needs a name"),
        (["report", "--status", "fine"], "unknown status filter 'fine'"),
        (["report", "--property", "team"], "bad property filter 'team'"),
        (["report", "--since", "last tuesday"], "bad time 'last tuesday'"),
        (["report", "--sort", "colour"], "unknown sort 'colour'"),
        (["logs", "--status", "7xx"], "unknown status filter"),
        (["logs", "-n", "-1"], "-n must be >= 0"),
        (["sessions", "--until", "soon"], "bad time 'soon'"),
    ],
)
def test_cli_bad_arguments(db_path, capsys, argv, message):
    code, out, err = run([*argv, "--db", db_path], capsys)
    assert code == 2
    assert out == ""
    assert message in err and err.startswith("error: ")


def test_cli_unknown_option_is_an_argparse_error(db_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(["report", "--db", db_path, "--colour", "red"], capsys)
    assert e.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err


def test_cli_missing_database(tmp_path, capsys):
    for argv in (["report"], ["logs"], ["sessions"], ["ui", "--port", "0"]):
        code, out, err = run([*argv, "--db", str(tmp_path / "nope.db")], capsys)
        assert code == 1 and "no log database at" in err
    assert not (tmp_path / "nope.db").exists()


def test_cli_logs(db_path, log, capsys, tmp_path, monkeypatch):
    code, out, _ = run(["logs", "--db", db_path, "--json", "-n", "4"], capsys)
    assert code == 0
    got = json.loads(out)
    assert [r["id"] for r in got] == [r["id"] for r in reports.logs(log, limit=4)]
    code, out, _ = run(["logs", "--db", db_path, "-n", "2", "-u"], capsys)
    assert code == 0
    assert out.count("## Prompt") == 2 and out.count("## Token usage") == 2
    last = reports.logs(log, limit=1)[0]
    assert last["id"] in out
    code, out, _ = run(["logs", "--db", db_path, "-q", "glaciers", "-n", "0", "-s"], capsys)
    assert code == 0
    assert len(out.splitlines()) == len(reports.logs(log, limit=0, query="glaciers")) > 0
    prompts = {render.prompt_text(r["request_body"]) for r in reports.logs(log, limit=0, query="glaciers")}
    assert {json.loads(line[line.index('"'):]) for line in out.splitlines()} == prompts
    code, out, err = run(["logs", "--db", db_path, "-q", "zebra"], capsys)
    assert code == 0 and "No calls match" in err
    # logs path
    code, out, _ = run(["logs", "path", "--db", db_path], capsys)
    assert (code, out.strip()) == (0, db_path)
    code, out, _ = run(["logs", "--data-dir", str(tmp_path / "d"), "path"], capsys)
    assert out.strip() == str(tmp_path / "d" / "helicone.db")
    monkeypatch.setenv("HELICONE_ADDON_DATA_DIR", str(tmp_path / "env"))
    code, out, _ = run(["logs", "path"], capsys)
    assert out.strip() == str(tmp_path / "env" / "helicone.db")


def test_cli_sessions(db_path, log, capsys):
    code, out, _ = run(["sessions", "--db", db_path, "--json"], capsys)
    assert code == 0 and json.loads(out) == json.loads(json.dumps(reports.sessions(log)))
    code, out, _ = run(["sessions", "--db", db_path], capsys)
    assert code == 0 and "research" in out and "writer" in out
    code, out, _ = run(["sessions", "s1", "--db", db_path, "--calls"], capsys)
    assert code == 0
    assert "Session s1 — research" in out
    for label in ("├─ plan", "│  └─ search", "│     └─ fetch", "├─ answer", "└─ critique"):
        assert label in out, label
    assert "0.0450" in out  # root total cost 0.045
    code, out, _ = run(["sessions", "s1", "--db", db_path, "--json"], capsys)
    data = json.loads(out)
    assert [n["path"] for n in data["nodes"]][0] == "/" and len(data["calls"]) == 7
    code, out, err = run(["sessions", "nope", "--db", db_path], capsys)
    assert code == 1 and "no calls found for session 'nope'" in err


def test_main_entry_point(db_path, capsys):
    assert cli.main(["report", "--db", db_path, "--by", "none", "--json"]) == 0
    (total,) = json.loads(capsys.readouterr().out)
    assert total["calls"] > 0


# ---------------------------------------------------------------------------------------------
# prompt / response text for `logs`


def test_prompt_and_response_text():
    assert render.prompt_text(_openai_req("hi there", "m")) == "hi there"
    anth = json.dumps({"system": "be brief", "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    assert render.prompt_text(anth) == "**system**: be brief\n\n**user**: hello"
    gem = json.dumps({"contents": [{"role": "user", "parts": [{"text": "bonjour"}]}]})
    assert render.prompt_text(gem) == "bonjour"
    assert render.prompt_text(json.dumps({"model": "m", "input": "ping"})) == "ping"
    assert render.prompt_text("not json") == "not json"

    assert render.response_text(None, _openai_resp("fine")) == "fine"
    sse = "".join(
        f"data: {json.dumps({'choices': [{'delta': {'content': t}}]})}\n\n" for t in ("Hel", "lo")
    ) + "data: [DONE]\n\n"
    assert render.response_text(None, sse) == "Hello"
    anth_sse = (
        "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {}}\n\n"
        "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"delta\": {\"type\": \"text_delta\", \"text\": \"Hi\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"delta\": {\"type\": \"text_delta\", \"text\": \"!\"}}\n\n"
        "event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n"
    )
    assert render.response_text(None, anth_sse) == "Hi!"
    anth_json = json.dumps({"type": "message", "content": [{"type": "text", "text": "yo"}]})
    assert render.response_text(None, anth_json) == "yo"
    gem_arr = json.dumps([{"candidates": [{"content": {"parts": [{"text": "a"}]}}]},
                          {"candidates": [{"content": {"parts": [{"text": "b"}]}}]}])
    assert render.response_text(None, gem_arr) == "ab"
    resp_api = json.dumps({"output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]})
    assert render.response_text(None, resp_api) == "ok"
    assert render.response_text(None, json.dumps({"error": {"message": "bad key"}})) == "[error] bad key"
    assert render.response_text(None, "plain text") == "plain text"
