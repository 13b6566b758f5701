/**
 * The stats page (`GET /` of `--stats`) in a real browser: Debian's
 * Chromium, headless, driven by puppeteer-core (from npm, for this test
 * only). It loads with no console error, shows every figure the JSON has,
 * fits a phone's width, and its screenshot is the README's
 * (`STATS_SCREENSHOT=bench/stats_page.png` writes it there).
 */

import { assert, assertEquals } from "@std/assert";
import { chromiumMissing, launchChromium } from "./_chromium.ts";
import { readAll, startServer } from "./_helpers.ts";

/** A series of `/stats.json`. */
interface Series {
  labels: Record<string, string>;
  value?: number;
  count?: number;
}

Deno.test({
  name:
    "the stats page loads in headless Chromium, shows the JSON's figures with no console error, and fits a phone",
  ignore: chromiumMissing(),
  // puppeteer's own timers and pipes outlive `browser.close()` by a tick.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using server = await startServer("servers/echo.ts", {
      // With libc: the header shows descriptors too.
      permissions: [
        "--allow-net=127.0.0.1",
        "--allow-ffi=/lib/x86_64-linux-gnu/libc.so.6",
      ],
      args: [
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--stats",
        "127.0.0.1:0",
        "--max-connections",
        "1",
      ],
    });
    const { proc, port } = server;
    const stats = Number(
      (await proc.waitForStderr(/^stats on http:\/\/127\.0\.0\.1:(\d+)\/$/))[1],
    );
    await using chromium = await launchChromium();
    const browser = chromium.browser;
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on("console", (message) => {
      if (message.type() === "error" || message.type() === "warn") {
        problems.push(`console ${message.type()}: ${message.text()}`);
      }
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error}`));
    page.on(
      "requestfailed",
      (request) => problems.push(`request failed: ${request.url()}`),
    );
    // A phone: 390 CSS pixels wide.
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2 });
    const url = `http://127.0.0.1:${stats}/`;
    await page.goto(url, { waitUntil: "load" });
    await page.waitForSelector("body[data-updated]");
    // The traffic comes while the page watches: its charts show it.
    const polls = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const before = await page.evaluate("document.body.dataset.updated");
        await page.waitForFunction(
          `document.body.dataset.updated !== ${JSON.stringify(before)}`,
          { timeout: 15_000 },
        );
      }
    };
    // N = 3 exchanges of 4 bytes; one refusal (full) while one is held.
    for (let i = 0; i < 3; i++) {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode("ping"));
      await conn.closeWrite();
      assertEquals((await readAll(conn)).byteLength, 4);
    }
    const held = await Deno.connect({ hostname: "127.0.0.1", port });
    await proc.until(
      () =>
        proc.stderrLines.filter((l) => l.startsWith("accepted")).length === 4,
      "the held connection's accept",
    );
    const refused = await Deno.connect({ hostname: "127.0.0.1", port });
    await proc.waitForStderr(
      /^refused 127\.0\.0\.1:\d+: too many connections/,
    );
    refused.close();
    held.close();
    await proc.until(
      () => proc.stderrLines.filter((l) => l.startsWith("closed")).length === 4,
      "four closing lines",
    );
    // Two polls after the traffic: the figures shown are the last ones.
    await polls(2);
    const cells = await page.evaluate(
      `[...document.querySelectorAll("[data-metric]")].map((e) =>
          [e.dataset.metric, e.dataset.labels, e.textContent])`,
    ) as [string, string, string][];
    const shown = new Map(
      cells.map(([metric, labels, text]) => [`${metric} ${labels}`, text]),
    );
    const json = await (await fetch(`http://127.0.0.1:${stats}/stats.json`))
      .json() as {
        metrics: { name: string; type: string; series: Series[] }[];
      };
    let compared = 0;
    for (const family of json.metrics) {
      // The process's memory moves between two reads.
      if (/^process_|^sockets_heap_/.test(family.name)) continue;
      for (const series of family.series) {
        const key = `${family.name} ${JSON.stringify(series.labels)}`;
        assertEquals(
          shown.get(key),
          String(series.value ?? series.count),
          key,
        );
        compared++;
      }
    }
    assert(compared >= 10, `only ${compared} figures compared`);
    const card = await page.evaluate(
      `document.querySelector('section[data-owner="echo/tcp"]').textContent`,
    ) as string;
    for (const text of ["accepted4", "refused1", "bytes in12 B", "full) 1"]) {
      assert(
        card.replace(/\s+/g, "").includes(text.replace(/\s+/g, "")),
        `echo/tcp card lacks ${text}: ${card}`,
      );
    }
    assertEquals(
      await page.evaluate(
        `document.querySelectorAll("section[data-owner] canvas").length`,
      ),
      4,
    );
    const overflow = await page.evaluate(
      "document.documentElement.scrollWidth - window.innerWidth",
    ) as number;
    assert(overflow <= 0, `the page is ${overflow} px wider than a phone`);
    const screenshot = Deno.env.get("STATS_SCREENSHOT") ??
      `${chromium.profile}/stats_page.png`;
    await page.screenshot({
      path: screenshot as `${string}.png`,
      fullPage: true,
    });
    assertEquals(problems, []);
    await server.proc.terminate();
  },
});
