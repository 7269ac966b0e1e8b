"""Helicone's Python manual logger (`helicone-helpers`' HeliconeManualLogger) logging a call it did not
make through the proxy: its real payload to `<logging_endpoint>/oai/v1/log`.

    python manual_logger_client.py <api url> <api key> <marker>

Prints one JSON line: what the logged operation returned.
"""

import json
import sys

from helicone_helpers import HeliconeManualLogger

api_url, api_key, marker = sys.argv[1:4]
logger = HeliconeManualLogger(api_key=api_key, logging_endpoint=api_url)
request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{marker} manual"}]}


def operation(recorder):
    response = {
        "id": "chatcmpl-manual", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "logged by hand"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }
    recorder.append_results(response)
    return response


result = logger.log_request(
    request, operation, additional_headers={"Helicone-Property-Run": marker, "Helicone-User-Id": "manual-user"},
    provider="openai",
)
print(json.dumps({"model": result["model"]}))
