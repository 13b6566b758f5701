/**
 * Joining two stream connections, as a forwarder does for each client:
 * bytes copied both ways, byte-exact, each direction half-closed on its
 * own, with backpressure and a fixed amount of memory per pair.
 *
 * @module
 */

import { type DepartureWatch, watchDeparture } from "./departure.ts";
import { type ByteReader, type ByteWriter, closeQuietly } from "./io.ts";
import { withoutOsError } from "./os_error.ts";

// For users of this module (the `./splice` export): the types its
// functions take.
export type { ByteReader, ByteWriter } from "./io.ts";

/** A stream connection as {@linkcode splice} needs it (any `Deno.Conn`). */
export interface SpliceConn extends ByteReader, ByteWriter {
  /** Half-closes: sends end of stream, keeps reading. */
  closeWrite(): Promise<void>;
  /** Closes both ways at once. */
  close(): void;
}

/** What a {@linkcode splice} moved, and why it ended. */
export interface SpliceResult {
  /** Bytes read from the client and written to the target. */
  bytesToTarget: number;
  /** Bytes read from the target and written to the client. */
  bytesToClient: number;
  /**
   * Why it ended, for a log line: `client closed first` or `target closed
   * first` (both sides finished, in that order), `client reset`, `target
   * reset` (a read or a write failed: the side reset the connection, or
   * closed it and then reset what was still sent), `cut by the server`
   * (the client's connection was closed under it: an idle timeout, a
   * shutdown), or `client: REASON` / `target: REASON` for anything else.
   */
  end: string;
  /** `true` when both sides finished sending in order (no reset, no cut). */
  clean: boolean;
}

/** Options for {@linkcode splice}. */
export interface SpliceOptions {
  /** Called each time bytes have moved (to restart an idle timeout); must not throw. */
  onActivity?: () => void;
  /**
   * The largest buffer each direction grows to, in bytes. Default
   * {@linkcode SPLICE_BUFFER_BYTES}.
   */
  maxBufferBytes?: number;
  /**
   * Closes a connection with a reset (RST) instead of a FIN, when one
   * side has reset: the other is then closed with this, so that its peer
   * sees the reset too, as it would have without a forwarder in between
   * (e.g. `closeWithReset` from `keepalive.ts`). Default: both are closed
   * as usual, and the other side's peer sees its end of stream, as
   * haproxy's clients do.
   */
  closeWithReset?: (conn: SpliceConn) => void;
}

/**
 * The buffer each direction of a {@linkcode splice} starts with: an idle
 * pair holds two of these. A read that fills it earns the large one. An
 * idle pair's memory is then mostly Deno's two sockets: measured
 * in-process after GC, 4,000 idle pairs behind `servers/forward.ts`, 6.1
 * KB of JS heap a pair, of which 4.5 KB is what two bare sockets with a
 * pending read take (`bench/idle_pair_floor.ts`); with 64 KiB buffers
 * from the start, as the bare forwarder in `bench/minimal_forward.ts` has,
 * `deno task bench` measures 117 KB of RSS a pair.
 */
export const SPLICE_IDLE_BUFFER_BYTES = 256;

/**
 * The largest buffer each direction of a {@linkcode splice} uses: a pair
 * holds at most two (plus what the kernel's socket buffers hold). Measured
 * (`deno task bench`, 64 streams): with it a forwarder moves about 1.4 to
 * 1.8 times what haproxy's default 16 KiB buffers do, for half its CPU per
 * MB.
 */
export const SPLICE_BUFFER_BYTES = 64 * 1024;

/**
 * The idle buffers of pairs that ended, kept for the next ones (at most
 * {@linkcode SPARE_IDLE_BUFFERS}): an `ArrayBuffer` made and collected
 * for each direction of each pair cost 1 to 2 µs a pair, of a short
 * connection's ~70 µs of CPU (`deno task bench --family balance`). One
 * holds both directions' idle buffers; a pair gives it back once neither
 * direction reads or writes any more.
 */
const spareIdleBuffers: ArrayBuffer[] = [];
const SPARE_IDLE_BUFFERS = 256;

type Side = "client" | "target";

/**
 * The words for a failure of `side`'s connection, as a closing line says
 * them: `cut by the server`, `client reset`, `target dead (keepalive
 * probes unanswered)`, `client: REASON`; `writing` when a write failed.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { describeFailure } from "./splice.ts";
 *
 * assertEquals(describeFailure("client", new Deno.errors.ConnectionReset("reset"), false), "client reset");
 * ```
 */
