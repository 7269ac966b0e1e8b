"""LogStore: batching writer thread, migrations, faults (locked, deleted, unwritable), spill, retention."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from helicone_addon.store import LogStore, open_db
from helicone_addon.store.migrations import MIGRATIONS


def row(created: datetime | None = None, body: str = "x", **kw) -> dict:
    created = created or datetime.now(UTC)
    r = {"id": str(uuid.uuid4()), "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
         "provider": "openai", "model": "gpt-4o-mini", "status": 200, "request_body": body}
    r.update(kw)
    return r


def count(path, sql="SELECT count(*) FROM requests") -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def test_migrations_and_permissions(tmp_path):
    path = tmp_path / "d" / "h.db"
    db = open_db(path)
    names = {r["name"] for r in db["_migrations"].rows}
    assert names == {fn.__name__ for fn in MIGRATIONS}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.conn.close()
    open_db(path).conn.close()  # idempotent


def test_batches_and_flush(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    rows = [row() for _ in range(1000)]
    for r in rows:
        store.submit(lambda r=r: (r, [{"request_id": r["id"], "key": "k", "value": "v"}]))
    assert store.flush(20)
    assert count(path) == 1000
    assert count(path, "SELECT count(*) FROM properties") == 1000
    store.close()
    assert store.counters["written"] == 1000


def test_close_flushes_everything(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path, flush_interval=0.5).start()
    for _ in range(50):
        store.submit((row(), []))
    store.close()
    assert count(path) == 50


def test_a_failing_job_loses_only_itself(tmp_path):
    store = LogStore(tmp_path / "h.db").start()

    def bad():
        raise ValueError("boom")

    store.submit(bad)
    store.submit((row(), []))
    assert store.flush(10)
    store.close()
    assert store.counters["build_errors"] == 1 and store.counters["written"] == 1


def test_locked_database_waits_and_loses_nothing(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    store.submit((row(), []))
    assert store.flush(10)
    locker = sqlite3.connect(path, timeout=1, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release():
        time.sleep(2)
        locker.execute("COMMIT")
        locker.close()
        released.set()

    threading.Thread(target=release).start()
    t0 = time.monotonic()
    for _ in range(20):
        store.submit((row(), []))  # submit never blocks
    assert time.monotonic() - t0 < 0.1
    assert store.flush(30)
    assert released.is_set()
    assert count(path) == 21
    store.close()


def test_deleted_database_is_recreated(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    store.submit((row(), []))
    assert store.flush(10)
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / f"h.db{suffix}"
        if p.exists():
            p.unlink()
    store.submit((row(), []))
    assert store.flush(20)
    store.close()
    assert count(path) == 1  # the new file has the row written after the deletion


def test_unwritable_database_spills_and_reloads(tmp_path, caplog):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    store.submit((row(), []))
    assert store.flush(10)
    store._db.conn.close()
    store._db = None
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / f"h.db{suffix}"
        if p.exists():
            p.unlink()
    path.mkdir()  # the database path is now a directory: nothing can be written there
    spilled = [row(body=f"spill-{i}") for i in range(3)]
    for r in spilled:
        store.submit((r, [{"request_id": r["id"], "key": "k", "value": "v"}]))
    assert store.flush(30)
    store.close()
    assert store.counters["spilled"] == 3
    assert "spilled" in caplog.text
    spill = tmp_path / "h.db.spill.jsonl"
    assert spill.exists() and stat.S_IMODE(os.stat(spill).st_mode) == 0o600
    path.rmdir()
    again = LogStore(path).start()  # next start loads the spilled rows back
    again.close()
    assert not spill.exists()
    assert count(path, "SELECT count(*) FROM requests WHERE request_body LIKE 'spill-%'") == 3
    assert count(path, "SELECT count(*) FROM properties") == 3
    assert count(path, "SELECT value FROM store_counters WHERE name = 'reloaded'") == 3


def test_disk_full_is_counted_not_a_crash(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        store = LogStore(mnt / "h.db").start()
        big = "y" * 20000
        for _ in range(100):
            store.submit((row(body=big), []))
        assert store.flush(120)
        store.close()
        c = store.counters
        assert c["written"] + c["spilled"] + c["dropped"] == 100
        assert c["spilled"] + c["dropped"] > 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_retention_by_age_and_size(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    old = [row(datetime.now(UTC) - timedelta(days=40)) for _ in range(5)]
    new = [row() for _ in range(5)]
    for r in old + new:
        store.submit((r, [{"request_id": r["id"], "key": "k", "value": "v"}]))
    assert store.flush(10)
    store.retention_days = 30
    assert store.apply_retention()["age"] == 5
    assert count(path) == 5 and count(path, "SELECT count(*) FROM properties") == 5
    # size: 400 rows of 20 KB, keep the file under 2 MiB
    for _ in range(400):
        store.submit((row(body="z" * 20000), []))
    assert store.flush(30)
    store.retention_days = 0
    store.max_db_bytes = 2 * 1024 * 1024
    store.apply_retention()
    store.close()
    assert count(path) < 120
    assert os.path.getsize(path) <= 3 * 1024 * 1024  # the space was given back (incremental vacuum)


def test_two_processes_write_one_database(tmp_path):
    path = tmp_path / "h.db"
    code = (
        "import sys, uuid; from helicone_addon.store import LogStore\n"
        "s = LogStore(sys.argv[1]).start()\n"
        "for i in range(300): s.submit(({'id': str(uuid.uuid4()), 'created_at': 'now', 'status': 200}, []))\n"
        "s.close()\n"
    )
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)]) for _ in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert count(path) == 900
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    shutil.rmtree(tmp_path / "none", ignore_errors=True)


def _open_each(paths, barrier, errors):
    for path in paths:
        barrier.wait(30)
        try:
            open_db(path).conn.close()
        except Exception as e:  # noqa: BLE001 - reported to the test
            errors.put(f"{path.parent.name}: {e!r}")


def test_processes_starting_together_on_a_new_data_dir_all_open_it(tmp_path):
    """Two proxies started at the same moment on a new data dir: both must open and migrate the log
    (without a cross-process lock, both ran the migrations: "table requests already exists", and the
    second proxy exited at start). Three processes meet on each of ten new databases."""
    import multiprocessing

    mp = multiprocessing.get_context("fork")
    paths = [tmp_path / f"d{i}" / "helicone.db" for i in range(10)]
    barrier, errors = mp.Barrier(3), mp.Queue()
    procs = [mp.Process(target=_open_each, args=(paths, barrier, errors)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [p.exitcode for p in procs] == [0, 0, 0]
    for path in paths:
        assert {r["name"] for r in open_db(path)["_migrations"].rows} == {fn.__name__ for fn in MIGRATIONS}


def test_lone_surrogates_are_stored_replaced(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    r = row(body="ok \udc80 \ud800 end")
    store.submit((r, [{"request_id": r["id"], "key": "k\udcff", "value": "v"}]))
    assert store.flush(10)
    store.close()
    assert store.counters["written"] == 1 and store.counters["spilled"] == 0
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT request_body FROM requests").fetchone()[0].startswith("ok \ufffd")
    conn.close()


def test_absurd_integers_do_not_poison_a_batch(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    good, bad = row(), row(prompt_tokens=10**30)
    store.submit((good, []))
    store.submit((bad, []))
    assert store.flush(10)
    store.close()
    assert store.counters["written"] == 2 and store.counters["spilled"] == 0
    assert count(path, "SELECT count(*) FROM requests WHERE prompt_tokens IS NULL") == 2


def test_one_bad_spilled_row_does_not_keep_the_others_out(tmp_path):
    import json as _json

    path = tmp_path / "h.db"
    good = row()
    spill = tmp_path / "h.db.spill.jsonl"
    spill.write_text(_json.dumps({"row": good, "properties": []}) + "\n"
                     + _json.dumps({"row": {"id": "bad", "no_such_column": 1}, "properties": []}) + "\n"
                     + '{"row": {"id": "torn')
    store = LogStore(path).start()
    store.close()
    assert count(path) == 1 and not spill.exists()
    assert store.counters["reloaded"] == 1 and store.counters["dropped"] == 1
    assert count(path, "SELECT value FROM store_counters WHERE name = 'dropped'") == 1


def test_insert_rows_one_statement_union_of_columns_and_sqlite_utils_values(tmp_path):
    from helicone_addon.store import insert_rows

    db = open_db(tmp_path / "h.db")
    a = row(body="alpha walrus", prompt_text="alpha walrus")
    b = {"id": str(uuid.uuid4()), "created_at": "2025-01-01T00:00:00.000Z", "properties": {"k": ["v", 1]},
         "status": 500}
    with db.conn:
        insert_rows(db.conn, "requests", [a, b])
    got = {r["id"]: r for r in db.query("SELECT id, request_body, status, properties, model FROM requests")}
    assert got[a["id"]]["request_body"] == "alpha walrus" and got[a["id"]]["properties"] is None
    assert got[b["id"]]["request_body"] is None and got[b["id"]]["status"] == 500
    assert got[b["id"]]["properties"] == '{"k": ["v", 1]}'  # as sqlite-utils stores a dict
    # the same id again replaces the row, and the full-text index follows (delete trigger on REPLACE)
    with db.conn:
        insert_rows(db.conn, "requests", [dict(a, request_body="beta otter", prompt_text="beta otter")])
    assert count(tmp_path / "h.db") == 2
    assert [r["id"] for r in db.query(
        "SELECT id FROM requests WHERE rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH 'otter')")] == [a["id"]]
    assert not list(db.query("SELECT rowid FROM requests_fts WHERE requests_fts MATCH 'walrus'"))
    db.execute("INSERT INTO requests_fts(requests_fts, rank) VALUES('integrity-check', 1)")
    db.conn.close()


def test_batched_rows_are_searchable_and_the_index_is_sound(tmp_path):
    path = tmp_path / "h.db"
    store = LogStore(path).start()
    for i in range(700):  # several batches, several statements
        text = f"prompt number{i} zebra" if i % 7 == 0 else f"prompt number{i}"
        r = row(body=text, prompt_text=text)  # prompt_text: what the full-text index reads
        store.submit(lambda r=r, i=i: (r, [{"request_id": r["id"], "key": "n", "value": str(i)}]))
    assert store.flush(60)
    store.close()
    assert count(path) == 700 and count(path, "SELECT count(*) FROM properties") == 700
    assert count(path, "SELECT count(*) FROM requests_fts WHERE requests_fts MATCH 'zebra'") == 100
    assert count(path, "SELECT count(*) FROM requests_fts WHERE requests_fts MATCH 'number699'") == 1
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO requests_fts(requests_fts, rank) VALUES('integrity-check', 1)")
    conn.close()


def test_a_row_is_visible_to_readers_soon_after_submit(tmp_path):
    """Light load, a call every 20 ms: each row is committed (on_row runs after the commit, and a
    separate connection sees it there) well within 250 ms of its submit."""
    path = tmp_path / "h.db"
    submitted: dict[str, float] = {}
    delays: list[float] = []

    def on_row(r: dict) -> None:
        conn = sqlite3.connect(path, timeout=30)
        try:
            assert conn.execute("SELECT count(*) FROM requests WHERE id = ?", (r["id"],)).fetchone()[0] == 1
        finally:
            conn.close()
        delays.append(time.monotonic() - submitted[r["id"]])

    store = LogStore(path, on_row=on_row).start()
    for _ in range(20):
        r = row()
        submitted[r["id"]] = time.monotonic()
        store.submit((r, []))
        time.sleep(0.02)
    assert store.flush(30)
    store.close()
    assert len(delays) == 20
    delays.sort()
    assert delays[10] < 0.25, delays  # median
    assert delays[-1] < 2.0, delays


def test_a_slow_build_and_a_slow_insert_overlap_but_keep_order_and_counters(tmp_path):
    """Rows built while the previous batch is being written: every row lands, the counters add up,
    and flush() only returns once the last batch is committed."""
    path = tmp_path / "h.db"
    store = LogStore(path, batch_size=50, flush_interval=0.01).start()
    for i in range(500):
        r = row(body="y" * 2000)

        def job(r=r, i=i):
            if i % 100 == 0:
                time.sleep(0.05)
            return r, []

        store.submit(job)
    assert store.flush(60)
    assert count(path) == 500  # nothing still in flight once flush() said so
    store.close()
    assert store.counters["written"] == 500 and store.counters["build_errors"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own nice value on Linux only")
def test_writer_threads_yield_the_cpu_to_the_event_loop(tmp_path):
    """Both writer threads run at a higher nice value than the thread that started the store (the
    proxy's event loop): where they share a core, the OS runs the loop first."""
    from helicone_addon.store.writer import WRITER_NICE

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    store = LogStore(tmp_path / "h.db").start()
    try:
        store.submit((row(), []))
        assert store.flush(10)
        for t in (store._thread, store._inserter):
            assert os.getpriority(os.PRIO_PROCESS, t.native_id) == min(19, mine + WRITER_NICE), t.name
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's is untouched
        assert count(tmp_path / "h.db") == 1
    finally:
        store.close()


def test_counters_of_processes_sharing_the_log_add_up(tmp_path):
    """store_counters: what each process (a --workers worker, a second proxy on the data dir, the
    same proxy after a restart) publishes is added to the counter, never written over it."""
    from helicone_addon.store.gauges import add_counters

    path = tmp_path / "h.db"
    open_db(path).conn.close()
    add_counters(path, {"cache_read_errors": 2, "redis_outages": 1})  # worker 0
    add_counters(path, {"cache_read_errors": 3})  # worker 1
    add_counters(path, {"redis_outages": 1})  # worker 0 again, later
    assert count(path, "SELECT value FROM store_counters WHERE name = 'cache_read_errors'") == 5
    assert count(path, "SELECT value FROM store_counters WHERE name = 'redis_outages'") == 2
