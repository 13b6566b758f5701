/**
 * Server logging: one line per event on stderr, written asynchronously so a
 * stderr nobody reads (a full pipe, a terminal paused with Ctrl-S) costs
 * log lines, counted and reported, never service; batched so that a burst
 * of events costs one `write` instead of one per line; and counted
 * summaries for floods (refusals, drops) instead of a line per packet.
 *
 * @module
 */

import { processMetrics } from "./metrics.ts";

/** Takes one log line, without its newline. */
export type Log = (line: string) => void;

/**
 * Most characters of log lines {@linkcode stderrLog} holds while stderr is
 * not taking them, besides the one write in flight (so at most twice this,
 * 512 KiB of ASCII, in memory); past it, lines are dropped and counted.
 */
export const STDERR_LOG_BUFFER_BYTES = 256 * 1024;

/**
 * How long {@linkcode flushStderrLog} waits for stderr to take a write
 * before it gives up on the rest.
 */
export const STDERR_FLUSH_TIMEOUT_MS = 1000;

/**
 * How long {@linkcode stderrLog} lets lines gather before it writes them,
 * unless many are waiting already. Each `Deno.stderr.write` costs the
 * event loop 25 to 160 µs (a hand-over to Deno's blocking I/O thread, the
 * more the longer it slept): one per line would be most of what a short
 * connection costs; one every few milliseconds is nothing.
 */
export const STDERR_COALESCE_MS = 5;
/** Past this many waiting characters the next write does not wait. */
const COALESCE_BELOW_BYTES = 16 * 1024;

/**
 * A {@linkcode Log} that writes to stderr without ever blocking: lines
 * logged within {@linkcode STDERR_COALESCE_MS} of each other are written
 * together, by one asynchronous write at a time (Deno runs it on a thread
 * of its own, so a stalled stderr stalls only that thread). While stderr takes nothing, up
 * to {@linkcode STDERR_LOG_BUFFER_BYTES} of lines wait; later lines are
 * dropped and counted, and once stderr takes bytes again the log says
 * `N log lines dropped (stderr fell behind: 256 KiB of lines were
 * waiting)` where they were: stderr was not read (a full pipe, a paused
 * terminal), or took lines slower than they came (a slow disk). A source
 * of lines that floods (a program's stderr) is bounded before it gets
 * here, with its own count (`lib/stderr_lines.ts`).
 * Call {@linkcode flushStderrLog} before exiting.
 *
 * @example
 * ```ts
 * import { flushStderrLog, stderrLog } from "./log.ts";
 *
 * stderrLog("listening on 127.0.0.1:15000");
 * await flushStderrLog();
 * ```
 */
export const stderrLog: Log = (line) => {
  if (!keep(line) || writing) return;
  if (pendingBytes >= COALESCE_BELOW_BYTES) startWriting();
  else writeTimer ??= setTimeout(startWriting, STDERR_COALESCE_MS);
};

/**
 * {@linkcode stderrLog} for a client: the same queue, bound and drop count,
 * but its lines are not held back to gather others; they are written
 * within the same turn of the event loop, so that they keep their place
 * among what the program writes on stdout (`connected to ...` before the
 * answer it prints).
 *
 * @example
 * ```ts
 * import { flushStderrLog, stderrLogNow } from "./log.ts";
 *
 * stderrLogNow("connected to 127.0.0.1:15000");
 * await flushStderrLog();
 * ```
 */
export const stderrLogNow: Log = (line) => {
  if (!keep(line)) return;
  urgent = true;
  wakeWriter?.();
  if (writing || startQueued) return;
  clearTimeout(writeTimer);
  writeTimer = undefined;
  startQueued = true;
  queueMicrotask(startWriting);
};

/** Queues `line`, or counts it dropped; whether it was kept. */
function keep(line: string): boolean {
  if (broken) return false;
  const size = line.length + 1;
  if (pendingBytes + size > STDERR_LOG_BUFFER_BYTES) {
    dropped++;
    droppedTotal.value++;
    return false;
  }
  reportDropped();
  pending.push(line);
  pendingBytes += size;
  return true;
}

