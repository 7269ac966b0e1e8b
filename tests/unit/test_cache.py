"""Unit tests for helicone_addon.cache (pure module: key recipe, entry format, disk buckets).

The bucket tests run on both backends: diskcache (ResponseCache) and Redis
(helicone_addon.fleet.redis_cache.RedisResponseCache)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import sqlite3
import stat
import sys
import time
from collections import Counter

import pytest

from helicone_addon import cache as hc
from helicone_addon.cache import (
    CachedResponse,
    CacheFormatError,
    ResponseCache,
    cache_key,
    slot_key,
)
from helicone_addon.headers import parse_bucket_size, parse_ignore_keys, ttl_from_cache_control
from servers import redis_server  # noqa: F401 - fixture

URL = "https://oai.helicone.ai/v1/chat/completions"
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"request_id":"r1"}'
SECRET = "sk-proj-SUPERSECRETvalue1234567890"
HDRS = [
    ("Content-Type", "application/json"),
    ("Authorization", f"Bearer {SECRET}"),
    ("Helicone-Auth", "Bearer sk-helicone-abcdef"),
    ("Helicone-Cache-Enabled", "true"),
    ("User-Agent", "pytest"),
]


def key(**kw):
    args = dict(seed=None, url=URL, body=BODY, headers=HDRS)
    args.update(kw)
    return cache_key(**args)


def entry(body=b'{"id":"chatcmpl-1","choices":[]}', **kw) -> CachedResponse:
    args = dict(
        status=200,
        headers=[("content-type", "application/json"), ("x-request-id", "abc")],
        body=body,
        latency_ms=123.5,
        request_id="11111111-2222-3333-4444-555555555555",
    )
    args.update(kw)
    return CachedResponse(**args)


def open_cache(spec: tuple[str, str]):
    """A cache on a backend named by (kind, directory or URL); picklable for subprocesses."""
    kind, where = spec
    if kind == "redis":
        from helicone_addon.fleet.redis_cache import RedisResponseCache

        return RedisResponseCache(where, timeout=2.0)  # semantics here; outages in test_fleet_redis.py
    return ResponseCache(where)


@pytest.fixture(params=["diskcache", "redis"])
def backend(request, tmp_path) -> tuple[str, str]:
    if request.param == "redis":
        pytest.importorskip("redis")
        return ("redis", request.getfixturevalue("redis_server").url)
    return ("diskcache", str(tmp_path / "cache"))


@pytest.fixture
def rc(backend):
    c = open_cache(backend)
    yield c
    c.close()


def raw_get(rc, base: str, i: int):
    if isinstance(rc, ResponseCache):
        return rc._cache.get(slot_key(base, i))
    return rc._client.get(rc.key(base, i))


def raw_set(rc, base: str, i: int, value) -> None:
    """Write a slot behind the cache's back (values it would never write itself)."""
    if isinstance(rc, ResponseCache):
        _raw_put(rc, slot_key(base, i), value)
    else:
        rc._client.set(rc.key(base, i), value, px=60_000)


def has_slot(rc, base: str, i: int) -> bool:
    if isinstance(rc, ResponseCache):
        return slot_key(base, i) in rc._cache
    return bool(rc._client.exists(rc.key(base, i)))


# ------------------------------------------------------------------------------------------
# Key recipe
# ------------------------------------------------------------------------------------------


def test_key_is_stable_hex_sha256():
    k = key()
    assert k == key()
    assert len(k) == 64 and int(k, 16) >= 0
    assert k == hashlib.sha256(
        hc._key_material(seed=None, url=URL, body=BODY, headers=HDRS)
    ).hexdigest()


def test_key_material_follows_helicone_recipe():
    hdrs = [("Helicone-Cache-Enabled", "true"), ("Helicone-Cache-Seed", "s1"), ("X-Other", "1")]
    m = hc._key_material(seed="s1", url=URL, body=b'{"a": 1,  "b":[1, 2]}', headers=hdrs)
    expected = (
        "s1" + URL + '{"a":1,"b":[1,2]}'
        + json.dumps(
            [["helicone-cache-enabled", "true"], ["helicone-cache-seed", "s1"]],
            separators=(",", ":"),
        )
    ).encode()
    assert m == expected


