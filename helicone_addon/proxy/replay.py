"""HeliconeReplay: answer LLM calls from recordings (the log, or a cassette) instead of the provider.

    helicone_replay=off     every call goes upstream (the default)
    helicone_replay=prefer  a call with a recording is replayed; the others go upstream and are recorded
    helicone_replay=only    every call is replayed; one with no recording gets a JSON error at once

The match is the cache-key recipe without the provider credential (replay.py), so a run with a
dummy key replays what was recorded with a real one. A JSON answer is sent at once; a stream is
served by a small loopback server with the recorded gaps between events (divided by
`helicone_replay_speed`, 0 = all at once), so mitmproxy streams it to the client, and logs it,
exactly like a live one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from helicone_addon import headers, replay
from helicone_addon.proxy.flowrecord import FlowRecord, json_response, record_of, short_circuit

logger = logging.getLogger("helicone_addon")

MODES = ("off", "prefer", "only")
TOKEN_HEADER = "x-helicone-replay-token"
MISS_STATUS = 404


def parse_speed(value: str) -> float:
    try:
        speed = float(value)
    except ValueError:
        speed = -1.0
    if not speed >= 0:
        raise exceptions.OptionsError(f"helicone_replay_speed must be a number >= 0 (0 = no delays), not {value!r}")
    return speed


class StreamServer:
    """Loopback HTTP/1.1 server that plays one recorded stream per request, paced."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.jobs: dict[str, tuple[replay.Recording, float]] = {}

    async def start(self) -> int:
        if self.server is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:] if line)
            )
            length = int(fields.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            job = self.jobs.pop(fields.get(TOKEN_HEADER, ""), None)
            if job is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                return
            recording, speed = job
            lines = [f"HTTP/1.1 {recording.status} OK"]
            lines += [f"{k}: {v}" for k, v in replay.response_headers_for_replay(recording.headers)]
            lines += [f"{headers.R_REPLAY}: HIT", f"{headers.R_REPLAY_ID}: {recording.id}",
                      "transfer-encoding: chunked"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
            for delay, data in replay.schedule(recording, speed):
                if delay:
                    await writer.drain()
                    await asyncio.sleep(delay)
                if data:
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the client went away: nothing to replay to
        finally:
            writer.close()


class HeliconeReplay:
    def __init__(self) -> None:
        self.recordings: replay.Recordings | None = None
        self.speed = 1.0
        self.server = StreamServer()
        self.lock = threading.Lock()  # recordings grow on the writer thread in prefer mode

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_replay", str, "off",
            "Answer LLM calls from recordings: off | prefer (replay when recorded, else forward and record) | "
            "only (never call the provider; an unrecorded call gets a JSON error with Helicone-Replay: MISS).",
            choices=list(MODES),
        )
        loader.add_option(
            "helicone_replay_speed", str, "1",
            "Replayed streams keep their recorded pacing divided by this factor (2 = twice as fast, 0 = at once).",
        )
        loader.add_option(
            "helicone_replay_file", str, "",
            "Replay from this cassette (helicone-addon export --format cassette) or log database instead of "
            "the log of helicone_data_dir.",
        )

    def configure(self, updated: set[str]) -> None:
        if "helicone_replay_speed" in updated:
            self.speed = parse_speed(ctx.options.helicone_replay_speed)
        if "helicone_replay_file" in updated and ctx.options.helicone_replay_file:
            if not Path(ctx.options.helicone_replay_file).expanduser().is_file():
                raise exceptions.OptionsError(f"helicone_replay_file: no such file {ctx.options.helicone_replay_file!r}")
        if updated & {"helicone_replay", "helicone_replay_file", "helicone_data_dir", "helicone_db"}:
            self.recordings = None  # loaded again on the next call

    async def done(self) -> None:
        await self.server.stop()

    def _recordings(self) -> replay.Recordings:
        if self.recordings is None:
            source = ctx.options.helicone_replay_file
            log = ctx.master.addons.get("heliconelog")
            path = Path(source).expanduser() if source else (log.db_path if log is not None else None)
            try:
                if source:  # a cassette or another log (the cassette format's module tells them apart)
                    from helicone_addon.export.cassette import load_recordings

                    self.recordings = load_recordings(path)
                else:  # our own log, open in this process: through SQLite only (see load_recordings)
                    self.recordings = replay.Recordings.from_log(path) if path is not None else replay.Recordings()
            except Exception:
                logger.exception("helicone: cannot read recordings from %s; replaying nothing", path)
                self.recordings = replay.Recordings()
            logger.info("helicone: replay (%s) with %d recordings from %s",
                        ctx.options.helicone_replay, len(self.recordings), path)
        return self.recordings

    async def request(self, flow: http.HTTPFlow) -> None:
        mode = ctx.options.helicone_replay
        if mode == "off":
            return
        rec = record_of(flow)
        if rec is None or rec.call.options is None:
            return
        call = rec.call
        cache = call.options.cache
        key = replay.replay_key(call.method, rec.incoming_url(), call.request_body, call.request_headers,
                                cache.seed, cache.ignore_keys)
        recordings = self._recordings()
        with self.lock:
            recording = recordings.next(key)
        if recording is None:
            if mode == "only":
                self._miss(flow, rec, key)
            elif not ctx.options.helicone_replay_file:  # prefer: recorded once its row is built
                rec.on_row.append(self._record)
            return
        call.replayed_from = recording.id
        if not recording.streamed or self.speed == 0:
            self._answer_at_once(flow, rec, recording)
            return
        port = await self.server.start()
        token = secrets.token_urlsafe(16)
        self.server.jobs[token] = (recording, self.speed)
        req = flow.request
        req.scheme, req.host, req.port = "http", "127.0.0.1", port
        req.headers[TOKEN_HEADER] = token
        call.target_url = f"replay:{recording.id}"
        rec.replaying = True  # the later addons leave it alone

    def _answer_at_once(self, flow: http.HTTPFlow, rec: FlowRecord, recording: replay.Recording) -> None:
        hdrs = replay.response_headers_for_replay(recording.headers)
        hdrs += [(headers.R_REPLAY, "HIT"), (headers.R_REPLAY_ID, recording.id)]
        resp = http.Response.make(
            recording.status, recording.body,
            [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in hdrs],
        )
        call = rec.call
        call.response_body = recording.body
        call.streamed = recording.streamed
        call.content_type = resp.headers.get("content-type")
        call.target_url = f"replay:{recording.id}"
        short_circuit(flow, rec, "replay", resp, None)
        call.status = recording.status
        if recording.streamed:
            call.first_chunk_at = call.ended_at

    def _miss(self, flow: http.HTTPFlow, rec: FlowRecord, key: str) -> None:
        call = rec.call
        model = call.request_info.model if call.request_info is not None else None
        if model is None:
            from helicone_addon import usage

            model = usage.parse_request(call.api, call.path, call.request_body).model
        message = (f"no recording for {call.method} {rec.incoming_url()} (model {model or '?'}, key {key[:12]}); "
                   "record it first (helicone_replay=off or prefer), or replay from another cassette")
        body = {"error": {"type": "replay_miss", "message": message, "method": call.method, "url": rec.incoming_url(),
                          "model": model, "key": key[:12]}}
        resp = json_response(MISS_STATUS, body, [(headers.R_REPLAY, "MISS"), (headers.R_ERROR, "true")])
        short_circuit(flow, rec, "replay", resp, message)

    def _record(self, row: dict, props: list) -> None:
        """prefer mode: a call that went upstream is replayable from now on (writer thread)."""
        if row.get("status") != 200 or row.get("cache_hit") or row.get("error"):
            return
        try:
            recording = replay.recording_from_row(row)
        except Exception:
            logger.exception("helicone: call %s not added to the recordings", row.get("id"))
            return
        with self.lock:
            self._recordings().add(recording)