/** Every line dropped, for the stats (`dropped` restarts at each report). */
const droppedTotal = processMetrics.counter(
  "sockets_log_lines_dropped_total",
  "Log lines dropped because stderr fell behind.",
);
const pending: string[] = [];
let pendingBytes = 0;
let dropped = 0;
/** A write is in flight (the writer loop runs). */
let writing = false;
/** The write that lets lines gather first, until it starts. */
let writeTimer: ReturnType<typeof setTimeout> | undefined;
/** A write starts in this turn of the event loop. */
let startQueued = false;
/** A line waiting is {@linkcode stderrLogNow}'s: write it without delay. */
let urgent = false;
/** Ends the writer's wait for lines to gather. */
let wakeWriter: (() => void) | undefined;
/** stderr failed (closed pipe): nothing more is written. */
let broken = false;
/** When the last write finished (or the writer started), for the flush timeout. */
let lastProgress = 0;
const idleWaiters = new Set<() => void>();
const encoder = new TextEncoder();

/** Puts the drop report where the dropped lines were, once there is room. */
function reportDropped(): void {
  if (dropped === 0) return;
  // "Fell behind", not "not read": a file on a slow disk falls behind a
  // flood too (one that took 1.2 GB in 5 s was reported as "not read").
  const waiting = `${STDERR_LOG_BUFFER_BYTES / 1024} KiB of lines were waiting`;
  const line = `${dropped} log line${
    dropped === 1 ? "" : "s"
  } dropped (stderr fell behind: ${waiting})`;
  dropped = 0;
  pending.push(line);
  pendingBytes += line.length + 1;
}

function startWriting(): void {
  clearTimeout(writeTimer);
  writeTimer = undefined;
  startQueued = false;
  if (writing) return;
  writing = true;
  writeLoop().finally(() => {
    for (const wake of idleWaiters) wake();
    idleWaiters.clear();
  });
}

/**
 * Writes until nothing is pending. `writing` is cleared in the same
 * synchronous step that finds the queue empty: a line logged after that
 * step starts a writer of its own, and one logged before it is in the
 * queue this loop still writes. (Clearing it a promise reaction later, in
 * a `finally`, left a gap in which a line saw `writing` still set, armed
 * no timer, and waited for the next line to be written.)
 */
async function writeLoop(): Promise<void> {
  lastProgress = performance.now();
  while (true) {
    if (broken) {
      writing = false;
      return;
    }
    if (pending.length === 0) {
      // The reader is back and everything kept is out: say what was lost.
      reportDropped();
      if (pending.length === 0) {
        writing = false;
        return;
      }
    }
    const bytes = encoder.encode(pending.join("\n") + "\n");
    pending.length = 0;
    pendingBytes = 0;
    urgent = false;
    try {
      for (let offset = 0; offset < bytes.byteLength;) {
        offset += await Deno.stderr.write(bytes.subarray(offset));
        lastProgress = performance.now();
      }
      if (
        pending.length > 0 && !urgent && pendingBytes < COALESCE_BELOW_BYTES
      ) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(wake, STDERR_COALESCE_MS);
          function wake() {
            clearTimeout(timer);
            wakeWriter = undefined;
            resolve();
          }
          wakeWriter = wake;
        });
      }
    } catch {
      // stderr is gone (closed pipe): nothing left to tell anyone.
      broken = true;
      pending.length = 0;
      pendingBytes = 0;
    }
  }
}

/**
 * Writes every line {@linkcode stderrLog} still holds; await it before
 * exiting. Best effort: resolves once all is written, or once stderr has
 * taken nothing for {@linkcode STDERR_FLUSH_TIMEOUT_MS} (a pipe nobody
 * reads must not hold the exit forever); what is left is then lost.
 *
 * @example
 * ```ts
 * import { flushStderrLog } from "./log.ts";
 *
 * await flushStderrLog();
 * ```
 */
