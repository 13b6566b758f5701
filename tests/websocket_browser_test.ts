/**
 * The browser as a client of a TCP server: clients/web/index.html, served by
 * servers/forward.ts with --web beside its ws:// socket, opened in headless
 * Chromium (Debian's `chromium`, driven by puppeteer-core), talks through
 * the bridge to servers/echo.ts. Saves the page's screenshot as
 * clients/web/screenshot.png (for the README) when SAVE_SCREENSHOT=1.
 */

import { assertEquals } from "@std/assert";
import { chromiumMissing, launchChromium } from "./_chromium.ts";
import { freePort, startServer } from "./_helpers.ts";

Deno.test({
  name:
    "clients/web/index.html in headless Chromium echoes a typed line through the ws:// bridge to echo.ts, with no console error",
  ignore: chromiumMissing(),
  // puppeteer keeps timers and a pipe of its own past close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using echo = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1"],
      args: ["--hostname", "127.0.0.1", "--port", "0"],
    });
    // A fixed port, so the page's origin is known for --origin.
    const port = freePort();
    const origin = `http://127.0.0.1:${port}`;
    await using bridge = await startServer("servers/forward.ts", {
      permissions: [
        `--allow-net=127.0.0.1:${port},127.0.0.1:${echo.port}`,
        "--allow-read=clients/web",
      ],
      args: [
        "--web",
        "clients/web",
        "--origin",
        origin,
        `ws://127.0.0.1:${port}/ws`,
        `tcp://127.0.0.1:${echo.port}`,
      ],
    });
    await using chromium = await launchChromium();
    const browser = chromium.browser;
    const page = await browser.newPage();
    await page.setViewport({ width: 720, height: 420 });
    const problems: string[] = [];
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(message.text());
    });
    page.on("pageerror", (error) => problems.push(String(error)));
    await page.goto(`${origin}/`);
    // A string: this file is checked without the DOM's types.
    await page.waitForFunction(
      'document.getElementById("status").textContent.startsWith("connected")',
    );
    await page.type("#line", "hello from the browser");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#log .received");
    const received = await page.$$eval(
      "#log .received",
      (nodes) => nodes.map((node) => node.textContent),
    );
    assertEquals(received, ["← hello from the browser"]);
    assertEquals(problems, []);
    if (Deno.env.get("SAVE_SCREENSHOT") === "1") {
      await page.screenshot({ path: "clients/web/screenshot.png" });
    }
    await bridge.proc.waitForStderr(
      /^upgraded 127\.0\.0\.1:\d+ \(WebSocket \/ws, binary\)$/,
    );
  },
});
