import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
  assertNotMatch,
} from "@std/assert";
import { readExact, serve, writeAll } from "../../mod.ts";
import { pseudoRandomBytes } from "../_helpers.ts";
import { countLines, figures, sameBytes, startEcho } from "./_stress.ts";

const CLIENTS = 50;
const BYTES = 4 * 1024 * 1024;
const CHUNK = 64 * 1024;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("echo.ts: SIGTERM during 50 transfers lets all finish byte-exact within the grace period, refuses new clients, exits 0", async () => {
  await using server = await startEcho(["--grace", "60"]);
  const data = pseudoRandomBytes(BYTES + CLIENTS * 101, 6);
  let midway = 0;
  let signalledAt = 0;
  const finishedAt: number[] = [];
  const results = Array.from({ length: CLIENTS }, async (_, i) => {
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const mine = data.subarray(i * 101, i * 101 + BYTES);
    const reading = readExact(conn, BYTES);
    // Paced, so every transfer is still going when SIGTERM comes.
    for (let offset = 0; offset < BYTES; offset += CHUNK) {
      await writeAll(conn, mine.subarray(offset, offset + CHUNK));
      if (offset === 4 * CHUNK) midway++;
      await sleep(20);
    }
    await conn.closeWrite();
    const back = await reading;
    const eof = await conn.read(new Uint8Array(1));
    finishedAt.push(performance.now());
    return sameBytes(back, mine) && eof === null;
  });
  while (midway < CLIENTS) await sleep(10);
  signalledAt = performance.now();
  server.proc.kill("SIGTERM");
  await server.proc.waitForStderr(/shutting down: waiting up to 60 s for/);
  // The listener is closed: a new client is refused.
  const refused = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  }).then(
    (c) => (c.close(), false),
    (e) => e instanceof Deno.errors.ConnectionRefused,
  );
  const exact = (await Promise.all(results)).filter(Boolean).length;
  const { code, stderr } = await server.proc.finished();
  const exitedAfter = (performance.now() - signalledAt) / 1000;
  const lastFinished = (Math.max(...finishedAt) - signalledAt) / 1000;
  figures("shutdown-graceful", {
    transfers: CLIENTS,
    bytes_each: BYTES,
    exact,
    new_client_refused: String(refused),
    last_transfer_done_s: lastFinished.toFixed(2),
    exited_after_s: exitedAfter.toFixed(2),
    grace_s: 60,
  });
  assertEquals(exact, CLIENTS);
  assert(refused, "a new client was accepted after SIGTERM");
  assertEquals(code, 0, stderr.slice(-2000));
  assertMatch(
    stderr,
    /shutting down: waiting up to 60 s for 50 connection\(s\)/,
  );
  assertNotMatch(stderr, /grace period over/);
  assertLess(exitedAfter, 60);
  assertEquals(
    countLines(
      server.proc,
      /^closed .*\(4194304 bytes in, 4194304 bytes out\)$/,
    ),
    CLIENTS,
  );
});

Deno.test("echo.ts: past the grace period the transfers still open are closed, counted in a log line, and it exits 0", async () => {
  await using server = await startEcho(["--grace", "1"]);
  const conns = await Promise.all(
    Array.from(
      { length: CLIENTS },
      () => Deno.connect({ hostname: "127.0.0.1", port: server.port }),
    ),
  );
  // Each sends a little and then stalls, never half-closing.
  await Promise.all(conns.map(async (conn) => {
    await writeAll(conn, new TextEncoder().encode("partial"));
    await readExact(conn, 7);
  }));
  const signalledAt = performance.now();
  server.proc.kill("SIGTERM");
  const cutAfter = await Promise.all(conns.map(async (conn) => {
    try {
      while ((await conn.read(new Uint8Array(16))) !== null) {
        // Nothing more comes.
      }
    } catch {
      // Reset: cut too.
    }
    return (performance.now() - signalledAt) / 1000;
  }));
  for (const conn of conns) conn.close();
  const { code, stderr } = await server.proc.finished();
  const exitedAfter = (performance.now() - signalledAt) / 1000;
  figures("shutdown-grace-over", {
    transfers: CLIENTS,
    grace_s: 1,
    cut_min_s: Math.min(...cutAfter).toFixed(2),
    cut_max_s: Math.max(...cutAfter).toFixed(2),
    exited_after_s: exitedAfter.toFixed(2),
    code,
  });
  assertEquals(code, 0, stderr.slice(-2000));
  assertMatch(
    stderr,
    /grace period over: closed 50 connection\(s\) still in flight/,
  );
  assertGreaterOrEqual(
    Math.min(...cutAfter),
    0.95,
    "cut before the grace period",
  );
  assertLess(exitedAfter, 1 + 5, `exited after ${exitedAfter} s`);
});

Deno.test("serve(): past the grace period, a handler stuck on something other than its connection does not hold shutdown forever", async () => {
  const lines: string[] = [];
  const server = serve({
    name: "stuck",
    defaultPort: 0,
    // Blocked on something that closing the connection does not wake (a
    // full stdout pipe, say).
    stream: () => new Promise<void>(() => {}),
  }, {
    hostname: "127.0.0.1",
    port: 0,
    gracePeriodMs: 200,
    log: (line) => lines.push(line),
  });
  const { port } = server.addr as Deno.NetAddr;
  const conns = await Promise.all(
    Array.from(
      { length: 3 },
      () => Deno.connect({ hostname: "127.0.0.1", port }),
    ),
  );
  while (lines.filter((l) => l.startsWith("accepted")).length < 3) {
    await sleep(10);
  }
  const started = performance.now();
  await server.shutdown();
  const seconds = (performance.now() - started) / 1000;
  for (const conn of conns) conn.close();
  figures("shutdown-stuck-handler", {
    handlers: 3,
    grace_s: 0.2,
    stopped_after_s: seconds.toFixed(2),
  });
  assertLess(seconds, 5, `shutdown took ${seconds} s`);
  assert(
    lines.includes("grace period over: closed 3 connection(s) still in flight"),
  );
  assert(
    lines.some((l) => /^3 handler\(s\) did not stop/.test(l)),
    lines.join("\n"),
  );
});
