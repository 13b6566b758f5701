/**
 * A client's request that its target dropped unanswered, sent again to
 * another target (`servers/forward.ts --retry-unanswered`): haproxy's
 * `retry-on empty-response` (an L7 retry) for any stream protocol. Until
 * the target's first byte, the bytes the client sent are kept (at most
 * {@linkcode RETRY_UNANSWERED_MAX_BYTES}, haproxy's default buffer, which
 * bounds its L7 retries too); a target that resets or closes before that
 * byte, after the client sent something, is replaced by the one
 * `redial` gives, and the kept bytes are written to it, so a client in
 * flight on a target that dies never sees the failure. After the first
 * byte, or past the bound, the bytes are dropped and nothing is retried.
 *
 * Only for requests that may be sent twice: the target that dropped the
 * request may have acted on it before it died (written the row, sent the
 * mail), and the next target then acts on it again.
 *
 * It is a {@linkcode SpliceConn} that `splice` (`splice.ts`) takes as its
 * target, so the splice's read and write loop is that of every other pair;
 * the wrapper costs one call per read and write.
 *
 * @module
 */

import { carriedOver, carrierOf } from "./departure.ts";
import { closeQuietly, writeAll } from "./io.ts";
import { withoutOsError } from "./os_error.ts";
import type { SpliceConn } from "./splice.ts";

/**
 * The most bytes of a client's request kept for a retry: a longer request
 * is not retried. haproxy's `tune.bufsize` (16 KiB), which bounds its L7
 * retries the same way.
 */
export const RETRY_UNANSWERED_MAX_BYTES = 16 * 1024;

/** Options for {@linkcode retryUnanswered}. */
export interface UnansweredRetryOptions {
  /**
   * The target after `failed` dropped the request unanswered (`why`:
   * `reset without answering`, `closed without answering`), with no PROXY
   * header or TLS left to do; `undefined`, or a rejection, when there is
   * none (no target left, retries used up): the client then sees the
   * failure, as without a retry.
   */
  redial(why: string): Promise<SpliceConn | undefined>;
  /** Called when the first byte of the answer has come (no retry after it). */
  answered?: () => void;
  /**
   * The most bytes kept for a replay.
   * @default {@linkcode RETRY_UNANSWERED_MAX_BYTES}
   */
  maxBytes?: number;
}

/**
 * `target` as a connection that, until its first byte comes, replaces
 * itself with `options.redial`'s connection when it resets or closes
 * after the client sent something, and writes the client's bytes so far to
 * the new one (see the module doc). Give it to `splice` as the
 * target; its `current` is the connection in use.
 *
 * @example A target that closes unanswered, replaced by an echo
 * ```ts
 * import { retryUnanswered } from "./unanswered_retry.ts";
 *
 * using dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const dropping = dead.accept().then(async (conn) => {
 *   await conn.read(new Uint8Array(16)); // reads the request, then dies
 *   conn.close();
 * });
 * const echoing = echo.accept().then((conn) => conn.readable.pipeTo(conn.writable));
 * const target = retryUnanswered(
 *   await Deno.connect({ hostname: "127.0.0.1", port: dead.addr.port }),
 *   { redial: () => Deno.connect({ hostname: "127.0.0.1", port: echo.addr.port }) },
 * );
 * await target.write(new TextEncoder().encode("ping"));
 * await dropping;
 * const buffer = new Uint8Array(4);
 * const n = await target.read(buffer);
 * target.close();
 * await echoing.catch(() => {});
 * if (new TextDecoder().decode(buffer.subarray(0, n ?? 0)) !== "ping") throw new Error("no echo");
 * ```
 */
export function retryUnanswered(
  target: SpliceConn,
  options: UnansweredRetryOptions,
): RetryingTarget {
  return new RetryingTarget(target, options);
}

/** Why a target's read or write failed, as a retry's reason says it. */
function unansweredReason(error: unknown): string {
  if (
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.NotConnected
  ) {
    return "reset without answering";
  }
  const message = error instanceof Error ? error.message : String(error);
  return `${withoutOsError(message.split("\n")[0])} without answering`;
}

/** The failures a retry can follow; the server's own closing is not one. */
function retryable(error: unknown): boolean {
  return !(error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted);
}

/** What {@linkcode retryUnanswered} returns. */
export class RetryingTarget implements SpliceConn {
  #conn: SpliceConn;
  readonly #redial: (why: string) => Promise<SpliceConn | undefined>;
  readonly #answered?: () => void;
  readonly #maxBytes: number;
  /** The client's bytes so far; `undefined` once answered or too many. */
  #kept: Uint8Array[] | undefined = [];
  #keptBytes = 0;
  /** The retry under way: settles `true` once a new target took over. */
  #swap?: Promise<boolean>;
  /** The write to the target under way (a replay waits for it). */
  #writing?: Promise<unknown>;
  /** No more retries (one was refused): failures pass on as they are. */
  #gaveUp = false;
  #closed = false;
  /** The client finished sending: each target gets its end of stream. */
  #writeShut = false;
  /** The target that has been sent its end of stream. */
  #shutConn?: SpliceConn;

