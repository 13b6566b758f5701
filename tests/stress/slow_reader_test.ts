import { assertEquals, assertLess, assertNotMatch } from "@std/assert";
import { TextLineStream } from "@std/streams";
import { pseudoRandomBytes } from "../_helpers.ts";
import {
  compileRudeClient,
  echoExchange,
  figures,
  memoryKiB,
  mib,
  missingGcc,
  RssSampler,
  startEcho,
} from "./_stress.ts";

const GIB = 1024 * 1024 * 1024;

async function otherClients(port: number, count: number): Promise<number> {
  const data = pseudoRandomBytes(1024 * 1024, 3);
  const results = await Promise.all(
    Array.from({ length: count }, async () => {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      return await echoExchange(conn, data);
    }),
  );
  return results.filter((r) => r.exact).length;
}

Deno.test({
  name:
    "echo.ts: a client sending 1 GiB without reading grows the server by < 32 MiB, others are still served",
  ignore: missingGcc(),
  async fn() {
    const rude = compileRudeClient();
    await using server = await startEcho();
    // Warm up, so the baseline includes what serving any client costs.
    assertEquals(await otherClients(server.port, 4), 4);
    const before = memoryKiB(server.pid);
    using sampler = new RssSampler(server.pid);
    const pusher = new Deno.Command(rude, {
      args: ["push", "127.0.0.1", String(server.port), String(GIB), "60"],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const started = performance.now();
    const line = (async () => {
      const reader = pusher.stdout
        .pipeThrough(new TextDecoderStream())
        .pipeThrough(new TextLineStream())
        .getReader();
      const { value } = await reader.read();
      reader.releaseLock();
      return (value ?? "").trim();
    })();
    // Meanwhile other clients are served.
    const servedDuring = await otherClients(server.port, 20);
    const report = await line;
    const pushSeconds = (performance.now() - started) / 1000;
    const [, sentText, why] = /^sent (\d+) (\w+)/.exec(report) ?? [];
    const sent = Number(sentText);
    const servedAfterStart = performance.now();
    const servedAfter = await otherClients(server.port, 20);
    const servedAfterMs = performance.now() - servedAfterStart;
    const after = memoryKiB(server.pid);
    const growthKiB = Math.max(sampler.peakKiB, after.rss) - before.rss;
    figures("slow-reader", {
      offered_bytes: GIB,
      accepted_bytes: sent,
      accepted_MiB: (sent / 1048576).toFixed(1),
      stop: why,
      push_seconds: pushSeconds.toFixed(1),
      rss_before_MiB: mib(before.rss),
      rss_peak_MiB: mib(sampler.peakKiB),
      rss_growth_MiB: mib(growthKiB),
      others_served_during: `${servedDuring}/20`,
      others_served_after: `${servedAfter}/20`,
      others_after_ms: servedAfterMs.toFixed(0),
    });
    await pusher.stdin.close();
    await pusher.status;
    assertEquals(why, "stalled", report);
    assertLess(sent, GIB, report);
    assertLess(growthKiB, 32 * 1024, `grew ${mib(growthKiB)} MiB`);
    assertEquals(servedDuring, 20);
    assertEquals(servedAfter, 20);
    server.proc.kill("SIGTERM");
    const { code, stderr } = await server.proc.finished();
    assertEquals(code, 0, stderr.slice(-2000));
    assertNotMatch(stderr, /Uncaught|panicked/);
  },
});
