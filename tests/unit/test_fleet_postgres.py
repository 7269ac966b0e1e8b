"""Fleet mode on a real PostgreSQL: the schema derived from the column table, the shipper (outbox,
backfill, idempotence, outages, lag) and `report | logs | sessions --db postgresql://`."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

psycopg = pytest.importorskip("psycopg")

from helicone_addon import render  # noqa: E402
from helicone_addon.columns import COLUMNS, NAMES  # noqa: E402
from helicone_addon.fleet import pg_schema  # noqa: E402
from helicone_addon.fleet.postgres import Shipper  # noqa: E402
from helicone_addon.store import LogStore  # noqa: E402
from servers import pg_private, pg_server, pg_template, pg_url  # noqa: E402,F401 - fixtures

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "gemini-2.0-flash"]
T0 = datetime(2025, 5, 1, tzinfo=UTC)


def make_row(rng: random.Random, i: int, replica: str) -> tuple[dict, list[dict]]:
    rid = str(uuid.UUID(int=rng.getrandbits(128)))
    prompt, completion = rng.randint(1, 900), rng.randint(0, 400)
    status = rng.choice([200] * 8 + [429, 500])
    props = {"replica": replica, "team": rng.choice(["blue", "red"])}
    row = {
        "id": rid,
        "created_at": (T0 + timedelta(seconds=i * 7 + rng.random())).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "source": "proxy",
        "provider": "openai",
        "model": rng.choice(MODELS),
        "status": status,
        "streamed": rng.randint(0, 1),
        "latency_ms": round(rng.uniform(5, 900), 3),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": None if rng.random() < 0.1 else round(prompt * 1.5e-7 + completion * 6e-7, 12),
        "user_id": rng.choice(["alice", "bob", None]),
        "session_id": f"s-{replica}-{i % 7}",
        "session_path": rng.choice(["/plan", "/plan/search", "/"]),
        "properties": json.dumps(props),
        "cache_hit": int(rng.random() < 0.1),
        "request_body": json.dumps({"messages": [{"role": "user", "content": f"question {i} from {replica}"}]}),
        "response_body": json.dumps({"choices": [{"message": {"content": f"answer {i}"}}]}),
    }
    # the searchable text columns, as the proxy's build_row fills them
    row["prompt_text"], row["response_text"] = render.texts("openai-chat", row["request_body"], row["response_body"])
    return row, [{"request_id": rid, "key": k, "value": v} for k, v in props.items()]


def write_rows(store: LogStore, rows: list[tuple[dict, list[dict]]]) -> None:
    for r in rows:
        store.submit(r)
    assert store.flush(30)


def pg_count(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as c:
        return c.execute("SELECT count(*), count(DISTINCT id) FROM requests").fetchone()


def cli(*args: str) -> dict | list:
    res = subprocess.run([sys.executable, "-m", "helicone_addon", *args, "--json"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# ---------------------------------------------------------------------------------------------- schema


def test_schema_is_derived_from_the_column_table(pg_url):
    with psycopg.connect(pg_url) as c:
        assert pg_schema.migrate(c)  # creates
        assert pg_schema.migrate(c) == []  # idempotent
        cols = c.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'requests' "
            "ORDER BY ordinal_position"
        ).fetchall()
        assert [n for n, _ in cols] == list(NAMES)
        want = {str: "text", int: "bigint", float: "double precision"}
        assert all(t == want[col.type] for (_, t), col in zip(cols, COLUMNS))
        # a column the database lacks (an older release created it) is added, data kept
        c.execute("INSERT INTO requests (id, model) VALUES ('x', 'm')")
        c.execute("ALTER TABLE requests DROP COLUMN ttft_ms")
        c.commit()
        assert pg_schema.migrate(c) == ["added requests.ttft_ms"]
        assert c.execute("SELECT model, ttft_ms FROM requests").fetchall() == [("m", None)]
        side = {}
        for t in ("properties", "feedback", "scores"):
            side[t] = [r[0] for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position", [t])]  # fmt: skip
    assert side == {
        "properties": ["request_id", "key", "value"],
        "feedback": ["request_id", "rating", "created_at"],
        "scores": ["request_id", "name", "value", "created_at"],
    }


def test_values_postgresql_cannot_hold_are_converted_and_counted(tmp_path, pg_url):
    db = tmp_path / "h.db"
    store = LogStore(db).start()
    write_rows(store, [({"id": "a", "status": "not a number", "latency_ms": "12.5",
                         "request_body": "nul\x00inside", "total_tokens": 7}, [])])  # fmt: skip
    sh = Shipper(db, pg_url)
    sh.register()
    assert sh.flush(20)
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT status, latency_ms, request_body, total_tokens FROM requests").fetchone() == (
            None, 12.5, "nul\ufffdinside", 7)
    assert sh.counters["coerced"] == 1
    sh.stop()
    store.close()


# --------------------------------------------------------------------------------------------- shipper


def test_ships_everything_once_backfill_updates_feedback_and_scores(tmp_path, pg_url):
    rng = random.Random(1)
    db = tmp_path / "h.db"
    store = LogStore(db).start()
    before = [make_row(rng, i, "r1") for i in range(120)]
    write_rows(store, before)  # logged before the shipper existed: backfilled
    sh = Shipper(db, pg_url, batch=50)
    sh.register()
    after = [make_row(rng, i, "r1") for i in range(120, 200)]
    write_rows(store, after)
    rid = before[0][0]["id"]
    con = sqlite3.connect(db)
    with con:  # what the management API does: feedback, scores, a property added later
        con.execute("INSERT OR REPLACE INTO feedback VALUES (?, 1, '2025-05-02T00:00:00.000Z')", [rid])
        con.execute("INSERT OR REPLACE INTO scores VALUES (?, 'accuracy', 87, '2025-05-02T00:00:00.000Z')", [rid])
        con.execute("INSERT OR REPLACE INTO properties VALUES (?, 'late', 'yes')", [rid])
        con.execute("UPDATE requests SET properties = json_set(properties, '$.late', 'yes') WHERE id = ?", [rid])
    assert sh.lag().rows == 200
    assert sh.flush(30)
    assert sh.lag() == (0, 0.0)
    assert pg_count(pg_url) == (200, 200)
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT rating FROM feedback WHERE request_id = %s", [rid]).fetchone() == (1,)
        assert c.execute("SELECT value FROM scores WHERE request_id = %s", [rid]).fetchone() == (87,)
        assert c.execute("SELECT count(*) FROM properties").fetchone()[0] == 200 * 2 + 1
        assert json.loads(c.execute("SELECT properties FROM requests WHERE id = %s", [rid]).fetchone()[0])["late"] == "yes"
        pg_rows = {r[0]: r[1:] for r in c.execute("SELECT id, cost_usd, total_tokens, created_at FROM requests")}
    local = {r[0]: r[1:] for r in con.execute("SELECT id, cost_usd, total_tokens, created_at FROM requests")}
    assert pg_rows == local
    # a crash after PostgreSQL committed but before SQLite noted it: the batch is shipped again
    with con:
        con.execute("INSERT INTO shipper_outbox (request_id, queued_at) SELECT id, 0 FROM requests LIMIT 70")
    assert sh.lag().rows == 70
    assert sh.flush(30)
    assert pg_count(pg_url) == (200, 200)  # idempotent: still one row per request
    assert con.execute("SELECT count(*) FROM shipper_outbox").fetchone()[0] == 0
    con.close()
    sh.stop()
    store.close()


def test_no_outbox_growth_without_a_shipper(tmp_path, pg_url):
    from helicone_addon.fleet.postgres import unregister

    db = tmp_path / "h.db"
    store = LogStore(db).start()
    rng = random.Random(2)
    write_rows(store, [make_row(rng, i, "r") for i in range(20)])
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM shipper_outbox").fetchone()[0] == 0
    assert unregister(db) is False
    Shipper(db, pg_url).register()  # configured once (never run) ...
    write_rows(store, [make_row(rng, i, "r") for i in range(20, 30)])
    assert con.execute("SELECT count(DISTINCT request_id) FROM shipper_outbox").fetchone()[0] == 10
    assert unregister(db) is True  # ... then configured away: the outbox is switched off
    write_rows(store, [make_row(rng, i, "r") for i in range(30, 40)])
    assert con.execute("SELECT count(*) FROM shipper_outbox").fetchone()[0] == 0
    con.close()
    store.close()


@pytest.mark.timeout(240)
def test_three_replicas_one_postgres_outage_of_10s_exactly_1500_rows(tmp_path, pg_private, caplog):
    url = pg_private.create_database("fleet")
    n_replicas, per_replica = 3, 500
    stores, shippers, dbs = [], [], []
    for r in range(n_replicas):
        db = tmp_path / f"replica{r}" / "helicone.db"
        stores.append(LogStore(db).start())
        shippers.append(Shipper(db, url, batch=100, interval=0.2, max_backoff=1.0).start())
        dbs.append(db)
    third = threading.Barrier(n_replicas + 1)

    def replica(r: int) -> None:
        rng = random.Random(r)
        for i in range(per_replica):
            stores[r].submit(make_row(rng, i, f"r{r}"))
            if i == per_replica // 3:
                third.wait(timeout=60)
            time.sleep(0.02)  # the calls' pace: 500 calls over ~10 s per replica

    with caplog.at_level(logging.WARNING, logger="helicone_addon.fleet.postgres"):
        writers = [threading.Thread(target=replica, args=(r,)) for r in range(n_replicas)]
        for w in writers:
            w.start()
        third.wait(timeout=60)
        back = pg_private.down_for(10)  # PostgreSQL stopped in the middle of the run, for 10 s
        t_down = time.monotonic()
        for w in writers:
            w.join()
        for s in stores:
            assert s.flush(30)
        lags = [sh.lag() for sh in shippers]
        assert time.monotonic() - t_down < 10  # the writers finished while PostgreSQL was down
        assert sum(lag.rows for lag in lags) > 0 and all(lag.seconds > 0 for lag in lags)
        back.join(60)
        t_back = time.monotonic()
        deadline = t_back + 60
        while time.monotonic() < deadline and any(sh.lag().rows for sh in shippers):
            time.sleep(0.1)
        drain_s = time.monotonic() - t_back
        assert all(sh.lag() == (0, 0.0) for sh in shippers), [sh.lag() for sh in shippers]
    assert pg_count(url) == (1500, 1500)
    for sh in shippers:
        assert sh.counters["pg_outages"] == 1 and sh.counters["pg_recoveries"] == 1
    down_logs = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(down_logs) == n_replicas  # once per replica per outage
    for sh in shippers:
        sh.stop()
    for s in stores:
        s.close()
    for db in dbs:  # the outage is visible where users look
        con = sqlite3.connect(db)
        counters = dict(con.execute("SELECT name, value FROM store_counters"))
        con.close()
        assert counters["pg_outages"] == 1 and counters["shipper_lag_rows"] == 0

    # report over the fleet == the sum of the three local logs
    fleet = cli("report", "--by", "none", "--db", url)[0]
    local = [cli("report", "--by", "none", "--db", str(db))[0] for db in dbs]
    for metric in ("calls", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cache_hits", "unpriced"):
        assert fleet[metric] == sum(x[metric] for x in local), metric
    assert fleet["calls"] == 1500
    assert fleet["cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in local), rel=1e-12)
    by_replica = {r["property:replica"]: r["calls"] for r in cli("report", "--by", "property:replica", "--db", url)}
    assert by_replica == {"r0": 500, "r1": 500, "r2": 500}
    print(f"\nbacklog drain after the 10 s outage: {drain_s:.2f} s")


# ------------------------------------------------------------------------------------- fleet reports


def test_reports_over_postgres_equal_the_local_log(tmp_path, pg_url):
    rng = random.Random(7)
    db = tmp_path / "h.db"
    store = LogStore(db).start()
    write_rows(store, [make_row(rng, i, "solo") for i in range(150)])
    sh = Shipper(db, pg_url)
    sh.register()
    assert sh.flush(30)
    queries = [
        ["report", "--by", "model,day"],
        ["report", "--by", "property:team", "--status", "error"],
        ["report", "--by", "user", "-m", "gpt-4o*", "--since", "2025-05-01T00:05"],
        ["logs", "-n", "3"],
        ["logs", "-n", "2", "--user", "alice", "--until", "2025-05-01T00:10"],
        ["logs", "-n", "0", "--property", "team=blue", "--status", "5xx"],
        ["logs", "-n", "2", "-q", "question 42"],
        ["sessions", "-n", "0"],
        ["sessions", "s-solo-3"],
    ]
    for q in queries:
        here, there = cli(*q, "--db", str(db)), cli(*q, "--db", pg_url)
        assert here == there, q
        assert here, q  # each query matches something: the comparison is not vacuous
    sh.stop()
    store.close()


def test_report_on_a_database_without_a_log_is_a_clear_error(pg_url):
    res = subprocess.run([sys.executable, "-m", "helicone_addon", "report", "--db", pg_url],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1
    assert "no helicone-addon log" in res.stderr and "Traceback" not in res.stderr