  /** Use {@linkcode retryUnanswered}. */
  constructor(target: SpliceConn, options: UnansweredRetryOptions) {
    this.#conn = target;
    // The splice's departure checks (zero-byte writes) go to the socket
    // under the target in use, a TLS one's included.
    carriedOver(this, { write: (bytes) => carrierOf(this.#conn).write(bytes) });
    this.#redial = options.redial;
    this.#answered = options.answered;
    this.#maxBytes = options.maxBytes ?? RETRY_UNANSWERED_MAX_BYTES;
  }

  /** The connection in use now. */
  get current(): SpliceConn {
    return this.#conn;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    // Answered (or past the bound): the target's own read, nothing kept.
    if (this.#kept === undefined) return this.#conn.read(buffer);
    return this.#readUnanswered(buffer);
  }

  async #readUnanswered(buffer: Uint8Array): Promise<number | null> {
    while (true) {
      const conn = this.#conn;
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch (error) {
        if (await this.#retry(conn, error, false)) continue;
        throw error;
      }
      if (n === null) {
        if (await this.#retry(conn, undefined, false)) continue;
        return null;
      }
      // The first byte of the answer: from here on, no retry.
      this.#kept = undefined;
      this.#keptBytes = 0;
      this.#answered?.();
      return n;
    }
  }

  write(buffer: Uint8Array): Promise<number> {
    if (this.#kept === undefined && !this.#swap) {
      return this.#conn.write(buffer);
    }
    return this.#writeUnanswered(buffer);
  }

  async #writeUnanswered(buffer: Uint8Array): Promise<number> {
    while (true) {
      if (this.#swap) await this.#swap;
      const conn = this.#conn;
      const writing = conn.write(buffer);
      this.#writing = writing;
      let n: number;
      try {
        n = await writing;
      } catch (error) {
        if (await this.#retry(conn, error, true)) continue;
        throw error;
      }
      this.#keep(buffer.subarray(0, n));
      return n;
    }
  }

  /** Keeps what the target took, until the bound. */
  #keep(bytes: Uint8Array): void {
    if (this.#kept === undefined || bytes.byteLength === 0) return;
    if (this.#keptBytes + bytes.byteLength > this.#maxBytes) {
      this.#kept = undefined; // too long to replay: no retry
      this.#keptBytes = 0;
      return;
    }
    this.#kept.push(bytes.slice());
    this.#keptBytes += bytes.byteLength;
  }

  async closeWrite(): Promise<void> {
    this.#writeShut = true;
    if (this.#swap) await this.#swap;
    try {
      await this.#shut(this.#conn);
    } catch (error) {
      // A target that reset: its read says so, and is retried there.
      if (this.#canRetry(error, false)) return;
      throw error;
    }
  }

  /** Sends `conn` its end of stream, once. */
  async #shut(conn: SpliceConn): Promise<void> {
    if (this.#shutConn === conn) return;
    this.#shutConn = conn;
    await conn.closeWrite();
  }

  close(): void {
    this.#closed = true;
    this.#conn.close();
  }

  /**
   * Whether a failure of the target in use (`error`; `undefined` for its
   * end of stream) may be retried: not answered yet, the request kept
   * whole, something asked (`writing`: the failure came on a write, so the
   * client has sent something even if none was kept yet), and not the
   * server's own closing.
   */
  #canRetry(error: unknown, writing: boolean): boolean {
    return !this.#gaveUp && !this.#closed && this.#kept !== undefined &&
      (this.#keptBytes > 0 || writing) &&
      (error === undefined || retryable(error));
  }

  /**
   * `failed` failed with `error` (`undefined`: it closed): whether a new
   * target has taken over, after a retry started here or already under way
   * (a read and a write may both see one failure, and closing the target
   * that failed ends the other's wait on it).
   */
  #retry(
    failed: SpliceConn,
    error: unknown,
    writing: boolean,
  ): Promise<boolean> {
    if (this.#swap) return this.#swap;
    if (failed !== this.#conn) return Promise.resolve(!this.#closed);
    if (this.#canRetry(error, writing)) return this.#startRetry(failed, error);
    // The target's end (or reset) can be read before the write of the
    // client's first bytes to it has been counted: the request is then on
    // its way, and judged once that write is over (a killed target's
    // clients were passed its end with their 64 bytes already sent).
    const pending = this.#writing;
    if (!pending || this.#keptBytes > 0) return Promise.resolve(false);
    return pending.then(() => {}, () => {}).then(() => {
      if (this.#swap) return this.#swap;
      if (failed !== this.#conn) return !this.#closed;
      return this.#canRetry(error, writing)
        ? this.#startRetry(failed, error)
        : false;
    });
  }

  /** Starts replacing `failed`, which failed with `error`. */
  #startRetry(failed: SpliceConn, error: unknown): Promise<boolean> {
    const why = error === undefined
      ? "closed without answering"
      : unansweredReason(error);
    this.#swap = this.#replace(failed, why).finally(() =>
      this.#swap = undefined
    );
    return this.#swap;
  }

  async #replace(failed: SpliceConn, why: string): Promise<boolean> {
    // A write under way may still be taken: its bytes go in the replay.
    await this.#writing?.then(() => {}, () => {});
    while (true) {
      let next: SpliceConn | undefined;
      try {
        next = await this.#redial(why);
      } catch {
        next = undefined;
      }
      if (!next || this.#closed || this.#kept === undefined) {
        if (next) closeQuietly(next);
        // The failure passes on as it came, on the target that failed.
        this.#gaveUp = true;
        return false;
      }
      try {
        for (const bytes of this.#kept) await writeAll(next, bytes);
        if (this.#writeShut) await this.#shut(next);
      } catch (error) {
        closeQuietly(next);
        why = unansweredReason(error);
        continue;
      }
      closeQuietly(failed);
      this.#conn = next;
      return true;
    }
  }
}
