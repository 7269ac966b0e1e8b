"""Helicone's own async logger (the `helicone-async` package) as its users run it, then real openai and
anthropic SDK calls straight to the fake upstream. Run in its own process: OpenTelemetry's global
state (tracer provider, instrumentations) is process-wide.

    python helicone_async_client.py <logger base_url> <api key> <fake upstream url> <marker> [--no-content]

Prints one JSON line: what the SDKs answered.
"""

import json
import os
import sys

os.environ.setdefault("TRACELOOP_TELEMETRY", "false")  # no usage pings from the SDK

import anthropic  # noqa: E402
import openai  # noqa: E402
from helicone_async import HeliconeAsyncLogger  # noqa: E402
from opentelemetry import trace  # noqa: E402

base_url, api_key, upstream, marker = sys.argv[1:5]
content = "--no-content" not in sys.argv

logger = HeliconeAsyncLogger(api_key=api_key, base_url=base_url)
logger.init()
logger.set_properties({"run": marker, "feature": "otlp-e2e", "user_id": f"user-{marker}"})
if not content:
    logger.disable_content_tracing()

oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-otlp-openai-key", max_retries=0)
ant = anthropic.Anthropic(base_url=upstream, api_key="sk-ant-test-otlp-key", max_retries=0)

out = {}
r = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"{marker} json"}])
out["json"] = r.choices[0].message.content
stream = oai.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": f"{marker} stream"}], stream=True,
    stream_options={"include_usage": True},
)
out["stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
m = ant.messages.create(
    model="claude-3-5-sonnet-20241022", max_tokens=64, system="You are terse.",
    messages=[{"role": "user", "content": f"{marker} anthropic"}],
)
out["anthropic"] = m.content[0].text
trace.get_tracer_provider().force_flush()
print(json.dumps(out))
