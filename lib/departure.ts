/**
 * Noticing that a peer has gone while nothing reads its socket. A server
 * that joins a client to something else (a program's stdin, a target)
 * stops reading the client while a write to the other side waits: that is
 * its backpressure. A client that resets meanwhile is noticed by nobody,
 * since the kernel reports a reset to a read only once the bytes queued
 * before it have been read, and to a write; and the other side may never
 * read again (`sleep`, a stuck target). {@linkcode watchDeparture} checks
 * such a socket about once a second with a write of zero bytes, which
 * sends nothing and fails once the connection has been reset: a departed
 * client is noticed within {@linkcode DEPARTURE_CHECK_MS} to twice that,
 * from its reset or from the moment its bytes started to wait, whichever
 * comes later, whatever the other side is doing.
 *
 * What it cannot notice: a client that ends with a FIN (a plain close with
 * nothing unread) is, to the server, a client that half-closed and still
 * reads, and is treated as one; Unix sockets carry no resets at all.
 *
 * @module
 */

import type { ByteWriter } from "./io.ts";

/**
 * How often a socket nobody reads is checked: a departed peer is noticed
 * one to two of these after it left (or after its bytes started to wait).
 */
export const DEPARTURE_CHECK_MS = 1000;

/** A watch on one socket, from {@linkcode watchDeparture}. */
export interface DepartureWatch extends Disposable {
  /** Nothing reads the socket from now on (a write elsewhere waits). */
  notReading(): void;
  /** The socket is read again: a read will report its departure itself. */
  reading(): void;
  /**
   * This side has sent its end of stream (`closeWrite`): from now on a
   * check counts only a reset, as a zero-byte write then fails anyway.
   */
  writeShut(): void;
}

const EMPTY = new Uint8Array(0);

/** What each wrapper (a TLS connection) carries its bytes over. */
const sockets = new WeakMap<object, ByteWriter>();

/**
 * Says that `wrapper` (a TLS connection) carries its bytes over `socket`,
 * which a {@linkcode watchDeparture} on `wrapper` checks instead: a
 * zero-byte write to the TLS layer would never reach the socket.
 *
 * @example
 * ```ts
 * import { carriedOver, watchDeparture } from "./departure.ts";
 *
 * const socket = { write: (p: Uint8Array) => Promise.resolve(p.byteLength) };
 * const wrapper = { write: (p: Uint8Array) => Promise.resolve(p.byteLength) };
 * carriedOver(wrapper, socket);
 * using _watch = watchDeparture(wrapper, () => {});
 * ```
 */
export function carriedOver(wrapper: object, socket: ByteWriter): void {
  sockets.set(wrapper, socket);
}

/**
 * What a {@linkcode watchDeparture} on `conn` writes its checks to: the
 * socket {@linkcode carriedOver} named for it, or `conn` itself. For a
 * wrapper whose connection changes (`unanswered_retry.ts`), to name the
 * socket under the one in use.
 *
 * @example
 * ```ts
 * import { carriedOver, carrierOf } from "./departure.ts";
 *
 * const socket = { write: (p: Uint8Array) => Promise.resolve(p.byteLength) };
 * const wrapper = { write: (p: Uint8Array) => Promise.resolve(p.byteLength) };
 * carriedOver(wrapper, socket);
 * if (carrierOf(wrapper) !== socket || carrierOf(socket) !== socket) throw new Error();
 * ```
 */
export function carrierOf(conn: ByteWriter): ByteWriter {
  return sockets.get(conn) ?? conn;
}

class Watch implements DepartureWatch {
  readonly socket: ByteWriter;
  readonly onGone: (error: Error) => void;
  /** The sweep during which it stopped being read. */
  since = 0;
  checking = false;
  shut = false;
  disposed = false;

  constructor(conn: ByteWriter, onGone: (error: Error) => void) {
    this.socket = sockets.get(conn) ?? conn;
    this.onGone = onGone;
  }

  notReading(): void {
    if (this.disposed) return;
    this.since = sweeps;
    idle.add(this);
    ticker ??= startTicker();
  }

  reading(): void {
    idle.delete(this);
  }

  writeShut(): void {
    this.shut = true;
  }

  [Symbol.dispose](): void {
    this.disposed = true;
    idle.delete(this);
  }

  check(): void {
    this.checking = true;
    let writing: Promise<number>;
    try {
      writing = this.socket.write(EMPTY);
    } catch (error) {
      writing = Promise.reject(error);
    }
    writing.then(
      () => this.checking = false,
      (error: Error) => {
        this.checking = false;
        if (this.disposed || !idle.has(this) || !departed(error, this.shut)) {
          return;
        }
        idle.delete(this);
        // EPIPE or ECONNRESET: either way the connection was reset.
        this.onGone(
          new Deno.errors.ConnectionReset("Connection reset by peer", {
            cause: error,
          }),
        );
      },
    );
  }
}

/**
 * Whether a zero-byte write's failure means the peer is gone: any failure
 * while our side still sends (a reset makes it fail, a half-close by the
 * peer does not), only a reset once it has shut (then every such write
 * fails with EPIPE, and only a pending reset turns that into ECONNRESET).
 * Never a socket the server closed itself: its owner knows.
 */
function departed(error: Error, shut: boolean): boolean {
  if (
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted
  ) {
    return false;
  }
  return !shut || error instanceof Deno.errors.ConnectionReset;
}

/** Watches not being read, checked at each sweep. */
const idle = new Set<Watch>();
let sweeps = 0;
let ticker: ReturnType<typeof setInterval> | undefined;

function startTicker(): ReturnType<typeof setInterval> {
  const id = setInterval(sweep, DEPARTURE_CHECK_MS);
  // A server's own work keeps the process alive, not this.
  Deno.unrefTimer(id);
  return id;
}

/**
 * Checks each socket not read since before the last sweep (so for a whole
 * interval at least: a write that waits a moment costs nothing), and
 * stops ticking once none is left.
 */
function sweep(): void {
  sweeps++;
  if (idle.size === 0) {
    clearInterval(ticker);
    ticker = undefined;
    return;
  }
  for (const watch of idle) {
    if (watch.since < sweeps - 1 && !watch.checking) watch.check();
  }
}

/**
 * Watches `conn` for its peer's departure while it is not read: between
 * `notReading()` and `reading()`, it is checked every
 * {@linkcode DEPARTURE_CHECK_MS} (a zero-byte write) once it has gone
 * unread for a whole interval, and `onGone` is called once, with a
 * `ConnectionReset` (the check's error as its cause), when the peer has
 * reset the connection. Dispose of it
 * when the connection ends. Costs nothing while the socket is read: no
 * timer per connection, one shared ticker while any socket waits.
 *
 * @example A forwarder's loop, blocked writing to a target
 * ```ts ignore
 * import { watchDeparture } from "./departure.ts";
 *
 * using watch = watchDeparture(client, () => client.close());
 * for (let n; (n = await client.read(buffer)) !== null;) {
 *   watch.notReading();
 *   await writeAll(target, buffer.subarray(0, n));
 *   watch.reading();
 * }
 * ```
 */
export function watchDeparture(
  conn: ByteWriter,
  onGone: (error: Error) => void,
): DepartureWatch {
  return new Watch(conn, onGone);
}
