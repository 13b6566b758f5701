import { assert, assertEquals, assertLess, assertNotMatch } from "@std/assert";
import { eventually, pseudoRandomBytes } from "../_helpers.ts";
import {
  compileRudeClient,
  countLines,
  echoExchange,
  fdCount,
  figures,
  missingGcc,
  startEcho,
} from "./_stress.ts";

const port = (server: { port: number }) => ({
  hostname: "127.0.0.1",
  port: server.port,
});

async function runRude(rude: string, args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(rude, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stdout).trim();
  assert(success, `${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
  return text;
}

Deno.test({
  name:
    "echo.ts survives resets, odd half-closes and vanishing clients: no crash, no leaked descriptor, others served byte-exact",
  ignore: missingGcc(),
  async fn() {
    const rude = compileRudeClient();
    // All clients come from 127.0.0.1: lift the per-source limit.
    await using server = await startEcho(["--per-source", "0"]);
    const data = pseudoRandomBytes(256 * 1024, 11);
    // Warm up once so lazily opened descriptors count in the baseline.
    {
      using conn = await Deno.connect(port(server));
      assert((await echoExchange(conn, data)).exact);
    }
    await eventually(
      () => countLines(server.proc, /^closed /) >= 1,
      "a closed line",
      5000,
    );
    const baseline = fdCount(server.pid);
    let peakFds = baseline;
    const sampler = setInterval(() => {
      peakFds = Math.max(peakFds, fdCount(server.pid));
    }, 20);
    const started = performance.now();
    const faults = Promise.all([
      // RST mid-stream (SO_LINGER 0), while the server is echoing.
      runRude(rude, ["rst", "127.0.0.1", String(server.port), "200", "65536"]),
      // Read side shut down, then bytes sent: the echo goes nowhere.
      runRude(rude, [
        "shutrd",
        "127.0.0.1",
        String(server.port),
        "100",
        "65536",
      ]),
      // Vanish: send 256 KiB and close without reading (the kernel resets).
      Promise.all(Array.from({ length: 100 }, async () => {
        const conn = await Deno.connect(port(server));
        await conn.write(data.subarray(0, 65536));
        conn.close();
      })),
      // Half-close at once, before sending anything: an empty echo.
      Promise.all(Array.from({ length: 100 }, async () => {
        using conn = await Deno.connect(port(server));
        const { received, exact } = await echoExchange(conn, new Uint8Array());
        assert(exact && received === 0);
      })),
      // Half-close, read part of the echo, then close.
      Promise.all(Array.from({ length: 100 }, async () => {
        const conn = await Deno.connect(port(server));
        await conn.write(data.subarray(0, 100_000));
        await conn.closeWrite();
        await conn.read(new Uint8Array(1000));
        conn.close();
      })),
      // A process killed mid-transfer (SIGKILL: its kernel closes for it).
      (async () => {
        for (let i = 0; i < 10; i++) {
          const child = new Deno.Command(rude, {
            args: [
              "push",
              "127.0.0.1",
              String(server.port),
              "1073741824",
              "60",
            ],
            stdin: "piped",
            stdout: "null",
          }).spawn();
          await new Promise((resolve) => setTimeout(resolve, 30));
          child.kill("SIGKILL");
          await child.status;
          await child.stdin.close().catch(() => {});
        }
      })(),
    ]);
    // Meanwhile, well-behaved clients get every byte back.
    const good = await Promise.all(Array.from({ length: 50 }, async () => {
      using conn = await Deno.connect(port(server));
      return (await echoExchange(conn, data)).exact;
    }));
    await faults;
    const faultSeconds = (performance.now() - started) / 1000;
    const settleMs = await eventually(
      () => fdCount(server.pid) <= baseline,
      "descriptors back to the start",
      15_000,
    );
    clearInterval(sampler);
    const after = fdCount(server.pid);
    const accepted = countLines(server.proc, /^accepted /);
    await eventually(
      () => countLines(server.proc, /^closed /) >= accepted,
      "a closed line for each accepted one",
      5000,
    );
    const closed = countLines(server.proc, /^closed /);
    figures("faults", {
      rst: 200,
      shut_rd: 100,
      vanished: 100,
      empty_half_close: 100,
      partial_read: 100,
      killed_mid_transfer: 10,
      good_exact: `${good.filter(Boolean).length}/50`,
      seconds: faultSeconds.toFixed(1),
      fds_baseline: baseline,
      fds_peak: peakFds,
      fds_after: after,
      fds_settled_ms: settleMs.toFixed(0),
      accepted,
      closed,
      reset_log_lines: countLines(server.proc, /reset|broken pipe/i),
      dropped_before_accept: countLines(server.proc, /^dropped /),
    });
    assertEquals(good.filter(Boolean).length, 50);
    assertEquals(after, baseline, "descriptors leaked");
    assertEquals(closed, accepted, "connections never closed");
    assertEquals(countLines(server.proc, /accept failed/), 0);
    assertLess(faultSeconds, 30, `the faults took ${faultSeconds} s`);
    // Still serving after all that.
    {
      const t0 = performance.now();
      using conn = await Deno.connect(port(server));
      assert((await echoExchange(conn, data)).exact);
      const ms = performance.now() - t0;
      // Resets before accept once put the loop in a 1 s backoff per reset,
      // and every queued client waited minutes.
      assertLess(ms, 5000, `a client after the faults waited ${ms} ms`);
    }
    server.proc.kill("SIGTERM");
    const { code, stderr } = await server.proc.finished();
    assertEquals(code, 0, stderr.slice(-2000));
    assertNotMatch(stderr, /Uncaught|panicked|unhandled/i);
  },
});
