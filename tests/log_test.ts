/**
 * lib/log.ts: the stderr log writes every line it keeps, whenever it is
 * logged, and FloodLog's lines do not depend on how late its timer runs.
 */

import { assertEquals } from "@std/assert";
import { TextLineStream } from "@std/streams";
import { FloodLog } from "../lib/log.ts";
import { repoPath } from "./_helpers.ts";

/**
 * A process that logs `first`, then `second` from a promise reaction
 * `depth` steps after the first write returns: the moments around the
 * writer's end. It stays up until its stdin closes, so nothing but the
 * writer itself (no flush at exit) can write `second`.
 */
const CHILD = `
const { stderrLog } = await import(${JSON.stringify(repoPath("lib/log.ts"))});
const depth = Number(Deno.args[0]);
const write = Deno.stderr.write.bind(Deno.stderr);
let first = true;
Deno.stderr.write = async (bytes) => {
  const written = await write(bytes);
  if (first) {
    first = false;
    let chain = Promise.resolve();
    for (let i = 0; i < depth; i++) chain = chain.then(() => {});
    chain.then(() => stderrLog("second"));
  }
  return written;
};
stderrLog("first");
await Deno.stdin.read(new Uint8Array(1));
`;

Deno.test("stderrLog writes a line logged just as its writer finishes", async () => {
  // Before the fix, a line logged one reaction after the last write (depth
  // 1) saw the writer still marked busy, armed no timer and waited for
  // the next line: a refusal logged then never reached the log.
  for (let depth = 0; depth <= 6; depth++) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", CHILD, String(depth)],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const lines: string[] = [];
    const reader = child.stderr
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(new TextLineStream())
      .getReader();
    // Only a guard against hanging: `second` is due within milliseconds.
    const guard = setTimeout(() => child.kill(), 10_000);
    while (!lines.includes("second")) {
      const { value, done } = await reader.read();
      if (done) break;
      lines.push(value);
    }
    clearTimeout(guard);
    await child.stdin.close();
    await reader.cancel();
    await child.status;
    assertEquals(lines, ["first", "second"], `depth ${depth}`);
  }
});

Deno.test("FloodLog counts an event that comes before its late timer, as it counts the others", () => {
  // A busy event loop runs the interval's timer late; an event that comes
  // first, past the interval's end, is part of the same flood: counted,
  // not logged in full as if the flood had paused.
  const lines: string[] = [];
  let now = 0;
  const flood = new FloodLog((line) => lines.push(line), "refused", 1000, "", {
    now: () => now,
  });
  flood.event("a: full"); // t = 0: logged in full
  now = 500;
  flood.event("b: full"); // counted
  now = 1300; // the timer (due at 1000) has not run yet
  flood.event("c: full");
  now = 1400;
  flood.event("d: full");
  flood.flush();
  assertEquals(lines, [
    "refused a: full",
    "refused 1 more (counted, not logged one by one)",
    "refused 2 more (counted, not logged one by one)",
  ]);
});

Deno.test("FloodLog logs the first event after a quiet interval in full", () => {
  const lines: string[] = [];
  let now = 0;
  const flood = new FloodLog((line) => lines.push(line), "refused", 1000, "", {
    now: () => now,
  });
  flood.event("a: full");
  now = 2500;
  flood.event("b: full");
  flood.flush();
  assertEquals(lines, ["refused a: full", "refused b: full"]);
});

Deno.test("stdoutAfterLog's first write waits for the log line before it, even when stderr is slow", async () => {
  // stderr made slow on purpose (a busy machine's write thread, 40 ms:
  // less than STDOUT_ORDER_WAIT_MS, the most a write waits): the
  // answer written to stdout right after `connected to ...` must still
  // come after it through one pipe, as a client's session shows them.
  const code = `
const { stderrLogNow, stdoutAfterLog } = await import(${
    JSON.stringify(repoPath("lib/log.ts"))
  });
const write = Deno.stderr.write.bind(Deno.stderr);
Deno.stderr.write = async (bytes) => {
  await new Promise((resolve) => setTimeout(resolve, 40));
  return await write(bytes);
};
const stdout = Deno.args[0] === "after" ? stdoutAfterLog() : Deno.stdout;
stderrLogNow("connected to 127.0.0.1:15000");
await stdout.write(new TextEncoder().encode("hi\\n"));
`;
  const run = async (mode: string) => {
    const output = await new Deno.Command("sh", {
      args: [
        "-c",
        `exec 2>&1 "$0" eval "$1" "$2"`,
        Deno.execPath(),
        code,
        mode,
      ],
      stdout: "piped",
    }).output();
    return new TextDecoder().decode(output.stdout).trim().split("\n");
  };
  // The control shows the race the helper closes.
  assertEquals(await run("plain"), ["hi", "connected to 127.0.0.1:15000"]);
  assertEquals(await run("after"), ["connected to 127.0.0.1:15000", "hi"]);
});
