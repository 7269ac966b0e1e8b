// Helicone's Node manual logger (@helicone/helpers' HeliconeManualLogger) logging a call it did not make
// through the proxy: its real payload to <loggingEndpoint>/oai/v1/log.
//
//   NODE_PATH=<dir>/node_modules node manual_logger_node.cjs <api url> <api key> <marker>
//
// Prints one JSON line: what the logged operation returned.
const { HeliconeManualLogger } = require("@helicone/helpers");

const [apiUrl, apiKey, marker] = process.argv.slice(2);

async function main() {
  const logger = new HeliconeManualLogger({ apiKey, loggingEndpoint: apiUrl });
  const request = { model: "gpt-4o-mini", messages: [{ role: "user", content: `${marker} node manual` }] };
  const result = await logger.logRequest(
    request,
    async (recorder) => {
      const response = {
        id: "chatcmpl-node", object: "chat.completion", model: "gpt-4o-mini",
        choices: [{ index: 0, message: { role: "assistant", content: "logged from node" }, finish_reason: "stop" }],
        usage: { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 },
      };
      recorder.appendResults(response);
      return response;
    },
    { "Helicone-Property-Run": marker, "Helicone-User-Id": "node-user" },
    "openai",
  );
  console.log(JSON.stringify({ model: result.model }));
}

main().catch((e) => { console.error(e); process.exit(1); });