export async function flushStderrLog(
  timeoutMs: number = STDERR_FLUSH_TIMEOUT_MS,
): Promise<void> {
  wakeWriter?.();
  if (!writing && (pending.length > 0 || dropped > 0) && !broken) {
    startWriting();
  }
  while (writing) {
    const left = lastProgress + timeoutMs - performance.now();
    if (left <= 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let wake!: () => void;
    await new Promise<void>((resolve) => {
      wake = resolve;
      idleWaiters.add(wake);
      timer = setTimeout(wake, left);
    });
    idleWaiters.delete(wake);
    clearTimeout(timer);
  }
}

/** Longest a write of {@linkcode stdoutAfterLog} waits for the log. */
export const STDOUT_ORDER_WAIT_MS = 100;

/**
 * `Deno.stdout` for a program that logs with {@linkcode stderrLogNow}: a
 * write waits until the log lines before it are written, so `connected
 * to ...` comes before the answer, and a server's `accepted` line before
 * the payload it prints, even through one pipe (`2>&1`) on a busy machine
 * (the two writes run on threads of their own, and the later one could
 * land first). It waits only while lines are on their way, and at most
 * {@linkcode STDOUT_ORDER_WAIT_MS} for a stderr that takes nothing; with
 * `firstOnly` (a client, which logs before and after its output), only
 * its first write waits.
 *
 * @example
 * ```ts
 * import { stderrLogNow, stdoutAfterLog } from "./log.ts";
 *
 * const stdout = stdoutAfterLog();
 * stderrLogNow("connected to 127.0.0.1:15000");
 * await stdout.write(new TextEncoder().encode("hi\n"));
 * ```
 */
export function stdoutAfterLog(
  options: {
    firstOnly?: boolean;
    out?: { write(p: Uint8Array): Promise<number> };
  } = {},
): { write(p: Uint8Array): Promise<number> } {
  const out = options.out ?? Deno.stdout;
  let waits = true;
  return {
    async write(p) {
      if (waits && (writing || pending.length > 0)) {
        await flushStderrLog(STDOUT_ORDER_WAIT_MS);
      }
      if (options.firstOnly) waits = false;
      return await out.write(p);
    },
  };
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
 * Logs the first of a flood of like events at once, then counts the others:
 * one line per interval while the flood lasts
 * (`refused 41 more (counted, not logged one by one)`), written by a timer
 * that does not keep the process alive, so a flood is visible in the log as
 * it happens, without one line per packet. After a quiet interval the next
 * event is logged in full again.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { FloodLog } from "./log.ts";
 *
 * const lines: string[] = [];
 * const refusals = new FloodLog((line) => lines.push(line), "refused");
 * refusals.event("127.0.0.1:5000: not allowed");
 * refusals.event("127.0.0.1:5001: not allowed");
 * refusals.event("127.0.0.1:5002: not allowed");
 * refusals.flush(); // as a server does when it stops
 * assertEquals(lines, [
 *   "refused 127.0.0.1:5000: not allowed",
 *   "refused 2 more (counted, not logged one by one)",
 * ]);
 * ```
 */
export class FloodLog {
  readonly #log: Log;
  readonly #label: string;
  readonly #intervalMs: number;
  readonly #what: string;
  readonly #now: () => number;
  #windowStart = -Infinity;
  #suppressed = 0;
  #timer?: ReturnType<typeof setTimeout>;

  /**
   * Logs to `log`, each line starting with `label`, one per `intervalMs`;
   * `what`, if given, says what the count counts (`refused 41 more
   * WHAT (counted...)`) where the label alone would not. `clock.now`
   * (default `performance.now`) is for tests.
   */
  constructor(
    log: Log,
    label: string,
    intervalMs = 1000,
    what = "",
    clock: { now?: () => number } = {},
  ) {
    this.#log = log;
    this.#label = label;
    this.#intervalMs = intervalMs;
    this.#what = what && ` ${what}`;
    this.#now = clock.now ?? (() => performance.now());
  }

  /** Records one event; logs it or counts it. */
  event(detail: string): void {
    const now = this.#now();
    if (now - this.#windowStart < this.#intervalMs) {
      this.#count(now);
    } else if (this.#suppressed > 0) {
      // The flood went on and the interval's timer is late (a busy event
      // loop runs timers after the I/O that was ready): do its work now,
      // and count this event as the next interval's, as an on-time timer
      // would have. Which lines a flood makes does not depend on load.
      this.#tick(now);
      this.#count(now);
    } else {
      this.#windowStart = now;
      this.#log(`${this.#label} ${detail}`);
    }
  }

  #count(now: number): void {
    this.#suppressed++;
    if (this.#timer === undefined) {
      this.#timer = setTimeout(
        () => this.#tick(this.#now()),
        this.#windowStart + this.#intervalMs - now,
      );
      Deno.unrefTimer(this.#timer);
    }
  }

  /** End of an interval with events counted: log the count, start another. */
  #tick(now: number): void {
    this.#windowStart = now;
    this.flush();
  }

  /** Logs the count of events not yet logged, if any (servers call it when they stop). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#suppressed > 0) {
      this.#log(
        `${this.#label} ${this.#suppressed} more${this.#what} (counted, not logged one by one)`,
      );
      this.#suppressed = 0;
    }
  }
}
