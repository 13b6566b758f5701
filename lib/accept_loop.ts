/**
 * The accept loop of a stream server: it survives accept errors, backing
 * off on those that say the process is short of something (EMFILE,
 * ENOBUFS: 5 ms doubling to 1 s, as Go's `http.Server` does) and not on a
 * client that reset before it was accepted; and it can stop without
 * closing its listener (see {@linkcode AcceptLoop.abandon}).
 *
 * @module
 */

import { FloodLog, type Log } from "./log.ts";

const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/**
 * Accepts from `listener` until it closes (then {@linkcode AcceptLoop.stop})
 * or {@linkcode AcceptLoop.abandon} is called, handing each connection to
 * `onConnection`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { AcceptLoop } from "./accept_loop.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted: Deno.Conn[] = [];
 * const loop = new AcceptLoop(listener, (conn) => accepted.push(conn), () => {});
 * using _client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * while (accepted.length === 0) await new Promise((r) => setTimeout(r, 5));
 * accepted[0].close();
 * listener.close();
 * loop.stop();
 * await loop.done;
 * ```
 */
export class AcceptLoop {
  /** Settles once the loop has ended (or `abandon()` was called). */
  readonly done: Promise<void>;
  readonly #log: Log;
  readonly #prefix: string;
  readonly #abortedEarly: FloodLog;
  #stopRequested = false;
  #stopped?: () => void;
  #backoffTimer?: ReturnType<typeof setTimeout>;
  #wakeBackoff?: () => void;

  /** Starts accepting at once; `log` hears of accept errors. */
  constructor(
    listener: Deno.Listener,
    onConnection: (conn: Deno.Conn) => void,
    log: Log,
    prefix = "",
  ) {
    this.#log = log;
    this.#prefix = prefix;
    this.#abortedEarly = new FloodLog(log, `${prefix}dropped`);
    // One race for the loop's life, not one per accept: racing every
    // accept against a long-lived promise left a reaction on it per
    // connection (about 1.1 KB of heap each).
    this.done = Promise.race([
      this.#run(listener, onConnection),
      new Promise<void>((resolve) => this.#stopped = resolve),
    ]);
  }

  /**
   * Ends the loop once its listener has been closed: the pending accept
   * fails and `done` settles (after the runtime let go of the listener,
   * and of a Unix listener's path). Also ends a backoff.
   */
  stop(): void {
    this.#stopRequested = true;
    clearTimeout(this.#backoffTimer);
    this.#wakeBackoff?.();
  }

  /**
   * Ends the loop without closing the listener: `done` settles at once,
   * and whoever the loop still accepts is closed.
   */
  abandon(): void {
    this.stop();
    this.#stopped?.();
  }

  /** Logs the count of resets before accept not logged yet. */
  flush(): void {
    this.#abortedEarly.flush();
  }

  async #run(
    listener: Deno.Listener,
    onConnection: (conn: Deno.Conn) => void,
  ): Promise<void> {
    let backoffMs = 0;
    while (!this.#stopRequested) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
        backoffMs = 0;
      } catch (error) {
        if (this.#stopRequested || error instanceof Deno.errors.BadResource) {
          break;
        }
        backoffMs = await this.#failed(error as Error, backoffMs);
        continue;
      }
      if (this.#stopRequested) {
        // Stopped with the listener left open: whoever still connects
        // through it is closed.
        conn.close();
        break;
      }
      onConnection(conn);
    }
  }

  /**
   * After a failed `accept`: the backoff before the next one (unchanged
   * when that one client had reset), having waited it.
   */
  async #failed(error: Error, backoffMs: number): Promise<number> {
    if (
      error instanceof Deno.errors.NotConnected ||
      error instanceof Deno.errors.ConnectionAborted ||
      error instanceof Deno.errors.ConnectionReset
    ) {
      // That one client reset before it was accepted (ENOTCONN from
      // getpeername, ECONNABORTED): the next one is fine, so no
      // backoff, which would make every queued client wait.
      this.#abortedEarly.event(
        `a connection reset before it was accepted: ${error.message}`,
      );
      return backoffMs;
    }
    // EMFILE, ENFILE, ENOBUFS...: back off and go on, as Go's
    // http.Server does, instead of dying like the seed's echo server.
    backoffMs = Math.min(
      Math.max(backoffMs * 2, ACCEPT_BACKOFF_MIN_MS),
      ACCEPT_BACKOFF_MAX_MS,
    );
    this.#log(
      `${this.#prefix}accept failed: ${error.message}; retrying in ${backoffMs} ms`,
    );
    await new Promise<void>((resolve) => {
      this.#wakeBackoff = resolve;
      this.#backoffTimer = setTimeout(resolve, backoffMs);
    });
    return backoffMs;
  }
}