@pytest.mark.parametrize("name", ["Authorization", "x-api-key", "api-key", "x-goog-api-key"])
def test_each_credential_header_changes_key(name):
    a = [("Content-Type", "application/json"), (name, "key-AAAAAAAAAAAA")]
    b = [("Content-Type", "application/json"), (name, "key-BBBBBBBBBBBB")]
    none = [("Content-Type", "application/json")]
    ka, kb, kn = (cache_key(seed=None, url=URL, body=BODY, headers=h) for h in (a, b, none))
    assert len({ka, kb, kn}) == 3
    # case of the header name does not matter
    upper = [("Content-Type", "application/json"), (name.upper(), "key-AAAAAAAAAAAA")]
    assert cache_key(seed=None, url=URL, body=BODY, headers=upper) == ka


def test_credential_headers_are_distinguished_by_name():
    k1 = cache_key(seed=None, url=URL, body=BODY, headers=[("x-api-key", "same")])
    k2 = cache_key(seed=None, url=URL, body=BODY, headers=[("api-key", "same")])
    assert k1 != k2


def test_url_key_param_changes_key_and_is_removed_from_material():
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    ka = cache_key(seed=None, url=base + "?key=AIzaAAAAAAAA", body=BODY, headers=[])
    kb = cache_key(seed=None, url=base + "?key=AIzaBBBBBBBB", body=BODY, headers=[])
    kn = cache_key(seed=None, url=base, body=BODY, headers=[])
    assert len({ka, kb, kn}) == 3
    # the other query parameters stay in the url part, in order, byte for byte
    m = hc._key_material(
        seed=None, url=base + "?alt=sse&key=AIzaSECRET&x=%2F1", body=b"", headers=[]
    )
    assert b"AIzaSECRET" not in m
    assert (base + "?alt=sse&x=%2F1").encode() in m
    # position of the key= parameter does not matter, only its value
    k1 = cache_key(seed=None, url=base + "?key=K1&alt=sse", body=BODY, headers=[])
    k2 = cache_key(seed=None, url=base + "?alt=sse&key=K1", body=BODY, headers=[])
    assert k1 == k2
    assert k1 != cache_key(seed=None, url=base + "?alt=sse&key=K2", body=BODY, headers=[])
    # a percent-encoded parameter name is still recognised
    m = hc._key_material(seed=None, url=base + "?%6Bey=ENCODEDSECRET", body=b"", headers=[])
    assert b"ENCODEDSECRET" not in m


def test_secret_never_in_key_material():
    url = URL + "?key=QUERYSECRET123"
    hdrs = HDRS + [
        ("x-api-key", "XAPISECRET123"),
        ("api-key", "AZURESECRET123"),
        ("x-goog-api-key", "GOOGSECRET123"),
    ]
    m = hc._key_material(seed="seed", url=url, body=BODY, headers=hdrs)
    for s in (SECRET, "QUERYSECRET123", "XAPISECRET123", "AZURESECRET123", "GOOGSECRET123",
              "sk-helicone-abcdef"):  # fmt: skip
        assert s.encode() not in m
        assert s not in cache_key(seed="seed", url=url, body=BODY, headers=hdrs)


def test_seed_changes_key():
    assert key(seed=None) == key(seed="")
    assert len({key(seed=None), key(seed="a"), key(seed="b")}) == 3


def test_helicone_cache_headers_and_auth_enter_key():
    base = [("Helicone-Cache-Enabled", "true")]
    k0 = cache_key(seed=None, url=URL, body=BODY, headers=base)
    assert k0 != cache_key(
        seed=None, url=URL, body=BODY, headers=base + [("Helicone-Cache-Bucket-Max-Size", "3")]
    )
    assert k0 != cache_key(seed=None, url=URL, body=BODY, headers=base + [("Helicone-Auth", "x")])
    # unrelated headers do not
    assert k0 == cache_key(
        seed=None, url=URL, body=BODY, headers=base + [("User-Agent", "x"), ("Helicone-User-Id", "u")]
    )


def test_url_is_part_of_key():
    assert key(url=URL) != key(url="https://gateway.helicone.ai/v1/chat/completions")


