/**
 * servers/exec.ts under load: 1,000 connections of every kind (normal, reset
 * mid-output, program ignoring SIGTERM), 16 at a time, then the server's
 * children are counted: none left, no zombie, no orphan. Figures are
 * printed (`FIGURES exec-children: ...`).
 */
import { assertEquals, assertLessOrEqual, assertNotMatch } from "@std/assert";
import { readExact } from "../../mod.ts";
import { readAll } from "../_helpers.ts";
import {
  childrenOf,
  eventually,
  exchange,
  type ExecServer,
  processesWith,
  program,
  startExec,
} from "../_exec.ts";
import { figures, memoryKiB, mib } from "./_stress.ts";

const COUNT = 1000;
const AT_ONCE = 16;
const MAX_CONNECTIONS = 64;

/** Samples the server's children every few ms; keeps the peak and zombies. */
class ChildSampler implements Disposable {
  peak = 0;
  zombiesSeen = 0;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(pid: number) {
    this.#timer = setInterval(() => {
      try {
        const children = childrenOf(pid);
        this.peak = Math.max(this.peak, children.length);
        for (const child of children) {
          try {
            const stat = Deno.readTextFileSync(`/proc/${child}/stat`);
            // A zombie between its exit and our reaping it is normal for an
            // instant; it is counted, and none may be left at the end.
            if (/\) Z /.test(stat)) this.zombiesSeen++;
          } catch {
            // Reaped meanwhile.
          }
        }
      } catch {
        // Exited.
      }
    }, 5);
  }

  [Symbol.dispose](): void {
    clearInterval(this.#timer);
  }
}

async function runKind(
  kind: string,
  server: ExecServer,
  once: () => Promise<void>,
  ended: RegExp,
): Promise<void> {
  using sampler = new ChildSampler(server.pid);
  const started = performance.now();
  for (let done = 0; done < COUNT; done += AT_ONCE) {
    await Promise.all(
      Array.from({ length: Math.min(AT_ONCE, COUNT - done) }, once),
    );
  }
  await eventually(
    () => childrenOf(server.pid).length === 0,
    `${kind}: every program reaped`,
    30_000,
  );
  const seconds = (performance.now() - started) / 1000;
  await server.proc.until(
    () =>
      server.proc.stderrLines.filter((l) => l.startsWith("closed ")).length ===
        COUNT,
    `${kind}: ${COUNT} closed lines`,
    30_000,
  );
  const lines = server.proc.stderrLines;
  const count = (pattern: RegExp) =>
    lines.filter((l) => pattern.test(l)).length;
  const children = childrenOf(server.pid).length;
  figures(`exec-${kind}`, {
    connections: COUNT,
    at_once: AT_ONCE,
    seconds: seconds.toFixed(1),
    per_s: (COUNT / seconds).toFixed(0),
    accepted: count(/^accepted /),
    ended_as_expected: count(ended),
    peak_children: sampler.peak,
    zombie_samples_before_reaping: sampler.zombiesSeen,
    children_left: children,
  });
  assertEquals(count(/^accepted /), COUNT, `${kind}: accepted`);
  assertEquals(count(/^refused /), 0, `${kind}: refused`);
  assertEquals(count(ended), COUNT, `${kind}: ${ended}`);
  assertEquals(children, 0);
  assertLessOrEqual(sampler.peak, MAX_CONNECTIONS);
}

Deno.test("exec.ts: after 1,000 connections of every kind (normal, reset mid-output, SIGTERM ignored), no child left, no zombie, no orphan", async (t) => {
  const flags = ["--rate", "0", "--kill-after", "0.2"];
  await t.step(
    "normal: cat echoes a line, the client half-closes",
    async () => {
      await using server = await startExec(["cat"], flags);
      await runKind("normal", server, async () => {
        const reply = await exchange(server.port, "hello\n");
        assertEquals(new TextDecoder().decode(reply), "hello\n");
      }, /^closed 127\.0\.0\.1:\d+ \(6 bytes in, 6 bytes out\)$/);
      await stop(server);
    },
  );
  await t.step(
    "reset mid-output: yes, the client reads 4 KiB and resets",
    async () => {
      await using server = await startExec(["yes"], flags);
      await runKind("reset", server, async () => {
        using conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        await readExact(conn, 4096);
      }, /yes\[\d+\]: killed by SIG(TERM|PIPE) \(client: /);
      await stop(server);
    },
  );
  await t.step(
    "SIGTERM ignored: idle clients closed, SIGKILL after --kill-after",
    async () => {
      await using server = await startExec([program("ignore_term.sh")], [
        ...flags,
        "--idle-timeout",
        "0.1",
      ]);
      await runKind(
        "ignoring",
        server,
        async () => {
          using conn = await Deno.connect({
            hostname: "127.0.0.1",
            port: server.port,
          });
          await readExact(conn, 6); // "ready\n"
          // Then silence: the idle timeout closes the connection, and the
          // program, deaf to SIGTERM, gets SIGKILL 0.2 s later.
          await readAll(conn).catch(() => {});
        },
        /ignore_term\.sh\[\d+\]: killed by SIGKILL \(SIGTERM ignored for 0\.2 s\) \(client: closed by the server\)$/,
      );
      await stop(server);
    },
  );
  assertEquals(processesWith("987.654"), [], "orphaned programs");
});

Deno.test("exec.ts: the server's own memory is flat across 10,000 connections (each a cat echo)", async () => {
  await using server = await startExec(["cat"], ["--rate", "0"]);
  const run = async (count: number) => {
    for (let done = 0; done < count; done += AT_ONCE) {
      await Promise.all(
        Array.from({ length: AT_ONCE }, async () => {
          const reply = await exchange(server.port, "hello\n");
          assertEquals(new TextDecoder().decode(reply), "hello\n");
        }),
      );
    }
  };
  // Warm up: JIT, the allocator's arenas, the log buffer at its size.
  await run(1000);
  const samples = [memoryKiB(server.pid).rss];
  for (let thousands = 1; thousands < 10; thousands += 3) {
    await run(3000);
    samples.push(memoryKiB(server.pid).rss);
  }
  const growth = samples.at(-1)! - samples[0];
  figures("exec-memory", {
    connections: 10_000,
    rss_mib_after_1000: mib(samples[0]),
    rss_mib_every_3000: samples.slice(1).map(mib).join(","),
    growth_kib: growth,
    bytes_per_connection: (growth * 1024 / 9000).toFixed(0),
  });
  // A leak of a kilobyte a connection (one closure kept per program, say)
  // would be 9 MiB here; flat means less than a third of that.
  assertLessOrEqual(growth, 3 * 1024, `RSS grew ${growth} KiB`);
  await stop(server);
});

async function stop(server: ExecServer): Promise<void> {
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr.slice(-2000));
  assertNotMatch(stderr, /Uncaught|panicked/);
}
