import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertNotMatch,
} from "@std/assert";
import { readExact, writeAll } from "../../mod.ts";
import { countLines, fdCount, figures, startEcho } from "./_stress.ts";

const LIMIT = 64;

/** Echoes one line, or `false` if nothing comes back within `ms`. */
async function echoWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const data = new TextEncoder().encode("ping\n");
  await writeAll(conn, data);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const reply = readExact(conn, data.byteLength).then(
    (back) => new TextDecoder().decode(back) === "ping\n",
    () => false,
  );
  try {
    return await Promise.race([reply, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("echo.ts under `ulimit -n 64`: out of descriptors, accept backs off, logs it, and serves again once descriptors free", async () => {
  await using server = await startEcho([], { ulimit: LIMIT });
  const baseline = fdCount(server.pid);
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < LIMIT; i++) {
    conns.push(
      await Deno.connect({ hostname: "127.0.0.1", port: server.port }),
    );
  }
  await server.proc.waitForStderr(/accept failed: .*Too many open files/);
  const fullAt = performance.now();
  const full = fdCount(server.pid);
  // Those accepted are served; the rest wait in the listen queue.
  const served = (await Promise.all(conns.map((c) => echoWithin(c, 3000))))
    .filter(Boolean).length;
  const stillAlive = server.proc.stderrLines.length > 0 &&
    !/Uncaught/.test(server.proc.stderr);
  // Let it back off for a while: the log must not flood.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const failures = countLines(server.proc, /accept failed/);
  const fullSeconds = (performance.now() - fullAt) / 1000;
  for (const conn of conns) conn.close();
  const freed = performance.now();
  let recovered = false;
  let attempts = 0;
  while (!recovered && performance.now() - freed < 10_000) {
    attempts++;
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    recovered = await echoWithin(conn, 2000);
  }
  const recoveredMs = performance.now() - freed;
  figures("fd-exhaustion", {
    ulimit_n: LIMIT,
    fds_baseline: baseline,
    fds_full: full,
    clients: LIMIT,
    served_while_full: served,
    accept_failure_lines: failures,
    full_for_s: fullSeconds.toFixed(1),
    recovered_after_ms: recoveredMs.toFixed(0),
    attempts,
  });
  assert(stillAlive);
  // Full indeed (the listing is not atomic: it may count one twice).
  assertGreaterOrEqual(full, LIMIT - 2, `only ${full} descriptors open`);
  assert(served > 0 && served < LIMIT, `served ${served}`);
  // Backoff: 5 ms doubling to 1 s is 8 lines in the first 1.3 s, then one a
  // second, not one per retry in a hot loop.
  assert(
    failures <= 10 + fullSeconds,
    `${failures} accept failure lines in ${fullSeconds.toFixed(1)} s`,
  );
  assert(recovered, "not serving after descriptors freed");
  assertLess(recoveredMs, 5000, `recovered after ${recoveredMs} ms`);
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr.slice(-2000));
  assertNotMatch(stderr, /Uncaught|panicked/);
});
