"""The web view (`helicone-addon ui`) in a real browser, over a log seeded through the real proxy.

The log is filled by the proxy and the fake upstream with the openai and anthropic SDKs: several
models, streams, upstream errors, cache hits, users, properties and two sessions. Then
`helicone-addon ui` serves it and headless Chromium (Debian's, driven by Playwright; never a
downloaded browser) loads each page and checks what a user sees against the CLI and SQL.

Screenshots of the overview, a call page and a session page are written under the test's temp dir
(and to $HELICONE_UI_SCREENSHOTS when set, e.g. docs/screenshots).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Proxy, free_port, wait_port

from helicone_addon import cli, render, security
from helicone_addon.ui import app as ui_app

pytestmark = pytest.mark.timeout(300)

IN_CI = bool(os.environ.get("CI"))
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

needs_browser = pytest.mark.skipif(
    (CHROMIUM is None or sync_playwright is None) and not IN_CI,
    reason="needs Debian's chromium (apt-get install -y chromium) and playwright (the test extra)",
)

PHRASE = "fake upstream"  # in every answer of the fake; in a stream its words are split across events


@dataclass
class Seed:
    db: Path
    ids: dict[str, list[str]] = field(default_factory=dict)  # kind -> Helicone-Ids

    def add(self, kind: str, rid: str) -> str:
        self.ids.setdefault(kind, []).append(rid)
        return rid

    def sql(self, query: str, params=()) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(query, params).fetchall()


def _seed(proxy: Proxy) -> Seed:
    seed = Seed(proxy.db_path)
    oa, an = proxy.openai(), proxy.anthropic()

    def chat(model: str, text: str, kind: str, headers: dict | None = None, **kw) -> str:
        raw = oa.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
            extra_headers=headers or {}, **kw)
        if kw.get("stream"):
            for _ in raw.parse():
                pass
        return seed.add(kind, raw.headers["helicone-id"])

    users = ["alice", "bob", "carol"]
    for i in range(8):
        chat("gpt-4o-mini", f"question {i} about otters", "json",
             {"Helicone-User-Id": users[i % 3], "Helicone-Property-Feature": ["search", "chat"][i % 2]})
    for i in range(6):
        chat("gpt-4o", f"stream {i} about rivers", "stream", {"Helicone-User-Id": users[i % 2], "x-fake-delay-ms": "5",
                                                              "Helicone-Property-Feature": "chat"},
             stream=True, stream_options={"include_usage": True})
    for i in range(5):
        raw = an.messages.with_raw_response.create(
            model="claude-3-5-sonnet", max_tokens=64, system="You are terse.",
            messages=[{"role": "user", "content": f"claude question {i}"}],
            extra_headers={"Helicone-User-Id": "dave"}, stream=i % 2 == 0)
        if i % 2 == 0:
            for _ in raw.parse():
                pass
        seed.add("anthropic", raw.headers["helicone-id"])
    for status in (429, 429, 500):
        try:
            chat("gpt-4o", "this one fails", "error", {"x-fake-status": str(status), "Helicone-User-Id": "alice"})
        except Exception as e:  # the SDK raises on 4xx/5xx: the call is still logged
            seed.add("error", e.response.headers["helicone-id"])  # type: ignore[attr-defined]
    cache = {"Helicone-Cache-Enabled": "true", "Helicone-User-Id": "bob"}
    first = chat("gpt-4o-mini", "cache me please", "cache_fill", cache)
    proxy.row(first)  # the cache entry is saved before the row is written
    for _ in range(2):
        chat("gpt-4o-mini", "cache me please", "cache_hit", cache)
    # a session shaped like an agent: plan, search twice, answer
    sid = f"research-{uuid.uuid4().hex[:6]}"
    for path, model, stream in [("/", "gpt-4o", False), ("/plan", "gpt-4o", True), ("/plan/search", "gpt-4o-mini", False),
                                ("/plan/search", "gpt-4o-mini", True), ("/answer", "gpt-4o", True)]:
        h = {"Helicone-Session-Id": sid, "Helicone-Session-Path": path, "Helicone-Session-Name": "research",
             "Helicone-User-Id": "alice", "x-fake-delay-ms": "10"}
        kw = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        chat(model, f"session step {path}", "session", h, **kw)
    seed.ids["session_id"] = [sid]
    seed.ids["session_id2"] = ["chat-2"]
    for i in range(2):
        chat("gpt-4o-mini", f"second session {i}", "session2", {"Helicone-Session-Id": "chat-2"})
    n = sum(len(v) for k, v in seed.ids.items() if not k.startswith("session_id"))
    proxy.wait_rows("SELECT id FROM requests", n=n, timeout=30)
    return seed


@pytest.fixture(scope="module")
def seed(fake, tmp_path_factory) -> Seed:
    proxy = Proxy(tmp_path_factory.mktemp("ui-proxy"), fake.url).start()
    try:
        yield _seed(proxy)
    finally:
        proxy.stop()


TOKEN: dict[str, str] = {}  # the data dir's API token, which the web view asks for too


@pytest.fixture(scope="module")
def ui(seed, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("ui-log") / "ui.log"
    data_dir = tmp_path_factory.mktemp("ui-data")
    TOKEN["value"] = security.ensure_token(data_dir)  # as the proxy makes it on first start
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "helicone_addon", "ui", "--db", str(seed.db),
                                 "--port", str(port), "--data-dir", str(data_dir)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_port(port, timeout=30, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN['value']}"}


def test_the_web_view_admits_its_owner_only(ui):
    assert httpx.get(f"{ui}/requests").status_code == 401  # no token
    assert httpx.get(f"{ui}/requests", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{ui}/requests", headers={**auth(), "Host": "attacker.example.com"}).status_code == 403
    assert httpx.get(f"{ui}/requests", headers={**auth(), "Origin": "https://evil.example"}).status_code == 403
    r = httpx.get(f"{ui}/requests?token={TOKEN['value']}")
    assert r.status_code == 303 and "token" not in r.headers["location"]
    cookie = r.cookies.get("helicone_ui")
    assert cookie and cookie != TOKEN["value"]  # a value derived from the token, not the token
    assert httpx.get(f"{ui}/requests", cookies={"helicone_ui": cookie}).status_code == 200


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> list[Path]:
    dirs = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("HELICONE_UI_SCREENSHOTS"):
        dirs.append(Path(os.environ["HELICONE_UI_SCREENSHOTS"]))
    return dirs


@pytest.fixture(scope="module")
def browser(ui):
    if CHROMIUM is None or sync_playwright is None:
        pytest.fail("CI is set but chromium or playwright is missing")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, ui):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=ui)
    pg = ctx.new_page()
    pg.elsewhere = []  # every request the page makes must stay on the web view's origin
    pg.on("request", lambda r: r.url.startswith(ui) or pg.elsewhere.append(r.url))
    pg.goto(f"/?token={TOKEN['value']}")  # the URL `helicone-addon ui` prints: once, then a cookie
    assert "token" not in pg.url
    yield pg
    assert pg.elsewhere == [], f"the page fetched from elsewhere: {pg.elsewhere}"
    ctx.close()


def snap(pg, shots: list[Path], name: str) -> None:
    for d in shots:
        d.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(d / name), full_page=True)
    assert (shots[0] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def cli_json(*args: str) -> object:
    res = subprocess.run([sys.executable, "-m", "helicone_addon", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# ---------------------------------------------------------------------------------------------
# the pages in a browser


@needs_browser
@pytest.mark.parametrize("range_key", ["7d", "all"])
def test_overview_numbers_equal_the_report(page, seed, shots, range_key):
    page.goto(f"/?range={range_key}")
    since = ["--since", range_key] if range_key != "all" else []
    (total,) = cli_json("report", "--by", "none", "--json", "--db", str(seed.db), *since)
    by_model = cli_json("report", "--by", "model", "--json", "--db", str(seed.db), *since)
    cards = page.locator("#totals")
    assert cards.locator("[data-metric=cost_usd]").inner_text() == render.usd(total["cost_usd"])
    assert cards.locator("[data-metric=calls]").inner_text() == f"{total['calls']:,}"
    assert cards.locator("[data-metric=errors]").inner_text() == f"{total['errors']:,} errors"
    assert cards.locator("[data-metric=error_rate]").inner_text() == ui_app.fmt_pct(total["errors"] / total["calls"])
    assert cards.locator("[data-metric=cache_hits]").inner_text() == f"{total['cache_hits']:,}"
    assert cards.locator("[data-metric=cache_saved_usd]").inner_text() == render.usd(total["cache_saved_usd"])
    assert cards.locator("[data-metric=latency_p50_ms]").inner_text() == ui_app.fmt_ms(total["latency_p50_ms"])
    assert cards.locator("[data-metric=latency_p95_ms]").inner_text() == ui_app.fmt_ms(total["latency_p95_ms"])
    assert total["cache_hits"] == 2 and total["errors"] == 3  # the seed is what the test thinks it is
    rows = page.locator("#models tbody tr")
    assert rows.count() == len(by_model)
    for m in by_model:
        row = page.locator(f'#models tr[data-model="{m["model"]}"]')
        assert row.locator("[data-metric=calls]").inner_text() == f"{m['calls']:,}"
        assert row.locator("[data-metric=errors]").inner_text() == f"{m['errors']:,}"
        assert row.locator("[data-metric=cost_usd]").inner_text() == (render.usd(m["cost_usd"]) or "$0")
        assert row.locator("[data-metric=latency_p95_ms]").inner_text() == ui_app.fmt_ms(m["latency_p95_ms"])
    # three charts; the cost legend names each model once, with its $ total
    assert page.locator("svg.chart").count() == 3
    legend = page.locator(".legend").first.inner_text()
    for m in by_model:
        if m["cost_usd"]:
            assert m["model"] in legend
    assert "$" in legend and "e-0" not in page.content()  # amounts in dollars, never 5.7e-05
    if range_key == "7d":
        snap(page, shots, "overview.png")


@needs_browser
def test_requests_page_fits_and_facets_filter(page, seed):
    page.goto("/requests")
    table = page.locator("#calls")
    box = table.bounding_box()
    assert box["x"] + box["width"] <= 1400, "the default columns overflow a 1,400 px window"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert headers == ["time (UTC)", "id", "provider", "model", "status", "latency", "TTFT", "tokens", "cost", "user", "session"]
    visible = [b for b in (r.bounding_box() for r in table.locator("tbody tr").all()) if b and b["y"] + b["height"] <= 1000]
    assert len(visible) >= 20, f"only {len(visible)} rows visible in 1,000 px"
    assert all(c.startswith("$") or c == "" for c in table.locator("tbody td:nth-child(9)").all_inner_texts())
    # facet on model, then on a property value
    page.locator('[data-facet=model] a', has_text=re.compile(r"^gpt-4o$")).click()
    page.wait_for_url(re.compile(r"model=gpt-4o"))
    models = set(table.locator("tbody td:nth-child(4)").all_inner_texts())
    assert models == {"gpt-4o"}
    assert table.locator("tbody tr").count() == seed.sql("SELECT count(*) FROM requests WHERE model = 'gpt-4o'")[0][0]
    page.locator('[data-facet="prop:feature"] a', has_text="chat").click()
    page.wait_for_url(re.compile(r"prop=feature%3Dchat"))
    exp = seed.sql("SELECT count(*) FROM requests r JOIN properties p ON p.request_id = r.id "
                   "WHERE r.model = 'gpt-4o' AND p.key = 'feature' AND p.value = 'chat'")[0][0]
    assert exp > 0 and table.locator("tbody tr").count() == exp
    for facet in ("provider", "status", "user"):
        assert page.locator(f"[data-facet={facet}] li").count() > 0


@needs_browser
def test_search_finds_streamed_answers(page, seed):
    page.goto("/")
    page.fill("header input[name=q]", f'"{PHRASE}"')
    page.press("header input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"/requests\?q="))
    ids = {a.get_attribute("title") for a in page.locator("#calls tbody td:nth-child(2) a").all()}
    streamed = {r[0] for r in seed.sql("SELECT id FROM requests WHERE streamed = 1 AND status = 200")}
    assert streamed and streamed <= ids  # every streamed answer is found by its phrase
    # ... and so does `helicone-addon logs -q`
    found = cli_json("logs", "-q", f'"{PHRASE}"', "-n", "0", "--json", "--db", str(seed.db))
    assert streamed <= {r["id"] for r in found}


@needs_browser
def test_call_page_shows_the_joined_stream_and_dollars(page, seed, shots):
    rid = seed.ids["stream"][0]
    (cost,) = seed.sql("SELECT cost_usd FROM requests WHERE id = ?", [rid])[0]
    page.goto(f"/call/{rid}")
    assert page.locator("#answer .body").inner_text() == "Hello from the fake upstream!"
    assert page.locator("#cost").inner_text().startswith(render.usd(cost)) and render.usd(cost).startswith("$")
    assert page.locator(".msg.system .body").inner_text() == "Be brief."
    assert page.locator(".msg.user .body").inner_text() == "stream 0 about rivers"
    raw = page.locator("#raw details", has_text="Raw response")
    assert not raw.locator("pre").first.is_visible()  # a click away
    raw.locator("summary").click()
    assert "data: " in raw.locator("pre").nth(1).inner_text()
    snap(page, shots, "call.png")
    # an upstream error is shown as such
    page.goto(f"/call/{seed.ids['error'][0]}")
    assert "fake error 429" in page.locator("#error").inner_text()
    assert page.locator(".st.big").inner_text() == "429"


@needs_browser
def test_links_lead_where_they_say(page, seed):
    page.goto("/requests")
    first = page.locator("#calls tbody tr").first.locator("td:nth-child(2) a")
    rid = first.get_attribute("title")
    first.click()
    page.wait_for_url(f"**/call/{rid}")
    assert rid in page.locator("#summary").inner_text()
    page.goto("/requests")
    sess = page.locator("#calls tbody td.sess a").first
    sid = sess.inner_text()
    sess.click()
    page.wait_for_url(re.compile(r"/session/"))
    assert page.locator("h1").inner_text().startswith(f"Session {sid}")
    page.goto("/?range=all")
    page.locator("#models a", has_text=re.compile(r"^claude-3-5-sonnet$")).click()
    page.wait_for_url(re.compile(r"/requests\?model=claude"))
    assert set(page.locator("#calls tbody td:nth-child(4)").all_inner_texts()) == {"claude-3-5-sonnet"}
    page.goto(f"/call/{seed.ids['cache_hit'][0]}")  # a cache hit links to the call that filled the cache
    page.locator("#summary a", has_text=seed.ids["cache_fill"][0][:8]).click()
    page.wait_for_url(f"**/call/{seed.ids['cache_fill'][0]}")


@needs_browser
def test_session_page_draws_tree_and_one_bar_per_call(page, seed, shots):
    sid = seed.ids["session_id"][0]
    page.goto("/sessions")
    page.locator("#sessions a", has_text=sid).click()
    page.wait_for_url(f"**/session/{sid}")
    calls = seed.sql("SELECT id FROM requests WHERE session_id = ?", [sid])
    bars = page.locator("#timeline .bar")
    assert bars.count() == len(calls) == 5
    assert {b.get_attribute("href") for b in bars.all()} == {f"/call/{c[0]}" for c in calls}
    # the tree the terminal draws: same labels as `helicone-addon sessions ID`
    tree = cli_json("sessions", sid, "--json", "--db", str(seed.db))
    labels = [t.strip() for t in page.locator("#timeline .node .tl-label").all_inner_texts()]
    assert labels == [lbl.strip() for lbl in render.tree_labels(tree["nodes"])]
    assert labels == ["/", "├─ plan", "│  └─ search", "└─ answer"]
    # bars are placed in time order, each inside the track
    lefts = [float(re.search(r"left: ([\d.]+)%", b.get_attribute("style")).group(1)) for b in bars.all()]
    assert lefts == sorted(lefts) and lefts[0] == 0
    snap(page, shots, "session.png")


# ---------------------------------------------------------------------------------------------
# without a browser


def test_pages_are_read_only_and_unknown_ids_are_404(ui, seed):
    before = seed.sql("SELECT count(*) FROM requests")[0][0]
    assert httpx.post(f"{ui}/requests", data={"q": "x"}, headers=auth()).status_code == 405
    assert httpx.get(f"{ui}/call/nope", headers=auth()).status_code == 404
    assert httpx.get(f"{ui}/session/nope", headers=auth()).status_code == 404
    r = httpx.get(f"{ui}/requests", params={"status": "teapot"}, headers=auth())
    assert r.status_code == 400 and "unknown status filter" in r.text
    assert httpx.get(f"{ui}/static/style.css", headers=auth()).status_code == 200
    assert seed.sql("SELECT count(*) FROM requests")[0][0] == before


def test_ui_without_database_fails_cleanly(tmp_path, capsys):
    assert cli.main(["ui", "--db", str(tmp_path / "missing.db"), "--port", "0"]) == 1
    assert "no log database at" in capsys.readouterr().err


def test_failed_calls_fold_into_the_model_that_answers(tmp_path):
    from datetime import UTC, datetime

    import sqlite_utils

    from helicone_addon.store import migrations
    from helicone_addon.ui import queries

    db = sqlite_utils.Database(tmp_path / "log.db")
    migrations.migrate(db)
    day = datetime.now(UTC).strftime("%Y-%m-%d")

    def row(i, model, requested, status, cost):
        return {"id": f"id-{i}", "created_at": f"{day}T00:00:0{i}.000Z", "model": model, "model_requested": requested,
                "status": status, "cost_usd": cost, "latency_ms": 100.0 * (i + 1),
                "error": "boom" if status != 200 else None}

    db["requests"].insert_all([
        row(0, "gpt-4o-2024-08-06", "gpt-4o", 200, 0.01), row(1, "gpt-4o-2024-08-06", "gpt-4o", 200, 0.02),
        row(2, "gpt-4o", "gpt-4o", 429, None),  # failed before a model answered: joins the answering model
        row(3, "o9", "o9", 500, None),  # never answered at all: stays itself
    ])
    s = queries.series(db, queries.range_filters("7d"), "7d")
    assert set(s.cost) == {"gpt-4o-2024-08-06", "o9"}
    assert s.cost["gpt-4o-2024-08-06"][day] == pytest.approx(0.03)
    assert (s.calls[day], s.errors[day]) == (4, 2)
    assert (s.p50[day], s.p95[day]) == (200.0, 400.0)
    assert day in s.buckets and len(s.buckets) == 8


def test_charts_use_round_ticks_and_dollars():
    from helicone_addon.ui import chart

    assert chart.nice_scale(0.0019) == (0.002, 0.0005, 4)
    assert chart.nice_scale(3, integer=True)[1] == 1.0
    assert chart.nice_scale(4606)[:2] == (6000.0, 2000.0)
    svg = chart.stacked_bars(["2025-05-01", "2025-05-02"], {"m": {"2025-05-01": 0.0019, "2025-05-02": 0.0004}},
                             {"m": "#000"}, chart.fmt_usd)
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', svg)
    assert ticks == ["$0", "$0.0005", "$0.0010", "$0.0015", "$0.0020", "May 1", "May 2"]
    assert svg.count('class="seg"') == 2 and "e-0" not in svg
    line = chart.lines(["2025-05-01", "2025-05-02"], {"p50": {"2025-05-01": 1500.0, "2025-05-02": None}},
                       {"p50": "#000"}, chart.fmt_ms)
    assert re.findall(r'class="tick"[^>]*>([^<]+)<', line)[:4] == ["0", "500 ms", "1 s", "1.5 s"]
    assert line.count("<circle") == 1


def test_every_page_answers_on_an_empty_log(tmp_path):
    import sqlite_utils
    from starlette.testclient import TestClient

    from helicone_addon.store import migrations
    from helicone_addon.ui import create_app

    db = sqlite_utils.Database(tmp_path / "empty.db")
    migrations.migrate(db)
    db.close()
    with TestClient(create_app(tmp_path / "empty.db")) as client:
        for range_key in ("24h", "7d", "30d", "all"):
            r = client.get("/", params={"range": range_key})
            assert r.status_code == 200 and "No calls in this range." in r.text
        assert "No calls match." in client.get("/requests", params={"q": "anything", "model": "x"}).text
        assert "No sessions" in client.get("/sessions").text
        assert client.get("/", params={"range": "1y"}).status_code == 400
        assert client.get("/requests", params={"page": "zero"}).status_code == 400
        assert client.get("/requests", params={"prop": "novalue"}).status_code == 400
