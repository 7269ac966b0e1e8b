"""Traceloop's OpenLLMetry SDK (`traceloop-sdk`) as its users run it: an agent as a workflow of two
tasks around three openai calls, traces exported over OTLP/HTTP to `<api url>/v1/traces`.

    python traceloop_client.py <api url> <api key> <fake upstream url> <marker>

Prints one JSON line when done.
"""

import json
import os
import sys

os.environ.setdefault("TRACELOOP_TELEMETRY", "false")

import openai  # noqa: E402
from opentelemetry import trace  # noqa: E402
from traceloop.sdk import Traceloop  # noqa: E402
from traceloop.sdk.decorators import task, workflow  # noqa: E402

api_url, api_key, upstream, marker = sys.argv[1:5]
Traceloop.init(app_name="otlp-e2e-agent", api_endpoint=api_url, headers={"Authorization": f"Bearer {api_key}"})
Traceloop.set_association_properties({"run": marker})

client = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-otlp-openai-key", max_retries=0)


def ask(text: str) -> str:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"{marker} {text}"}])
    return r.choices[0].message.content


@task(name="plan")
def plan() -> str:
    return ask("make a plan")


@task(name="act")
def act() -> str:
    ask("step one")
    return ask("step two")


@workflow(name="research")
def research() -> str:
    plan()
    return act()


research()
trace.get_tracer_provider().force_flush()
print(json.dumps({"ok": True}))