def test_ignore_keys_drop_only_those_top_level_keys():
    b1 = b'{"model":"m","request_id":"r1","ts":1,"messages":[{"request_id":"in"}]}'
    b2 = b'{"model":"m","request_id":"r2","ts":2,"messages":[{"request_id":"in"}]}'
    b3 = b'{"model":"other","request_id":"r3","ts":3,"messages":[{"request_id":"in"}]}'
    b4 = b'{"model":"m","request_id":"r2","ts":2,"messages":[{"request_id":"CHANGED"}]}'
    ign = ("request_id", "ts")
    assert key(body=b1) != key(body=b2)
    assert key(body=b1, ignore_keys=ign) == key(body=b2, ignore_keys=ign)
    assert key(body=b1, ignore_keys=ign) != key(body=b3, ignore_keys=ign)  # other keys count
    assert key(body=b1, ignore_keys=ign) != key(body=b4, ignore_keys=ign)  # nested not dropped


def test_whitespace_only_json_difference_shares_key_but_order_counts():
    a = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    b = b'{\n  "model": "m",\n  "messages": [ { "role": "user", "content": "hi" } ]\n}\n'
    c = b'{"messages":[{"role":"user","content":"hi"}],"model":"m"}'
    assert key(body=a) == key(body=b)
    assert key(body=a) != key(body=c)  # JSON.stringify keeps key order
    # unicode escapes vs literal characters are the same JSON
    assert key(body='{"c":"é"}'.encode()) == key(body=b'{"c":"\\u00e9"}')


def test_non_json_body_used_raw():
    assert key(body=b"a=1&b=2") != key(body=b"a=1&b=3")
    assert key(body=b"a=1 ") != key(body=b"a=1")
    assert key(body=b"\xff\xfe\x00garbage") == key(body=b"\xff\xfe\x00garbage")
    assert key(body=b"") == key(body=b"")
    # NaN is not JSON for JavaScript: used raw (no crash)
    assert key(body=b'{"a": NaN}') != key(body=b'{"a":NaN}')
    # lone surrogate escapes survive the re-serialisation
    assert key(body=b'{"a":"\\ud800"}') == key(body=b'{"a": "\\ud800"}')


def test_header_order_is_irrelevant():
    shuffled = list(HDRS)
    random.Random(1).shuffle(shuffled)
    assert shuffled != HDRS
    assert key(headers=shuffled) == key(headers=list(reversed(HDRS))) == key()


def test_slot_key():
    base = key()
    assert slot_key(base, 0) == base
    assert slot_key(base, 1) == hashlib.sha256((base + "1").encode()).hexdigest()
    assert len({slot_key(base, i) for i in range(20)}) == 20
    with pytest.raises(ValueError):
        slot_key(base, -1)


# ------------------------------------------------------------------------------------------
# Header parsing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, 604800),
        ("", 604800),
        ("no-cache", 604800),
        ("max-age=60", 60),
        ("public, max-age=60", 60),
        ("MAX-AGE=60", 60),
        ("max-age=60, s-maxage=120", 120),
        ("s-maxage=120, max-age=60", 120),
        ('max-age="30"', 30),
        ("max-age=0", 0),
        ("max-age=99999999999999999999", 31536000),
        ("s-maxage=31536001", 31536000),
    ],
)
def test_ttl_from_cache_control(value, expected):
    assert ttl_from_cache_control(value) == expected


@pytest.mark.parametrize("value", ["max-age=-1", "max-age=abc", "s-maxage=1.5", "max-age", "max-age="])
def test_ttl_from_cache_control_invalid(value):
    with pytest.raises(ValueError, match="max-age=N or s-maxage=N"):
        ttl_from_cache_control(value)


def test_ttl_custom_default_and_maximum():
    assert ttl_from_cache_control(None, default=10) == 10
    assert ttl_from_cache_control("max-age=100", maximum=50) == 50


def test_parse_bucket_size():
    assert parse_bucket_size(None) == 1
    assert parse_bucket_size("1") == 1
    assert parse_bucket_size(" 20 ") == 20
    for bad in ["0", "21", "-1", "abc", "", "2.5", "1e1"]:
        with pytest.raises(ValueError, match="accepted: an integer from 1 to 20"):
            parse_bucket_size(bad)


def test_parse_ignore_keys():
    assert parse_ignore_keys(None) == ()
    assert parse_ignore_keys("") == ()
    assert parse_ignore_keys("request_id,timestamp") == ("request_id", "timestamp")
    assert parse_ignore_keys(" request_id , , timestamp ,") == ("request_id", "timestamp")
    assert parse_ignore_keys("a,a,b") == ("a", "b")


