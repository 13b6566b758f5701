// TLS load generator for `deno task bench`, run by Node (OpenSSL), pinned to
// CPU 1 like bench/loadgen.c, whose scenarios it repeats over TLS. Prints
// one JSON object on stdout.
//
//   node tls_loadgen.mjs stream   PORT CONNS SECONDS CA [SERVER_PID]
//   node tls_loadgen.mjs pingpong PORT CONNS SECONDS CA [SERVER_PID]
//
// stream: each connection keeps up to 256 KiB in flight and checks every
// echoed byte; pingpong: 64-byte request, wait for its echo, again.
import { readdirSync, readFileSync } from "node:fs";
import { connect } from "node:tls";

const [mode, port, conns, seconds, caFile, serverPid] = process.argv.slice(2);
const PERIOD = 251; // prime: a shifted or lost byte is caught
const CHUNK = 64 * 1024;
const WINDOW = 256 * 1024;
const MSG = 64;
const ca = readFileSync(caFile);
const pattern = Buffer.alloc(PERIOD + CHUNK);
for (let i = 0; i < pattern.length; i++) {
  pattern[i] = ((i % PERIOD) * 7 + 3) % 256;
}

function fail(message) {
  process.stderr.write(`tls_loadgen: ${message}\n`);
  process.exit(1);
}

/** CPU seconds of every thread of the server so far (schedstat). */
function serverCpu() {
  if (!serverPid) return 0;
  let total = 0;
  for (const task of readdirSync(`/proc/${serverPid}/task`)) {
    try {
      const text = readFileSync(`/proc/${serverPid}/task/${task}/schedstat`);
      total += Number(String(text).split(" ")[0]) / 1e9;
    } catch {
      // The thread ended.
    }
  }
  return total;
}

function open() {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: "127.0.0.1",
      port: Number(port),
      ca,
      servername: "localhost",
    }, () => resolve(socket));
    socket.setNoDelay(true);
    socket.once("error", reject);
  });
}

let running = true;
const sockets = await Promise.all(
  Array.from({ length: Number(conns) }, open),
).catch((error) => fail(`connect: ${error.message}`));
for (const socket of sockets) {
  socket.on("error", (error) => running && fail(error.message));
  socket.on("end", () => running && fail("the server closed a connection"));
}

const cpuBefore = serverCpu();
const start = performance.now();
let total = 0;
const latencies = [];

if (mode === "stream") {
  sockets.forEach((socket, i) => {
    let sent = i * 17; // per-connection phase
    let received = sent;
    const fill = () => {
      while (running && sent - received < WINDOW) {
        const size = Math.min(CHUNK, WINDOW - (sent - received));
        const at = sent % PERIOD;
        sent += size;
        if (!socket.write(pattern.subarray(at, at + size))) break;
      }
    };
    socket.on("drain", fill);
    socket.on("data", (chunk) => {
      for (let at = 0; at < chunk.length;) {
        const size = Math.min(CHUNK, chunk.length - at);
        const from = (received + at) % PERIOD;
        if (pattern.compare(chunk, at, at + size, from, from + size) !== 0) {
          fail(`stream: echoed bytes differ near offset ${received + at}`);
        }
        at += size;
      }
      received += chunk.length;
      total += chunk.length;
      fill();
    });
    fill();
  });
} else if (mode === "pingpong") {
  const request = Buffer.alloc(MSG);
  for (let i = 0; i < MSG; i++) request[i] = 97 + i % 26;
  for (const socket of sockets) {
    let got = 0;
    let started = performance.now();
    socket.on("data", (chunk) => {
      if (!request.subarray(got, got + chunk.length).equals(chunk)) {
        fail("pingpong: wrong reply");
      }
      got += chunk.length;
      if (got < MSG) return;
      const now = performance.now();
      latencies.push(now - started);
      total++;
      got = 0;
      started = now;
      if (running) socket.write(request);
    });
    socket.write(request);
  }
} else {
  fail(`unknown scenario ${mode}`);
}

await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
running = false;
const elapsed = (performance.now() - start) / 1000;
const cpuMs = (serverCpu() - cpuBefore) * 1000;
for (const socket of sockets) socket.destroy();
const figure = { scenario: mode, connections: Number(conns), seconds: elapsed };
if (mode === "stream") {
  Object.assign(figure, {
    bytes: total,
    mb_per_s: Math.round(total / elapsed / 1e5) / 10,
    verified: true,
  });
} else {
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.floor(latencies.length * q)] ?? 0;
  Object.assign(figure, {
    round_trips: total,
    per_s: Math.round(total / elapsed),
    p50_us: Math.round(at(0.5) * 1e4) / 10,
    p99_us: Math.round(at(0.99) * 1e4) / 10,
  });
}
if (serverPid) figure.server_cpu_ms = Math.round(cpuMs * 10) / 10;
console.log(JSON.stringify(figure));
process.exit(0);
