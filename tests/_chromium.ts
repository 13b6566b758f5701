/**
 * Headless Chromium (Debian's `chromium`), driven by puppeteer-core from
 * npm, for the tests of pages: one driver version, one launch, one skip.
 */

/** Debian's Chromium. */
export const CHROMIUM = "/usr/bin/chromium";

/**
 * For `Deno.test({ ignore })`: `true` (skip), after printing why, when
 * Chromium is not installed.
 */
export function chromiumMissing(): boolean {
  try {
    if (Deno.statSync(CHROMIUM).isFile) return false;
  } catch {
    // Not there.
  }
  console.error(`SKIP: ${CHROMIUM} not installed (.ci/run installs it)`);
  return true;
}

/**
 * A headless Chromium with a profile of its own; disposing closes it and
 * removes the profile. puppeteer is imported here, not in deno.json's
 * imports: only these tests need a browser driver.
 */
export async function launchChromium() {
  // deno-lint-ignore no-import-prefix
  const { default: puppeteer } = await import("npm:puppeteer-core@24.43.1");
  const profile = await Deno.makeTempDir({ prefix: "sockets-chromium-" });
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return {
    browser,
    /** Its profile's folder, removed with it. */
    profile,
    async [Symbol.asyncDispose]() {
      await browser.close();
      await Deno.remove(profile, { recursive: true });
    },
  };
}
