import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertLessOrEqual,
  assertMatch,
  assertNotMatch,
} from "@std/assert";
import { readExact, writeAll } from "../../mod.ts";
import { countLines, figures, startEcho } from "./_stress.ts";

const IDLE_CLIENTS = 2000;

async function connectMany(
  port: number,
  count: number,
  batch = 200,
  connectedAt: number[] = [],
): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < count; i += batch) {
    const times: number[] = [];
    conns.push(
      ...await Promise.all(
        Array.from(
          { length: Math.min(batch, count - i) },
          async (_, j) => {
            // Before connecting: the server cannot accept (and start the
            // connection's idle time) before this, however late this
            // process sees the connect resolve.
            times[j] = performance.now();
            return await Deno.connect({ hostname: "127.0.0.1", port });
          },
        ),
      ),
    );
    connectedAt.push(...times);
  }
  return conns;
}

/** Resolves when the server ends the connection (EOF or reset). */
async function whenClosed(conn: Deno.Conn): Promise<number> {
  const buffer = new Uint8Array(16);
  try {
    while ((await conn.read(buffer)) !== null) {
      // An echo server sends nothing unasked.
    }
  } catch {
    // Reset: closed too.
  }
  return performance.now();
}

async function echoOnce(conn: Deno.Conn, text: string): Promise<boolean> {
  const data = new TextEncoder().encode(text);
  await writeAll(conn, data);
  const back = await readExact(conn, data.byteLength);
  return new TextDecoder().decode(back) === text;
}

function stats(values: number[]): { min: number; median: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    min: sorted[0],
    median: sorted[Math.floor(sorted.length / 2)],
    max: sorted[sorted.length - 1],
  };
}

Deno.test("echo.ts --idle-timeout 2: 2,000 silent clients are all closed after 2 s (not before), an active one is kept", async () => {
  const timeoutMs = 2000;
  await using server = await startEcho([
    "--idle-timeout",
    "2",
    "--per-source",
    "0", // 2,000 clients, all from 127.0.0.1
  ]);
  // When each connect began: the server accepts it after that, so its
  // idle time is at most the time since then.
  const opened: number[] = [];
  const conns = await connectMany(server.port, IDLE_CLIENTS, 200, opened);
  const closedAt = conns.map(whenClosed);
  // One client keeps talking every 0.5 s for 4 s: it is never idle for 2 s.
  const active = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  });
  let activeOk = 0;
  for (let i = 0; i < 8; i++) {
    if (await echoOnce(active, `tick ${i}\n`)) activeOk++;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const closedAfter = (await Promise.all(closedAt)).map((at, i) =>
    at - opened[i]
  );
  const activeStillOk = await echoOnce(active, "still here\n");
  active.close();
  for (const conn of conns) conn.close();
  const { min, median, max } = stats(closedAfter);
  figures("idle-timeout", {
    clients: IDLE_CLIENTS,
    timeout_ms: timeoutMs,
    closed_after_min_ms: min.toFixed(0),
    closed_after_median_ms: median.toFixed(0),
    closed_after_max_ms: max.toFixed(0),
    active_echoes: `${activeOk + (activeStillOk ? 1 : 0)}/9`,
    idle_log_lines: countLines(server.proc, /idle timeout: closing/),
  });
  // Not before the timeout (5 ms for timer granularity), and on time: the
  // sweep ticks every 0.25 s (two ticks late at most); 2 s more is for a
  // loaded machine.
  assertGreaterOrEqual(
    min,
    timeoutMs - 5,
    `closed after only ${min.toFixed(0)} ms`,
  );
  assertLessOrEqual(
    max,
    timeoutMs + 500 + 2000,
    `closed after ${max.toFixed(0)} ms`,
  );
  assertEquals(activeOk, 8);
  assert(activeStillOk, "the active client was closed");
  await server.proc.until(
    () => countLines(server.proc, /idle timeout: closing/) >= IDLE_CLIENTS,
    "idle log lines",
  );
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr.slice(-2000));
  assertNotMatch(stderr, /Uncaught|panicked/);
});

Deno.test("echo.ts --max-connections 1000: of 2,000 silent clients the last 1,000 are closed at once, the first keep working, a freed slot serves a new client", async () => {
  const max = 1000;
  await using server = await startEcho([
    "--max-connections",
    String(max),
    "--per-source",
    "0", // 2,000 clients, all from 127.0.0.1
  ]);
  const first = await connectMany(server.port, max);
  await server.proc.until(
    () => countLines(server.proc, /^accepted /) >= max,
    `${max} accepted lines`,
    30_000,
  );
  const started = performance.now();
  const extra = await connectMany(server.port, IDLE_CLIENTS - max);
  const refusedAfter = (await Promise.all(extra.map(whenClosed))).map((at) =>
    at - started
  );
  for (const conn of extra) conn.close();
  const refusedSeconds = (performance.now() - started) / 1000;
  // The first N still work, every one of them.
  const working = (await Promise.all(
    first.map((conn, i) => echoOnce(conn, `client ${i}\n`)),
  )).filter(Boolean).length;
  // Free one slot: a new client is served as soon as the server sees it.
  first.pop()!.close();
  const freed = performance.now();
  let attempts = 0;
  let served = false;
  while (!served && performance.now() - freed < 10_000) {
    attempts++;
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    try {
      served = await echoOnce(conn, "new\n");
    } catch {
      // Closed at once: the slot is not free yet.
    }
    if (served) first.push(conn);
    else {
      conn.close();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  const servedAfterMs = performance.now() - freed;
  for (const conn of first) conn.close();
  figures("max-connections", {
    max,
    clients: IDLE_CLIENTS,
    refused: refusedAfter.length,
    refused_all_closed_s: refusedSeconds.toFixed(2),
    first_still_working: working,
    new_client_served_after_ms: servedAfterMs.toFixed(0),
    attempts,
    refused_log_lines: countLines(
      server.proc,
      /too many connections|more \(counted/,
    ),
  });
  assertEquals(working, max);
  assertLess(refusedSeconds, 10, `refusing took ${refusedSeconds} s`);
  assert(served, "no new client served after a slot freed");
  assertLess(servedAfterMs, 2000, `served after ${servedAfterMs} ms`);
  assertMatch(
    server.proc.stderr,
    /refused 127\.0\.0\.1:\d+: too many connections \(max 1000\)/,
  );
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr.slice(-2000));
  assertMatch(stderr, /refused \d+ more \(counted/);
  assertNotMatch(stderr, /Uncaught|panicked/);
});
