"""What a request body and URL say: model asked for, stream requested, end user."""

from __future__ import annotations

import functools
import logging
from typing import Any

from .. import providers
from ._base import loads
from .types import RequestInfo

logger = logging.getLogger(__name__)

_GEMINI_APIS = (providers.API_GEMINI, providers.API_GEMINI_EMBEDDINGS)


def _load(body: Any) -> Any:
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body)
        if not body.strip():
            return None
        return loads(body)
    if isinstance(body, str):
        if not body.strip():
            return None
        return loads(body)
    return None


@functools.lru_cache(maxsize=1024)
def _path_facts(path: str) -> tuple[str | None, bool, str | None]:
    """(Gemini model, Gemini stream, Azure deployment) a path names. Calls go to a few paths over
    and over, so each path's answer is kept."""
    return (providers.gemini_model_from_path(path), providers.gemini_stream_from_path(path),
            providers.azure_deployment_from_path(path))


def parse_request(api: str, path: str, body: bytes | None) -> RequestInfo:
    """Model, stream flag and user from a request. Never raises (garbage -> Nones)."""
    info = RequestInfo(api=api)
    try:
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        if not isinstance(path, str):
            path = ""
        try:
            doc = _load(body)
        except (ValueError, RecursionError):
            doc = None
        info.json = doc
        if isinstance(doc, dict):
            m = doc.get("model")
            if isinstance(m, str) and m.strip():
                info.model = m.strip()
            info.stream = doc.get("stream") is True
            user = doc.get("user")
            if not (isinstance(user, str) and user):
                user = None
                meta = doc.get("metadata")
                if isinstance(meta, dict):
                    uid = meta.get("user_id")
                    if isinstance(uid, str) and uid:
                        user = uid
            if user is None:
                sid = doc.get("safety_identifier")  # Responses/Chat successor of "user"
                if isinstance(sid, str) and sid:
                    user = sid
            info.user = user
        if path:
            gm, gstream, dep = _path_facts(path)
            if gm:
                info.model = gm  # the URL names the model for Gemini, the body does not
            if gstream:
                info.stream = True
            if info.model is None and dep:
                info.model = dep
    except Exception:  # noqa: BLE001 - a body we cannot read leaves the fields it did not reach empty
        logger.debug("request body not understood (api %s, path %s)", api, path, exc_info=True)
    return info
