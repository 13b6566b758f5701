import { assert, assertEquals, assertNotMatch } from "@std/assert";
import { readAll } from "../_helpers.ts";
import {
  compileRudeClient,
  countLines,
  fdCount,
  figures,
  memoryKiB,
  mib,
  missingGcc,
  startServerScript,
} from "./_stress.ts";

/** The TCP servers and how to tell one is still serving. */
const SERVERS: { script: string; probe: "reads" | "writes" }[] = [
  { script: "servers/accept.ts", probe: "reads" },
  { script: "servers/chargen.ts", probe: "reads" },
  { script: "servers/daytime.ts", probe: "reads" },
  { script: "servers/discard.ts", probe: "writes" },
  { script: "servers/hello.ts", probe: "reads" },
  { script: "servers/qotd.ts", probe: "reads" },
  { script: "servers/time.ts", probe: "reads" },
];

async function serves(
  port: number,
  probe: "reads" | "writes",
): Promise<boolean> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  if (probe === "writes") {
    await conn.write(new Uint8Array(1000));
    await conn.closeWrite();
    return (await readAll(conn)).byteLength === 0;
  }
  return ((await conn.read(new Uint8Array(4096))) ?? 0) > 0;
}

async function settle(predicate: () => boolean, ms: number): Promise<number> {
  const started = performance.now();
  while (!predicate() && performance.now() - started < ms) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return performance.now() - started;
}

for (const { script, probe } of SERVERS) {
  Deno.test({
    name:
      `${script} survives resets, vanishing and silent clients, and a client that never reads: no crash, no leak, bounded memory`,
    ignore: missingGcc(),
    async fn() {
      const rude = compileRudeClient();
      await using server = await startServerScript(script, [
        "--idle-timeout",
        "1",
      ], { permissions: ["--allow-net=127.0.0.1:0"] });
      assert(await serves(server.port, probe), "not serving at start");
      await settle(() => countLines(server.proc, /^closed /) >= 1, 5000);
      const baseline = fdCount(server.pid);
      const before = memoryKiB(server.pid);
      // A client that never reads, for 3 s (chargen writes without end).
      const pusher = new Deno.Command(rude, {
        args: ["push", "127.0.0.1", String(server.port), "1073741824", "3"],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      const faults = await Promise.all([
        new Deno.Command(rude, {
          args: ["rst", "127.0.0.1", String(server.port), "100", "4096"],
          stdout: "null",
        }).output().then((o) => o.success),
        Promise.all(Array.from({ length: 100 }, async () => {
          const conn = await Deno.connect({
            hostname: "127.0.0.1",
            port: server.port,
          });
          conn.close();
        })).then(() => true),
        Promise.all(Array.from({ length: 100 }, async () => {
          using conn = await Deno.connect({
            hostname: "127.0.0.1",
            port: server.port,
          });
          await conn.closeWrite();
          // Read a little (chargen never ends: reading all would take all
          // memory), then vanish.
          try {
            const buffer = new Uint8Array(16 * 1024);
            for (let total = 0, n; total < 64 * 1024;) {
              if ((n = await conn.read(buffer)) === null) break;
              total += n;
            }
          } catch {
            // Reset: fine for this test.
          }
        })).then(() => true),
      ]);
      // Silent clients: closed by --idle-timeout 1.
      const silent = await Promise.all(
        Array.from(
          { length: 50 },
          () => Deno.connect({ hostname: "127.0.0.1", port: server.port }),
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const during = memoryKiB(server.pid);
      const stillServing = await serves(server.port, probe);
      await pusher.stdin.close();
      await pusher.output();
      for (const conn of silent) conn.close();
      const settledMs = await settle(
        () => fdCount(server.pid) <= baseline,
        10_000,
      );
      const after = fdCount(server.pid);
      figures(`every-server ${script}`, {
        rss_before_MiB: mib(before.rss),
        rss_with_non_reader_MiB: mib(during.rss),
        fds_baseline: baseline,
        fds_after: after,
        settled_ms: settledMs.toFixed(0),
        accepted: countLines(server.proc, /^accepted /),
        closed: countLines(server.proc, /^closed /),
      });
      assertEquals(faults, [true, true, true]);
      assert(stillServing, "not serving after the faults");
      // A server that writes must stop writing to a client that does not
      // read (backpressure): < 32 MiB. Discard reads the pusher's bytes as
      // fast as they come, and only the garbage of that shows: < 64 MiB.
      const limitMiB = probe === "writes" ? 64 : 32;
      assert(
        during.rss - before.rss < limitMiB * 1024,
        `grew ${mib(during.rss - before.rss)} MiB`,
      );
      assertEquals(after, baseline, "descriptors leaked");
      server.proc.kill("SIGTERM");
      const { code, stderr } = await server.proc.finished();
      assertEquals(code, 0, stderr.slice(-2000));
      assertNotMatch(stderr, /Uncaught|panicked/);
    },
  });
}