# ------------------------------------------------------------------------------------------
# Entry format
# ------------------------------------------------------------------------------------------


def test_entry_roundtrip_plain():
    e = entry()
    assert CachedResponse.from_bytes(e.to_bytes()) == e


def test_entry_roundtrip_stream_and_compression():
    chunks = [f'data: {{"i":{i},"t":"tok"}}\n\n'.encode() for i in range(500)] + [b"data: [DONE]\n\n"]
    e = entry(body=b"".join(chunks), streamed=True,
              headers=[("content-type", "text/event-stream"), ("x-weird", "\udcff lone")])
    data = e.to_bytes()
    assert len(data) < len(e.body) / 3  # compressed
    assert CachedResponse.from_bytes(data) == e


def test_entry_is_readable_at_a_glance():
    data = entry(body=b'{"answer": 42}').to_bytes()
    head, _, body = data.partition(b"\n")
    assert head.startswith(b"HLC2 {") and json.loads(head[5:])["status"] == 200
    assert body == b'{"answer": 42}'


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"",
        lambda d: b"XXXX" + d[4:],  # bad magic
        lambda d: d[:3] + b"9" + d[4:],  # another version
        lambda d: d[:-3],  # truncated body
        lambda d: d + b"tail",  # trailing bytes
        lambda d: d.replace(b'"status":', b'"status}', 1),  # broken JSON
        lambda d: d.replace(b'"status":200', b'"status":"x"', 1),  # wrong type
        lambda d: d.replace(b'"body_len":', b'"body_lex":', 1),  # missing field
        lambda d: d.replace(b"\n", b" ", 1),  # no metadata line
        lambda d: d.replace(b'"zlib":false', b'"zlib":true', 1),  # not compressed after all
    ],
)
def test_entry_decode_rejects_damage(mutate):
    data = entry().to_bytes()
    with pytest.raises(CacheFormatError):
        CachedResponse.from_bytes(mutate(data))


# ------------------------------------------------------------------------------------------
# ResponseCache
# ------------------------------------------------------------------------------------------


def test_store_and_lookup_single(rc):
    base = key()
    assert rc.lookup(base) is None
    e = entry()
    assert rc.store(base, 1, e, 60) == 0
    hit = rc.lookup(base)
    assert hit is not None
    got, idx = hit
    assert idx == 0 and got == e
    # slot occupied: second store is refused, first entry kept
    assert rc.store(base, 1, entry(body=b"other"), 60) is None
    assert rc.lookup(base)[0].body == e.body
    assert rc.lookup(key(seed="other")) is None


def test_bucket_semantics(rc):
    base = key()
    rng = random.Random(1234)
    for i in range(3):
        assert rc.lookup(base, 3, rng) is None  # MISS until every slot is full
        assert rc.store(base, 3, entry(body=f"answer {i}".encode()), 60) == i
    assert rc.store(base, 3, entry(body=b"too many"), 60) is None
    seen = Counter()
    for _ in range(300):
        got, idx = rc.lookup(base, 3, rng)
        assert got.body == f"answer {idx}".encode()
        seen[idx] += 1
    assert set(seen) == {0, 1, 2}
    assert min(seen.values()) > 60  # roughly uniform
    # a bucket of 1 over the same base only sees slot 0
    assert rc.lookup(base, 1)[1] == 0
    # a bigger bucket over the same base misses until its new slots are filled
    assert rc.lookup(base, 4, rng) is None
    assert rc.store(base, 4, entry(body=b"answer 3"), 60) == 3
    assert rc.lookup(base, 4, rng) is not None


def test_ttl_expiry(rc):
    base = key()
    assert rc.store(base, 1, entry(), 1) == 0
    assert rc.lookup(base) is not None
    time.sleep(1.2)
    assert rc.lookup(base) is None
    # an expired slot can be reused
    assert rc.store(base, 1, entry(body=b"fresh"), 60) == 0
    assert rc.lookup(base)[0].body == b"fresh"


def test_zero_ttl_not_stored(rc):
    assert rc.store(key(), 1, entry(), 0) is None
    assert len(rc) == 0


