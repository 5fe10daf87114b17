// A real Inngest Connect worker (the Node SDK, `inngest` 4), started by heartmon's
// systems experiment and its tests.
//
//   node inngest_worker.mjs NODE_PREFIX APP INSTANCE ISOLATE PROBE_FILE
//
// NODE_PREFIX is where `npm install --prefix` put the SDK (ESM does not read
// NODE_PATH, so the SDK is loaded from there by path). ISOLATE is "true" or "false":
// the SDK's `isolateExecution`, i.e. whether its WebSocket and heartbeats run on a
// worker thread or on the main thread. When PROBE_FILE appears, the main thread reads
// "PROBE SECONDS" from it and deletes it; for busy-python (the only probe JavaScript
// has an equivalent of) it spins, a busy loop with no awaits, that long: the CPU-heavy
// code that starves a same-thread heartbeat. Where heartmon is, and how to
// authenticate, come from the environment: INNGEST_BASE_URL, INNGEST_DEV or
// INNGEST_SIGNING_KEY, and on Node 20 NODE_OPTIONS=--experimental-websocket.
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [prefix, app, instanceId, isolate, probeFile] = process.argv.slice(2);
const require = createRequire(join(prefix, "package.json"));
const { Inngest } = require("inngest");
const { connect } = require("inngest/connect");

const inngest = new Inngest({ id: app });
const noop = inngest.createFunction(
  { id: "noop", triggers: [{ event: "heartmon/noop" }] },
  async () => null,
);

setInterval(() => {
  if (!existsSync(probeFile)) return;
  const [probe, text] = readFileSync(probeFile, "utf8").trim().split(/\s+/);
  rmSync(probeFile);
  if (probe !== "busy-python") {
    console.log(`no JavaScript equivalent of ${probe}`);
    return;
  }
  const seconds = Number(text);
  console.log(`spinning the main thread for ${seconds} s`);
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    // CPU-bound work that never yields to the event loop
  }
  console.log("spin done");
}, 50);

const connection = await connect({
  apps: [{ client: inngest, functions: [noop] }],
  instanceId,
  isolateExecution: isolate === "true",
});
console.log(`connected: ${connection.connectionId}`);
let state = "";
setInterval(() => {
  // Every change of the connection's state, for the tests: a RECONNECTING means the
  // gateway failed the SDK (an unanswered heartbeat, a dropped socket).
  if (connection.state !== state) console.log(`state ${(state = connection.state)}`);
}, 20);
await connection.closed;
console.log("closed");
process.exit(0);
