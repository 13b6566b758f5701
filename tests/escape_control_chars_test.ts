/**
 * lib/escape_control_chars.ts: the one escaping function for text from
 * outside on its way into a log or error line.
 */

import { assertEquals } from "@std/assert";
import { escapeControlChars } from "../mod.ts";

Deno.test("escapeControlChars() leaves text alone and escapes C0, C1, DEL and bidi overrides", () => {
  assertEquals(escapeControlChars("plain text, été"), "plain text, été");
  assertEquals(
    escapeControlChars("a\tb\rc\nd\x7f\x9b\u202e"),
    "a\\tb\\rc\\nd\\x7f\\x9b\\u{202e}",
  );
});

Deno.test("escapeControlChars() escapes what ends a line or drives a terminal beyond ASCII: NEL, the 8-bit CSI, U+2028, U+2029, and every bidi mark", () => {
  assertEquals(
    escapeControlChars("\u0085\u009b2J\u2028\u2029\u061c\u200e\u200f"),
    "\\x85\\x9b2J\\u{2028}\\u{2029}\\u{61c}\\u{200e}\\u{200f}",
  );
  assertEquals(
    escapeControlChars("\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069"),
    "\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{2066}\\u{2067}\\u{2068}\\u{2069}",
  );
  // The escaped text holds none of them: escaping again changes nothing.
  const once = escapeControlChars("x\u0085\ny\u202e");
  assertEquals(escapeControlChars(once), once);
});
