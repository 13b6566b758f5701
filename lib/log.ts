/**
 * Server logging: one line per event on stderr, batched so that a burst of
 * events costs one `write` instead of one per line, and counted summaries for
 * floods (refusals, drops) instead of a line per packet.
 *
 * @module
 */

/** Takes one log line, without its newline. */
export type Log = (line: string) => void;

/**
 * A {@linkcode Log} that writes to stderr. Lines logged in one turn of the
 * event loop are written together at its end (a microtask, so no timer is
 * left behind); {@linkcode flushStderrLog} writes them at once.
 *
 * @example
 * ```ts
 * import { flushStderrLog, stderrLog } from "./log.ts";
 *
 * stderrLog("listening on 127.0.0.1:15000");
 * flushStderrLog();
 * ```
 */
export const stderrLog: Log = (line) => {
  pending.push(line);
  if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(flushStderrLog);
  }
};

const pending: string[] = [];
let flushQueued = false;
const encoder = new TextEncoder();

/**
 * Writes every line {@linkcode stderrLog} still holds; call before exiting.
 *
 * @example
 * ```ts
 * import { flushStderrLog } from "./log.ts";
 *
 * flushStderrLog();
 * ```
 */
export function flushStderrLog(): void {
  flushQueued = false;
  if (pending.length === 0) return;
  const bytes = encoder.encode(pending.join("\n") + "\n");
  pending.length = 0;
  let offset = 0;
  try {
    while (offset < bytes.byteLength) {
      offset += Deno.stderr.writeSync(bytes.subarray(offset));
    }
  } catch {
    // stderr is gone (closed pipe): nothing left to tell anyone.
  }
}

/**
 * A {@linkcode Log} that drops every line, for embedding servers in tests.
 *
 * @example
 * ```ts
 * import { silentLog } from "./log.ts";
 *
 * silentLog("nobody reads this");
 * ```
 */
export const silentLog: Log = () => {};

/**
 * Logs the first of a flood of like events at once, then at most one line
 * per interval counting those in between (`... and 41 more in the last 1 s`),
 * so a flood is visible in the log without one line per packet.
 *
 * @example
 * ```ts
 * import { FloodLog } from "./log.ts";
 *
 * const lines: string[] = [];
 * const refusals = new FloodLog((line) => lines.push(line), "refused");
 * refusals.event("127.0.0.1:5000: not allowed");
 * refusals.event("127.0.0.1:5001: not allowed");
 * refusals.flush();
 * if (lines.length !== 2) throw new Error(lines.join("\n"));
 * ```
 */
export class FloodLog {
  readonly #log: Log;
  readonly #label: string;
  readonly #intervalMs: number;
  #windowStart = -Infinity;
  #suppressed = 0;

  /** Logs to `log`, each line starting with `label`, one per `intervalMs`. */
  constructor(log: Log, label: string, intervalMs = 1000) {
    this.#log = log;
    this.#label = label;
    this.#intervalMs = intervalMs;
  }

  /** Records one event; logs it or counts it. */
  event(detail: string): void {
    const now = performance.now();
    if (now - this.#windowStart >= this.#intervalMs) {
      this.flush();
      this.#windowStart = now;
      this.#log(`${this.#label} ${detail}`);
    } else {
      this.#suppressed++;
    }
  }

  /** Logs the count of events not yet logged, if any. */
  flush(): void {
    if (this.#suppressed > 0) {
      this.#log(
        `${this.#label} ${this.#suppressed} more (counted, not logged one by one)`,
      );
      this.#suppressed = 0;
    }
  }
}
