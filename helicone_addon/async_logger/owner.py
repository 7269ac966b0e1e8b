"""What the transport wrapper, the tee and the sinks use of the HeliconeAsyncLogger that made them:
its settings, its counters and the hand-over of a finished call. They depend on this, not on the
logger's module, so the package's imports run one way (logger -> the parts)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .call import Call
from .meta import MetaContext


class Owner(Protocol):
    endpoint: str | None
    db_path: Path | None
    api_key: str | None
    data_dir: str | Path | None
    provider: str | None
    price_overrides: dict | None
    estimate: bool
    timeout: float
    max_logged_bytes: int
    _meta: MetaContext

    def _count(self, name: str, n: int = 1) -> None: ...

    def _finish(self, call: Call, error: BaseException | None = None) -> None: ...
