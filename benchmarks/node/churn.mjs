// WebSocket join/leave churn client for benchmarks/ws_churn.py, built on the
// `ws` package (pinned in package.json). It acts like a browser peer: it
// offers permessage-deflate unless told not to (ws's default
// `perMessageDeflate: true`).
//
// Reads one JSON object on stdin:
//   {"queues": [[url, ...], ...]}           one list of URLs per worker (fresh
//                                           peer tokens: each URL is used once)
//   or {"url": "...", "workers": W, "count": N}
//                                           W workers sharing N cycles on one URL
//   "duration": seconds                     stop starting cycles after this (default: none)
//   "perMessageDeflate": true|false         offer permessage-deflate (default true)
//   "stepTimeout": seconds                  per step: connect -> first message,
//                                           leave -> close (default 10)
//   "leave": text                           the message sent after the first one
//                                           (default {"type":"leave"})
// Each cycle: connect, wait for the first message (it must be
// {"type":"joined",...}), send the leave message, wait for the server's close.
// Prints one JSON object with the counts and latency percentiles on stdout.

import { performance } from "node:perf_hooks";
import { readFileSync } from "node:fs";
import WebSocket from "ws";

const input = JSON.parse(readFileSync(0, "utf8"));
const perMessageDeflate = input.perMessageDeflate ?? true;
const stepMs = (input.stepTimeout ?? 10) * 1000;
const leaveText = input.leave ?? '{"type":"leave"}';

let next; // () => url | undefined, per worker
let workers;
if (input.queues) {
  const queues = input.queues.map((q) => ({ urls: q, at: 0 }));
  workers = queues.length;
  next = (w) => {
    const q = queues[w];
    return q.at < q.urls.length ? q.urls[q.at++] : undefined;
  };
} else {
  let left = input.count ?? Number.MAX_SAFE_INTEGER;
  workers = input.workers ?? 64;
  next = () => (left-- > 0 ? input.url : undefined);
}

const joinMs = [];
const leaveMs = [];
const cycleMs = [];
const closeCodes = {};
const failures = {};
const extensions = {};
let otherMessages = 0;
let firstMessage = null;

const bump = (counter, key) => {
  counter[key] = (counter[key] ?? 0) + 1;
};

function cycle(url) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let t1 = null;
    let done = false;
    let timer = null;
    const ws = new WebSocket(url, { perMessageDeflate, handshakeTimeout: stepMs });
    const finish = (failure) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (failure !== undefined) {
        bump(failures, failure);
        if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
      }
      resolve();
    };
    const arm = (what) => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(`timeout (${what})`), stepMs);
    };
    arm("join");
    ws.on("upgrade", (res) => {
      bump(extensions, res.headers["sec-websocket-extensions"] ?? "none");
    });
    ws.on("unexpected-response", (req, res) => {
      finish(`HTTP ${res.statusCode}`);
      req.destroy();
    });
    ws.on("message", (data, isBinary) => {
      if (t1 !== null) {
        otherMessages++;
        return;
      }
      const text = isBinary ? "" : data.toString();
      let type;
      try {
        type = JSON.parse(text).type;
      } catch {
        type = "(not JSON)";
      }
      if (type !== "joined") {
        finish(`first message ${JSON.stringify(type)}`);
        return;
      }
      t1 = performance.now();
      if (firstMessage === null) firstMessage = text;
      arm("leave");
      ws.send(leaveText);
    });
    ws.on("error", (err) => {
      finish(`${err.code ?? "error"}: ${String(err.message).slice(0, 80)}`);
    });
    ws.on("close", (code, reason) => {
      if (done) return;
      if (t1 === null) {
        finish(`closed before joined: ${code} ${reason.toString()}`.trim());
        return;
      }
      const t2 = performance.now();
      bump(closeCodes, `${code} ${reason.toString()}`.trim());
      joinMs.push(t1 - t0);
      leaveMs.push(t2 - t1);
      cycleMs.push(t2 - t0);
      finish();
    });
  });
}

function summary(values) {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  // Nearest-rank percentile, as benchmarks/_common.percentile.
  const pct = (q) => (n ? sorted[Math.max(1, Math.min(n, Math.ceil((q / 100) * n))) - 1] : null);
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: n,
    p50_ms: pct(50),
    p90_ms: pct(90),
    p99_ms: pct(99),
    max_ms: n ? sorted[n - 1] : null,
    mean_ms: n ? sum / n : null,
  };
}

const cpu0 = process.cpuUsage();
const start = performance.now();
const deadline = input.duration ? start + input.duration * 1000 : Infinity;

async function worker(w) {
  for (;;) {
    if (performance.now() >= deadline) return;
    const url = next(w);
    if (url === undefined) return;
    await cycle(url);
  }
}

await Promise.all(Array.from({ length: workers }, (_, w) => worker(w)));
const elapsed = (performance.now() - start) / 1000;
const cpu = process.cpuUsage(cpu0);

process.stdout.write(
  JSON.stringify({
    client: `node ${process.version}, ws ${JSON.parse(readFileSync(new URL("./node_modules/ws/package.json", import.meta.url))).version}`,
    workers,
    per_message_deflate_offered: perMessageDeflate,
    elapsed_s: elapsed,
    cycles: joinMs.length,
    cycles_per_s: joinMs.length / elapsed,
    join_latency: summary(joinMs),
    leave_latency: summary(leaveMs),
    cycle_latency: summary(cycleMs),
    close_codes: closeCodes,
    failures,
    negotiated_extensions: extensions,
    other_messages: otherMessages,
    first_message: firstMessage,
    client_cpu_s: (cpu.user + cpu.system) / 1e6,
  }) + "\n",
);
