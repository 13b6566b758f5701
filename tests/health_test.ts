/**
 * lib/health.ts against real sockets in this process: a target that
 * answers the wrong thing, one that comes back, and a UDP target.
 */

import { assert, assertEquals } from "@std/assert";
import { writeAll } from "../mod.ts";
import {
  datagramProbe,
  startHealthChecks,
  streamProbe,
} from "../lib/health.ts";
import { type PoolTarget, TargetPool } from "../lib/targets.ts";
import { eventually } from "./_helpers.ts";

/** Waits (polling the pool, no fixed sleep) until `done()` holds. */
function until(done: () => boolean): Promise<number> {
  return eventually(done, "the pool's state");
}

const dialTcp = (target: PoolTarget) =>
  Deno.connect(target.endpoint as Deno.ConnectOptions);

Deno.test("a check whose answer lacks --check-expect's text marks the target down, saying what came", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      await writeAll(conn, new TextEncoder().encode("-ERR busy\r\n"));
      conn.close();
    }
  })();
  const lines: string[] = [];
  const pool = new TargetPool(
    [{
      endpoint: {
        transport: "tcp",
        hostname: "127.0.0.1",
        port: listener.addr.port,
      },
    }],
    { fall: 2, log: (line) => lines.push(line) },
  );
  const checks = startHealthChecks(pool, {
    intervalMs: 20,
    timeoutMs: 1000,
    probe: streamProbe(dialTcp, { send: "PING", expect: "+PONG" }),
  });
  await until(() => !pool.targets[0].up);
  checks.stop();
  listener.close();
  await serving.catch(() => {});
  assertEquals(lines, [
    `target 127.0.0.1:${listener.addr.port} down: expected '+PONG', got '-ERR busy' (2 checks), 0 of 1 up`,
  ]);
});

Deno.test("a down target that answers again is up after --rise checks", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) conn.close();
  })();
  const lines: string[] = [];
  const pool = new TargetPool(
    [{
      endpoint: {
        transport: "tcp",
        hostname: "127.0.0.1",
        port: listener.addr.port,
      },
    }],
    { rise: 3, log: (line) => lines.push(line) },
  );
  pool.targets[0].up = false;
  const checks = startHealthChecks(pool, {
    intervalMs: 20,
    timeoutMs: 1000,
    probe: streamProbe(dialTcp),
  });
  await until(() => pool.targets[0].up);
  checks.stop();
  listener.close();
  await serving.catch(() => {});
  assertEquals(lines, [
    `target 127.0.0.1:${listener.addr.port} up (3 checks), 1 of 1 up`,
  ]);
});

Deno.test("a UDP check sends its line and takes an answer with the expected text", async () => {
  const target = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const answering = (async () => {
    try {
      while (true) {
        const [data, from] = await target.receive();
        assertEquals(new TextDecoder().decode(data), "PING\r\n");
        await target.send(new TextEncoder().encode("PONG\n"), from);
      }
    } catch {
      // Closed.
    }
  })();
  const pool = new TargetPool(
    [{
      endpoint: {
        transport: "udp",
        hostname: "127.0.0.1",
        port: (target.addr as Deno.NetAddr).port,
      },
    }],
    { rise: 1, log: () => {} },
  );
  pool.targets[0].up = false;
  const checks = startHealthChecks(pool, {
    intervalMs: 20,
    timeoutMs: 1000,
    probe: datagramProbe({ send: "PING", expect: "PONG" }),
  });
  await until(() => pool.targets[0].up);
  checks.stop();
  target.close();
  await answering;
  assert(pool.targets[0].up);
});
