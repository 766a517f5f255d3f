// A webhook endpoint that checks every delivery with Huddle01's own server SDK.
//
//   LIVESESSIONS_API_KEY=<key> node webhook_receiver.mjs <port> <log file>
//
// Listens on 127.0.0.1:<port>. Every request is handed, body as text and the
// `huddle01-signature` header as it came, to the SDK's WebhookReceiver
// (constructed with `{ apiKey }`, as Huddle01's docs show): 200 when it
// verifies, 401 when it throws. One JSON line per request is appended to the
// log file *before* the answer is sent, so a line exists for every delivery
// the service may count as accepted (killed in between, the service sends it
// again: at-least-once). Run by tests/e2e/test_webhook_sdk.py, which kills and
// restarts it to take the endpoint down and bring it back.

import { appendFileSync } from "node:fs";
import http from "node:http";
import { WebhookReceiver } from "@huddle01/server-sdk/webhooks";

const [port, logPath] = process.argv.slice(2);
const apiKey = process.env.LIVESESSIONS_API_KEY;
if (!port || !logPath || !apiKey) {
  console.error("usage: LIVESESSIONS_API_KEY=<key> node webhook_receiver.mjs <port> <log file>");
  process.exit(2);
}

const receiver = new WebhookReceiver({ apiKey });

function parsed(body) {
  try {
    return JSON.parse(body);
  } catch {
    return null;
  }
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", async () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const header = req.headers["huddle01-signature"];
    let verified = false;
    let error = null;
    let data = null;
    if (req.method === "POST") {
      try {
        data = await receiver.receive(body, header);
        verified = true;
      } catch (thrown) {
        error = String(thrown?.message ?? thrown);
      }
    } else {
      error = `method ${req.method}`;
    }
    data ??= parsed(body);
    const sequence = req.headers["x-livesessions-sequence"];
    const line = {
      verified,
      error,
      id: data?.id ?? null,
      event: data?.event ?? null,
      payload: data?.payload ?? null,
      sequence: sequence === undefined ? null : Number(sequence),
      eventIdHeader: req.headers["x-livesessions-event-id"] ?? null,
      signature: header ?? null,
      contentType: req.headers["content-type"] ?? null,
      method: req.method,
      path: req.url,
      body,
    };
    appendFileSync(logPath, JSON.stringify(line) + "\n");
    res.writeHead(verified ? 200 : 401, { "content-type": "text/plain" });
    res.end(verified ? "ok" : `not verified: ${error}`);
  });
});

server.listen(Number(port), "127.0.0.1", () => {
  console.log(JSON.stringify({ listening: Number(port) }));
});
