"""The OpenTelemetry project's own GenAI instrumentation for openai (`opentelemetry-instrumentation-openai-v2`)
with the official OTLP/HTTP exporters, configured the standard way: OTEL_EXPORTER_OTLP_ENDPOINT and
OTEL_EXPORTER_OTLP_HEADERS (set by the caller). Spans go to /v1/traces; the message content, which
this instrumentation emits as log events, to /v1/logs.

    python openai_v2_client.py <fake upstream url> <marker>

Prints one JSON line with the trace id of the `agent` span around the calls.
"""

import json
import os
import sys

os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")

import openai  # noqa: E402
from opentelemetry import _logs, trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: E402
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

upstream, marker = sys.argv[1:3]

tracer_provider = TracerProvider()
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(compression=Compression.Gzip)))
trace.set_tracer_provider(tracer_provider)
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
_logs.set_logger_provider(logger_provider)
try:  # instrumentation versions that emit through the (older) Events API
    from opentelemetry import _events
    from opentelemetry.sdk._events import EventLoggerProvider

    _events.set_event_logger_provider(EventLoggerProvider(logger_provider))
except ImportError:
    pass
OpenAIInstrumentor().instrument()

client = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-otlp-openai-key", max_retries=0)
out = {}
with trace.get_tracer("otlp-e2e").start_as_current_span("agent") as span:
    out["trace_id"] = format(span.get_span_context().trace_id, "032x")
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": f"{marker} json"}],
    )
    out["json"] = r.choices[0].message.content
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{marker} stream"}], stream=True,
        stream_options={"include_usage": True},
    )
    out["stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
tracer_provider.force_flush()
logger_provider.force_flush()
print(json.dumps(out))