export function describeFailure(
  side: "client" | "target",
  error: unknown,
  writing: boolean,
): string {
  if (
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted
  ) {
    return "cut by the server";
  }
  // A write to a side that has closed (or reset) fails with EPIPE once its
  // kernel answered the write with a reset: a reset too, seen by writing.
  if (
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    (writing && error instanceof Deno.errors.NotConnected)
  ) {
    return `${side} reset`;
  }
  if (error instanceof Deno.errors.TimedOut) {
    return `${side} dead (keepalive probes unanswered)`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `${side}: ${withoutOsError(message.split("\n")[0])}`;
}

/**
 * Copies `client` to `target` and `target` to `client` until both have
 * finished, then closes both: it owns them once called.
 *
 * Each direction is one loop, read then write, over one buffer of its own
 * (no queue): a side that does not read stops the other side being read
 * (backpressure), and a pair never holds more than two buffers of
 * `maxBufferBytes`. When one side finishes sending, the other is
 * half-closed (`closeWrite`) and the other direction goes on, so a client
 * that shuts down its writing still gets the target's whole answer, and
 * the reverse. A failure of either side (a reset, a write to a side that
 * is gone, the server closing the client under it) closes both at once.
 * It never rejects: the result says how it ended.
 *
 * @example An echo target, through a pair of connections
 * ```ts
 * import { splice } from "./splice.ts";
 *
 * using front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using back = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const echoing = back.accept().then(async (conn) => {
 *   await conn.readable.pipeTo(conn.writable); // closes it when done
 * });
 * const forwarding = front.accept().then(async (client) => {
 *   const target = await Deno.connect({ hostname: "127.0.0.1", port: back.addr.port });
 *   return await splice(client, target);
 * });
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
 * await conn.write(new TextEncoder().encode("ping"));
 * await conn.closeWrite();
 * const reply = await new Response(conn.readable).text();
 * const result = await forwarding;
 * await echoing;
 * if (reply !== "ping" || result.bytesToClient !== 4) throw new Error(reply);
 * ```
 */
export function splice(
  client: SpliceConn,
  target: SpliceConn,
  options: SpliceOptions = {},
): Promise<SpliceResult> {
  return new Promise((resolve) => {
    const idle = spareIdleBuffers.pop() ??
      new ArrayBuffer(2 * SPLICE_IDLE_BUFFER_BYTES);
    const pair = new Pair(client, target, options, resolve, idle);
    new Direction(pair, client, target, "client", idle, 0).read();
    new Direction(pair, target, client, "target", idle, 1).read();
  });
}

/**
 * What both directions of a {@linkcode splice} share: the connections, the
 * result, and how many directions are still running.
 */
class Pair {
  readonly result: SpliceResult = {
    bytesToTarget: 0,
    bytesToClient: 0,
    end: "",
    clean: false,
  };
  readonly maxBuffer: number;
  readonly onActivity?: () => void;
  readonly closeWithReset?: (conn: SpliceConn) => void;
  failed = false;
  firstDone?: Side;
  #running = 2;
  /** Per side, made at its first write: see {@linkcode Pair.watch}. */
  #watches: Partial<Record<Side, DepartureWatch>> = {};
  /** The sides this has half-closed (sent end of stream to). */
  #shut: Partial<Record<Side, true>> = {};

  constructor(
    readonly client: SpliceConn,
    readonly target: SpliceConn,
    options: SpliceOptions,
    readonly resolve: (result: SpliceResult) => void,
    /** Both directions' idle buffers: given back once the pair is over. */
    readonly idleBuffers: ArrayBuffer,
  ) {
    this.maxBuffer = Math.max(
      SPLICE_IDLE_BUFFER_BYTES,
      options.maxBufferBytes ?? SPLICE_BUFFER_BYTES,
    );
    this.onActivity = options.onActivity;
    this.closeWithReset = options.closeWithReset;
  }

  /**
   * The first failure ends both directions: closing both connections ends
   * the other direction's pending read or write.
   */
  fail(side: Side, error: unknown, writing: boolean): void {
    if (this.failed) return;
    this.failed = true;
    this.result.end = describeFailure(side, error, writing);
    const [failed, other] = side === "client"
      ? [this.client, this.target]
      : [this.target, this.client];
    closeQuietly(failed);
    // A reset is passed on as one, where the caller can.
    if (this.result.end === `${side} reset` && this.closeWithReset) {
      this.closeWithReset(other);
    } else {
      closeQuietly(other);
    }
  }

  /**
   * The watch on `side` for the time nothing reads it (its direction waits
   * on a write to the other side, which may never read again): a reset
   * there fails the pair within `DEPARTURE_CHECK_MS` to twice that.
   */
  watch(side: Side): DepartureWatch {
    let watch = this.#watches[side];
    if (!watch) {
      watch = watchDeparture(
        side === "client" ? this.client : this.target,
        (error) => this.fail(side, error, false),
      );
      if (this.#shut[side]) watch.writeShut();
      this.#watches[side] = watch;
    }
    return watch;
  }

  /** This is about to send `side` its end of stream. */
  shutting(side: Side): void {
    this.#shut[side] = true;
    this.#watches[side]?.writeShut();
  }

  /** One direction is over (finished or failed); the splice, once both are. */
  stopped(): void {
    if (--this.#running > 0) return;
    this.#watches.client?.[Symbol.dispose]();
    this.#watches.target?.[Symbol.dispose]();
    if (!this.failed) {
      this.result.clean = true;
      this.result.end = `${this.firstDone} closed first`;
    }
    closeQuietly(this.client);
    closeQuietly(this.target);
    if (spareIdleBuffers.length < SPARE_IDLE_BUFFERS) {
      spareIdleBuffers.push(this.idleBuffers);
    }
    this.resolve(this.result);
  }
}

/**
 * One direction of a {@linkcode splice}: reads `from` into its buffer,
 * writes all of it to `to`, and reads again, until `from` ends (then
 * half-closes `to`) or either fails.
 *
 * Callbacks, not an `async` loop: an idle pair is then two pending reads
 * and these few objects. An `async` function waiting in a read keeps its
 * generator, its registers and its resume closures alive, and so did
 * `splice` waiting for both: measured in-process after GC with 4,000 idle
 * pairs behind `servers/forward.ts`, 7.9 KB of JS heap a pair with the
 * two loops, 6.5 KB with these.
 */
class Direction {
  #buffer: Uint8Array;
  /** Bytes in `#buffer` from the last read, and how many are written. */
  #length = 0;
  #written = 0;

  /** Starts with the `index`th idle buffer of `idleBuffers`. */
  constructor(
    readonly pair: Pair,
    readonly from: SpliceConn,
    readonly to: SpliceConn,
    readonly side: Side,
    idleBuffers: ArrayBuffer,
    index: number,
  ) {
    this.#buffer = new Uint8Array(
      idleBuffers,
      index * SPLICE_IDLE_BUFFER_BYTES,
      SPLICE_IDLE_BUFFER_BYTES,
    );
  }

  get #toSide(): Side {
    return this.side === "client" ? "target" : "client";
  }

  read(): void {
    let reading: Promise<number | null>;
    try {
      reading = this.from.read(this.#buffer);
    } catch (error) {
      this.#readFailed(error);
      return;
    }
    reading.then(
      (n) => {
        if (n === null) this.#ended();
        else {
          this.pair.watch(this.side).notReading();
          this.#write(n, 0);
        }
      },
      (error) => this.#readFailed(error),
    );
  }

  #write(length: number, written: number): void {
    const buffer = this.#buffer;
    this.#length = length;
    this.#written = written;
    let writing: Promise<number>;
    try {
      // One write nearly always takes it all; more only when it does not.
      writing = this.to.write(
        written === 0 && length === buffer.byteLength
          ? buffer
          : buffer.subarray(written, length),
      );
    } catch (error) {
      this.#writeFailed(error);
      return;
    }
    writing.then(
      (n) => this.#wrote(n),
      (error) => this.#writeFailed(error),
    );
  }

  #wrote(n: number): void {
    const length = this.#length;
    const written = this.#written + n;
    if (written < length) {
      this.#write(length, written);
      return;
    }
    const pair = this.pair;
    if (this.side === "client") pair.result.bytesToTarget += length;
    else pair.result.bytesToClient += length;
    pair.onActivity?.();
    pair.watch(this.side).reading();
    if (length === this.#buffer.byteLength && length < pair.maxBuffer) {
      this.#buffer = new Uint8Array(pair.maxBuffer);
    }
    this.read();
  }

  #readFailed(error: unknown): void {
    this.pair.fail(this.side, error, false);
    this.pair.stopped();
  }

  #writeFailed(error: unknown): void {
    this.pair.fail(this.#toSide, error, true);
    this.pair.stopped();
  }

  /** `from` finished sending: half-close `to`, the other direction goes on. */
  #ended(): void {
    const pair = this.pair;
    pair.firstDone ??= this.side;
    if (pair.failed) {
      pair.stopped();
      return;
    }
    let closing: Promise<void>;
    pair.shutting(this.#toSide);
    try {
      closing = this.to.closeWrite();
    } catch (error) {
      closing = Promise.reject(error);
    }
    closing.then(() => pair.stopped(), (error) => {
      // Already gone (reset, closed): the other direction says how.
      if (!(error instanceof Deno.errors.NotConnected)) {
        pair.fail(this.#toSide, error, true);
      }
      pair.stopped();
    });
  }
}
