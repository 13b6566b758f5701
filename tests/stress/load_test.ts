import { assert, assertEquals, assertNotMatch } from "@std/assert";
import { pseudoRandomBytes } from "../_helpers.ts";
import {
  echoExchange,
  figures,
  memoryKiB,
  mib,
  RssSampler,
  startEcho,
} from "./_stress.ts";

const CLIENTS = 1000;
const BYTES = 256 * 1024;
/** The stated ceiling for the echo server's peak RSS under this load. */
const RSS_CEILING_MIB = 160;

Deno.test("echo.ts: 1,000 concurrent clients × 256 KiB all come back byte-exact, server RSS under 160 MiB", async () => {
  // 1,000 clients, all from 127.0.0.1: lift the per-source limit.
  await using server = await startEcho(["--per-source", "0"]);
  const before = memoryKiB(server.pid);
  using sampler = new RssSampler(server.pid);
  const base = pseudoRandomBytes(BYTES + 65536, 862);
  const started = performance.now();
  const results = await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      using conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: server.port,
      });
      const offset = (i * 977) % 65536;
      return await echoExchange(conn, base.subarray(offset, offset + BYTES));
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const after = memoryKiB(server.pid);
  const exact = results.filter((r) => r.exact).length;
  const bytes = results.reduce((sum, r) => sum + r.received, 0);
  figures("load", {
    clients: CLIENTS,
    bytes_each: BYTES,
    exact,
    bytes_back: bytes,
    seconds: seconds.toFixed(1),
    MiB_per_s: (2 * bytes / 1048576 / seconds).toFixed(0),
    rss_before_MiB: mib(before.rss),
    rss_peak_sampled_MiB: mib(sampler.peakKiB),
    hwm_MiB: mib(after.hwm),
    ceiling_MiB: RSS_CEILING_MIB,
  });
  assertEquals(exact, CLIENTS);
  assertEquals(bytes, CLIENTS * BYTES);
  assert(
    after.hwm < RSS_CEILING_MIB * 1024,
    `peak RSS ${mib(after.hwm)} MiB over ${RSS_CEILING_MIB} MiB`,
  );
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr.slice(-2000));
  assertNotMatch(stderr, /Uncaught|panicked/);
});
