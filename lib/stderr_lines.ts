/**
 * A program's stderr as log lines ({@linkcode StderrLines}): split at its
 * line ends, cut into pieces of at most {@linkcode MAX_STDERR_LINE}
 * characters, escaped as all text from outside is, and bounded per
 * program: past {@linkcode DEFAULT_STDERR_LINES_PER_SECOND} lines a second
 * the rest are counted, not logged, so one program writing `yes >&2`
 * cannot fill the log (1.2 GB in 5 s without this) or crowd out every
 * other connection's lines.
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";
import type { Log } from "./log.ts";

/** Longest stderr line logged as one line; a longer one is logged in pieces. */
export const MAX_STDERR_LINE = 1024;

/**
 * Lines a second one program may log from its stderr unless told
 * otherwise, in bursts of as many: ample for warnings and a trace, 100 KiB
 * a second at most (lines are cut at {@linkcode MAX_STDERR_LINE}), so that
 * a server's 64 programs all at their limit write a few MB a second.
 */
export const DEFAULT_STDERR_LINES_PER_SECOND = 100;

/**
 * Throws a `RangeError` unless `linesPerSecond` is a limit
 * {@linkcode StderrLines} takes: a whole number, 0 (no limit) or more.
 * A server checks it once, at start, rather than per program.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { checkLinesPerSecond } from "./stderr_lines.ts";
 *
 * checkLinesPerSecond(100);
 * assertThrows(() => checkLinesPerSecond(-1), RangeError, "linesPerSecond");
 * ```
 */
export function checkLinesPerSecond(linesPerSecond: number): void {
  if (!(Number.isInteger(linesPerSecond) && linesPerSecond >= 0)) {
    throw new RangeError(
      `linesPerSecond must be a whole number, 0 or more: ${linesPerSecond}`,
    );
  }
}

/** How often the count of dropped lines is logged while they are dropped. */
const DROP_REPORT_MS = 1000;

/** Line feed: never inside a UTF-8 sequence, so bytes split at it safely. */
const LF = 0x0a;

/**
 * Turns the bytes a program writes on stderr into log lines, one
 * {@linkcode Log} call each: a line per line (a CR before its LF dropped),
 * a line without end in pieces of {@linkcode MAX_STDERR_LINE} characters
 * rather than held in memory, every control character escaped
 * (`escapeControlChars`: a program's stderr may carry its client's bytes,
 * which must not rewrite the server's terminal or forge log lines). At
 * most `linesPerSecond` lines a second reach the log, in bursts of as
 * many (0: no limit); the others are dropped without being decoded, and
 * their count is logged once a second while it goes on, and at
 * {@linkcode StderrLines.end}: `1234 stderr lines dropped (over 100
 * lines/s)`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { StderrLines } from "./stderr_lines.ts";
 *
 * const logged: string[] = [];
 * const lines = new StderrLines((line) => logged.push(line), 2);
 * lines.write(new TextEncoder().encode("one\r\ntwo\x1b[2J\nthree\nfour\n"));
 * lines.end();
 * assertEquals(logged, [
 *   "one",
 *   "two\\x1b[2J",
 *   "2 stderr lines dropped (over 2 lines/s)",
 * ]);
 * ```
 */
export class StderrLines {
  readonly #log: Log;
  readonly #perSecond: number;
  readonly #decoder = new TextDecoder();
  /** The decoded start of a line whose end has not come yet. */
  #partial = "";
  #tokens: number;
  #refilledAt = performance.now();
  #dropped = 0;
  #reportTimer?: ReturnType<typeof setTimeout>;

  /**
   * Logs to `log`, at most `linesPerSecond` lines a second (default
   * {@linkcode DEFAULT_STDERR_LINES_PER_SECOND}; 0: no limit).
   */
  constructor(
    log: Log,
    linesPerSecond: number = DEFAULT_STDERR_LINES_PER_SECOND,
  ) {
    checkLinesPerSecond(linesPerSecond);
    this.#log = log;
    this.#perSecond = linesPerSecond;
    this.#tokens = linesPerSecond;
  }

  /** Takes the next bytes the program wrote. */
  write(chunk: Uint8Array): void {
    let at = 0;
    for (let end; (end = chunk.indexOf(LF, at)) !== -1; at = end + 1) {
      const fresh = this.#partial === "";
      if (fresh && !this.#take()) {
        // Dropped whole, undecoded: a flood costs a scan for LF per chunk,
        // not a string per line. (A split UTF-8 sequence cannot end at LF.)
        this.#decoder.decode();
        continue;
      }
      const line = this.#partial +
        this.#decoder.decode(chunk.subarray(at, end));
      this.#partial = "";
      this.#emit(line.endsWith("\r") ? line.slice(0, -1) : line, fresh);
    }
    if (at < chunk.byteLength) {
      this.#partial += this.#decoder.decode(chunk.subarray(at), {
        stream: true,
      });
      // A line without end is logged in pieces, not held in memory.
      if (this.#partial.length >= MAX_STDERR_LINE) {
        const whole = this.#partial.length -
          (this.#partial.length % MAX_STDERR_LINE);
        const pieces = this.#partial.slice(0, whole);
        this.#partial = this.#partial.slice(whole);
        this.#emit(pieces, false);
      }
    }
  }

  /** The program's stderr ended: logs what is left, and the count dropped. */
  end(): void {
    const rest = this.#partial + this.#decoder.decode();
    this.#partial = "";
    if (rest !== "") this.#emit(rest, false);
    clearTimeout(this.#reportTimer);
    this.#reportTimer = undefined;
    this.#reportDropped();
  }

  /**
   * Logs `text` in pieces of at most {@linkcode MAX_STDERR_LINE}
   * characters (an empty line as one), each one a line of the limit; the
   * first has been taken already when `taken`.
   */
  #emit(text: string, taken: boolean): void {
    for (let i = 0; i < Math.max(1, text.length); i += MAX_STDERR_LINE) {
      if (i > 0 || !taken) {
        if (!this.#take()) continue;
      }
      this.#log(escapeControlChars(text.slice(i, i + MAX_STDERR_LINE)));
    }
  }

  /** Whether one more line may be logged now; counts it dropped if not. */
  #take(): boolean {
    if (this.#perSecond === 0) return true;
    const now = performance.now();
    this.#tokens = Math.min(
      this.#perSecond,
      this.#tokens + (now - this.#refilledAt) * this.#perSecond / 1000,
    );
    this.#refilledAt = now;
    if (this.#tokens >= 1) {
      this.#tokens--;
      return true;
    }
    this.#dropped++;
    if (this.#reportTimer === undefined) {
      this.#reportTimer = setTimeout(() => {
        this.#reportTimer = undefined;
        this.#reportDropped();
      }, DROP_REPORT_MS);
      // The program's end reports the rest: no timer keeps a process alive.
      Deno.unrefTimer(this.#reportTimer);
    }
    return false;
  }

  #reportDropped(): void {
    if (this.#dropped === 0) return;
    this.#log(
      `${this.#dropped} stderr line${
        this.#dropped === 1 ? "" : "s"
      } dropped (over ${this.#perSecond} lines/s)`,
    );
    this.#dropped = 0;
  }
}
