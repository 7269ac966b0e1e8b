"""The relay's attempt loop for one call: each target in turn (the fallbacks, else the call's own
target), each retried with the back-off of retry.py while the answer is retryable (429, 5xx) or no
answer came; the final answer goes to mitmproxy (`RelayOut`), or a JSON 502/504 when none came.
See relay.py for the whole design."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from helicone_addon import headers as hh
from helicone_addon.proxy import errorpages
from helicone_addon.proxy.relayclient import UpstreamClients, discard
from helicone_addon.proxy.relayout import RelayOut
from helicone_addon.proxy.relayplan import Job, RelayError, Target, describe_failure, fallback_targets, origin_of
from helicone_addon.retry import is_retryable_status

logger = logging.getLogger(__name__)


class Attempts:
    def __init__(self, clients: UpstreamClients, rng: Any) -> None:
        self.clients = clients
        self.rng = rng

    async def run(self, job: Job, out: RelayOut) -> None:
        """Make the attempts and answer; a bug here is a JSON 502 (or a broken-off answer)."""
        state = job.state
        try:
            await self._attempt_all(job, out)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("helicone: relay failed for %s", getattr(state, "id", "?"))
            if not out.started:
                cause = f"helicone relay error: {type(e).__name__}: {e}"
                state.error = cause
                try:
                    await out.json(502, errorpages.error_body(502, cause))
                except Exception:
                    out.abort()
            else:
                out.abort()

    async def _attempt_all(self, job: Job, out: RelayOut) -> None:
        state = job.state
        policy = job.policy
        targets = fallback_targets(job) if job.fallbacks else [Target(job.url, job.headers, job.body)]
        attempts: list[int | None] = []
        state.attempts = attempts
        per_target = policy.max_attempts if policy is not None else 1
        for ti, target in enumerate(targets):
            last_target = ti == len(targets) - 1
            for k in range(per_target):
                resp: httpx.Response | None = None
                exc: Exception | None = None
                try:
                    resp = await self.clients.send(job, target)
                except httpx.TransportError as e:  # connection errors, time-outs, protocol errors
                    exc = e
                status = resp.status_code if resp is not None else None
                attempts.append(status)
                state.retries = len(attempts) - 1
                if policy is not None and k < per_target - 1 and (resp is None or is_retryable_status(status)):
                    retry_after = resp.headers.get("retry-after") if resp is not None else None
                    delay = policy.delay_s(k, retry_after, rng=self.rng)
                    logger.info(
                        "helicone: %s attempt %d -> %s; retrying in %.3fs",
                        getattr(state, "id", "?"), len(attempts),
                        status if status is not None else describe_failure(exc), delay,
                    )
                    await self._wait(delay, resp)
                    continue
                if not last_target and target.fallback is not None and target.fallback.matches(status):
                    if resp is not None:
                        await discard(resp)
                    logger.info("helicone: %s fallback %d -> %s; trying fallback %d",
                                getattr(state, "id", "?"), ti,
                                status if status is not None else describe_failure(exc), ti + 1)
                    break
                state.target_url = target.url
                if job.fallbacks:
                    state.fallback_index = ti
                extra = self._extra_headers(job, ti, len(attempts) - 1)
                if resp is None:
                    await self._answer_failure(job, out, exc, len(attempts), extra)
                else:
                    await out.relay(resp, extra)
                return
        raise RelayError("no target left")  # unreachable: the last target always answers

    @staticmethod
    async def _wait(delay: float, resp: httpx.Response | None) -> None:
        """The back-off, counted from the failed answer's headers; its body is dropped meanwhile."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if resp is not None:
            try:
                await asyncio.wait_for(discard(resp), timeout=max(delay, 0.001))
            except TimeoutError:
                pass  # discard closed the response when it was cancelled
        left = delay - (loop.time() - start)
        if left > 0:
            await asyncio.sleep(left)

    @staticmethod
    def _extra_headers(job: Job, index: int, retries: int) -> list[tuple[bytes, bytes]]:
        extra = []
        if job.fallbacks:
            extra.append((hh.R_FALLBACK_INDEX.encode(), str(index).encode()))
        if job.policy is not None:
            extra.append((hh.R_RETRIES.encode(), str(retries).encode()))
        return extra

    @staticmethod
    async def _answer_failure(job: Job, out: RelayOut, exc: Exception | None, n: int,
                              extra: list[tuple[bytes, bytes]]) -> None:
        """No attempt got an answer: a JSON 504 (time-out) or 502 naming the cause (errorpages.py)."""
        status = 504 if isinstance(exc, httpx.TimeoutException) else 502
        where = origin_of(job.state.target_url or job.url)
        cause = f"{describe_failure(exc)}; target {where}, {n} attempt{'s' if n != 1 else ''}"
        job.state.error = f"upstream failed: {cause} (client got a {status})"
        job.state.no_answer = True
        await out.json(status, errorpages.error_body(status, cause), extra)
