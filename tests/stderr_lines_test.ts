/**
 * lib/stderr_lines.ts: a program's stderr as log lines, escaped, cut and
 * bounded per program.
 */

import { assertEquals, assertMatch, assertThrows } from "@std/assert";
import { MAX_STDERR_LINE, StderrLines } from "../lib/stderr_lines.ts";

const encode = (s: string) => new TextEncoder().encode(s);

Deno.test("StderrLines joins a line and a UTF-8 character split across writes, drops a CR before LF, and logs the unended rest at its end", () => {
  const logged: string[] = [];
  const lines = new StderrLines((line) => logged.push(line), 0);
  const bytes = encode("h\u00e9llo\r\nw\u2028orld\nrest");
  // Split inside the two bytes of é and the three of U+2028.
  lines.write(bytes.subarray(0, 2));
  lines.write(bytes.subarray(2, 11));
  lines.write(bytes.subarray(11));
  assertEquals(logged, ["h\u00e9llo", "w\\u{2028}orld"]);
  lines.end();
  assertEquals(logged, ["h\u00e9llo", "w\\u{2028}orld", "rest"]);
});

Deno.test("StderrLines cuts a line without end into pieces of MAX_STDERR_LINE characters as it comes", () => {
  const logged: string[] = [];
  const lines = new StderrLines((line) => logged.push(line), 0);
  lines.write(encode("x".repeat(2 * MAX_STDERR_LINE + 5)));
  assertEquals(logged.map((l) => l.length), [MAX_STDERR_LINE, MAX_STDERR_LINE]);
  lines.write(encode("\n"));
  assertEquals(logged.map((l) => l.length), [
    MAX_STDERR_LINE,
    MAX_STDERR_LINE,
    5,
  ]);
});

Deno.test("StderrLines logs a burst of its rate, then counts every other line, and says so at its end", () => {
  const logged: string[] = [];
  const lines = new StderrLines((line) => logged.push(line), 5);
  // One write of 1000 lines, long before a token comes back.
  lines.write(
    encode(Array.from({ length: 1000 }, (_, i) => `line ${i}\n`).join("")),
  );
  lines.end();
  // A burst of 5 (a token more only if this ran for 200 ms), then counts.
  assertEquals(logged.slice(0, 5), [
    "line 0",
    "line 1",
    "line 2",
    "line 3",
    "line 4",
  ]);
  const report = logged.at(-1)!;
  assertMatch(report, /^\d+ stderr lines dropped \(over 5 lines\/s\)$/);
  assertEquals(logged.length - 1 + parseInt(report), 1000);
});

Deno.test("StderrLines refuses a rate that is not a whole number of 0 or more", () => {
  assertThrows(
    () => new StderrLines(() => {}, -1),
    RangeError,
    "linesPerSecond",
  );
  assertThrows(
    () => new StderrLines(() => {}, 1.5),
    RangeError,
    "linesPerSecond",
  );
});