def _raw_put(rc, k, value):
    """Write a row behind diskcache's back (it would refuse non-bytes values)."""
    now = time.time()
    con = sqlite3.connect(os.path.join(rc.directory, "cache.db"))
    con.execute(
        "INSERT OR REPLACE INTO Cache (key, raw, store_time, expire_time, access_time,"
        " access_count, tag, size, mode, filename, value) VALUES (?,1,?,?,?,0,NULL,0,1,NULL,?)",
        (k, now, now + 60, now, value),
    )
    con.commit()
    con.close()


@pytest.mark.parametrize(
    "bad",
    [b"garbage", b"HLC2 {}\n", "a string", 42],
)
def test_corrupt_entry_is_miss_and_removed(rc, bad, caplog):
    base = key()
    raw_set(rc, base, 0, bad)
    with caplog.at_level("WARNING"):
        assert rc.lookup(base) is None
    assert "corrupt" in caplog.text or "unreadable" in caplog.text
    assert not has_slot(rc, base, 0)
    assert rc.store(base, 1, entry(), 60) == 0
    assert rc.lookup(base) is not None


def test_corrupt_bytes_with_good_header_removed(rc):
    base = key()
    data = entry().to_bytes()
    raw_set(rc, base, 0, data[:-5])
    assert rc.lookup(base) is None
    assert not has_slot(rc, base, 0)


def test_corrupt_chosen_slot_in_full_bucket(rc):
    base = key()
    for i in range(2):
        rc.store(base, 2, entry(body=str(i).encode()), 60)
    good = raw_get(rc, base, 1)
    raw_set(rc, base, 1, good[:-1])  # header fine, payload damaged

    class Pick1:
        def randrange(self, n):
            return 1

    assert rc.lookup(base, 2, Pick1()) is None
    assert not has_slot(rc, base, 1)
    assert has_slot(rc, base, 0)


def test_pickled_row_is_never_unpickled(tmp_path):
    """A hostile row in pickle mode must not execute code: it is a miss and is deleted."""
    d = str(tmp_path / "c")
    rc = ResponseCache(d)
    base = key()
    rc.store(base, 1, entry(), 60)
    rc.close()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    con = sqlite3.connect(os.path.join(d, "cache.db"))
    con.execute(
        "UPDATE Cache SET mode = 4, value = ? WHERE key = ?",
        (pickle.dumps(Evil()), slot_key(base, 0)),
    )
    con.commit()
    con.close()
    rc = ResponseCache(d)
    try:
        assert rc.lookup(base) is None
        assert not marker.exists()
        assert slot_key(base, 0) not in rc._cache
    finally:
        rc.close()


def test_file_row_outside_dir_is_not_read_or_deleted(tmp_path):
    d = str(tmp_path / "c")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    rc = ResponseCache(d)
    base = key()
    rc.store(base, 1, entry(), 60)
    con = sqlite3.connect(os.path.join(d, "cache.db"))
    con.execute(
        "UPDATE Cache SET mode = 2, value = NULL, filename = ? WHERE key = ?",
        ("../victim.txt", slot_key(base, 0)),
    )
    con.commit()
    con.close()
    assert rc.lookup(base) is None
    assert victim.read_text() == "keep me"
    assert slot_key(base, 0) not in rc._cache  # the bad row itself is gone
    rc.close()


def test_disk_errors_never_raise(tmp_path, caplog):
    rc = ResponseCache(str(tmp_path / "c"))
    base = key()
    rc.store(base, 1, entry(), 60)

    def boom(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    rc._cache.get = boom
    rc._cache.add = boom
    with caplog.at_level("WARNING"):
        assert rc.lookup(base) is None
        assert rc.store(base, 1, entry(), 60) is None
    assert "disk I/O error" in caplog.text
    rc.close()


def test_store_unserialisable_entry_logs_and_returns_none(rc, caplog):
    bad = entry(status="not a number")
    with caplog.at_level("ERROR"):
        assert rc.store(key(), 1, bad, 60) is None
    assert "cannot serialise" in caplog.text


def test_permissions(tmp_path):
    d = tmp_path / "sub" / "cache"
    old = os.umask(0o022)
    try:
        rc = ResponseCache(str(d))
        rc.store(key(), 1, entry(), 60)
        assert rc.lookup(key()) is not None
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    names = []
    for root, dirs, files in os.walk(d):
        for n in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, n)).st_mode) == 0o700
        for n in files:
            names.append(n)
            assert stat.S_IMODE(os.stat(os.path.join(root, n)).st_mode) == 0o600, n
    assert "cache.db" in names and "cache.db-wal" in names
    rc.close()
    # a pre-existing world-readable directory is tightened
    d2 = tmp_path / "loose"
    d2.mkdir(mode=0o755)
    os.chmod(d2, 0o755)
    ResponseCache(str(d2)).close()
    assert stat.S_IMODE(os.stat(d2).st_mode) == 0o700


def test_refuses_symlinked_database(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "cache.db").symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(OSError):
        ResponseCache(str(d))


def test_secret_never_written_to_disk(tmp_path):
    d = tmp_path / "c"
    rc = ResponseCache(str(d))
    url = URL + "?key=QUERYSECRET9876"
    hdrs = HDRS + [("x-api-key", "XAPISECRET9876"), ("x-goog-api-key", "GOOGSECRET9876")]
    base = cache_key(seed="s", url=url, body=BODY, headers=hdrs)
    assert rc.store(base, 2, entry(body=b"POSITIVE-CONTROL-MARKER"), 60) == 0
    assert rc.store(base, 2, entry(body=b"POSITIVE-CONTROL-MARKER"), 60) == 1
    assert rc.lookup(base, 2) is not None
    blob = b""
    for root, _dirs, files in os.walk(d):
        for n in files:
            with open(os.path.join(root, n), "rb") as f:
                blob += f.read()
    assert b"POSITIVE-CONTROL-MARKER" in blob  # the scan sees stored data
    for s in (SECRET, "QUERYSECRET9876", "XAPISECRET9876", "GOOGSECRET9876", "sk-helicone-abcdef"):
        assert s.encode() not in blob
        assert s.encode("utf-16-le") not in blob
    rc.close()


def test_size_limit_evicts_oldest(tmp_path):
    rc = ResponseCache(str(tmp_path / "c"), size_limit=256 * 1024)
    payload = os.urandom(8 * 1024)  # incompressible
    bases = [key(seed=str(i)) for i in range(200)]
    for b in bases:
        assert rc.store(b, 1, entry(body=payload), 3600) == 0
    assert rc.volume() < 2 * 256 * 1024
    assert len(rc) < 60
    assert rc.lookup(bases[0]) is None  # least recently stored went first
    assert rc.lookup(bases[-1]) is not None
    rc.close()


def test_reopen_and_two_handles_share_data(backend):
    a, b = open_cache(backend), open_cache(backend)
    assert a.store(key(), 2, entry(body=b"a"), 60) == 0
    assert b.store(key(), 2, entry(body=b"b"), 60) == 1
    assert a.lookup(key(), 2) is not None  # read-your-writes across handles
    a.close()
    b.close()
    c = open_cache(backend)
    assert len(c) == 2
    c.close()


# ------------------------------------------------------------------------------------------
# Multiprocess
# ------------------------------------------------------------------------------------------


def _mp_worker(spec, base, barrier, n, results):
    try:
        rc = open_cache(spec)
        barrier.wait(timeout=30)
        slot = rc.store(base, 3, entry(body=f"writer {n}".encode()), 600)
        rc.close()
        results.put((n, slot))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        results.put((n, f"error {exc!r}"))


@pytest.mark.skipif(sys.platform == "win32", reason="fork start method")
def test_multiprocess_bucket_no_overwrite(backend):
    ctx = mp.get_context("fork")
    for rnd in range(5):
        kind, where = backend
        spec = (kind, f"{where}/c{rnd}" if kind == "diskcache" else where)  # fresh dir: concurrent init too
        if kind == "redis":
            with open_cache(spec) as fresh:
                fresh.clear()
        base = key(seed=f"round{rnd}")
        barrier = ctx.Barrier(4)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_mp_worker, args=(spec, base, barrier, n, results))
            for n in range(4)
        ]
        for p in procs:
            p.start()
        got = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        slots = sorted(v for v in got.values() if v is not None)
        assert slots == [0, 1, 2], got
        assert list(got.values()).count(None) == 1
        rc = open_cache(spec)
        try:
            for n, slot in got.items():
                if slot is not None:  # the winner's body is in its slot: nothing overwritten
                    raw = raw_get(rc, base, slot)
                    assert CachedResponse.from_bytes(raw).body == f"writer {n}".encode()
            assert len(rc) == 3
        finally:
            rc.close()
