/**
 * What the two server-side TLS connection classes share (the runtime's
 * engine driven directly, `tls_native.ts`, and the `node:tls` adapter,
 * `tls_node.ts`): their buffer bound, how long a close waits for what is
 * owed, an alert sent before a cut, and the `Deno.Conn` face built on
 * `read`, `write` and `close` (streams and disposal).
 *
 * @module
 */

import { connReadable, connWritable } from "./io.ts";

/**
 * Decrypted bytes a connection holds unread before it stops reading its
 * socket; bytes it queues behind the write on its way before `write` waits.
 */
export const TLS_HIGH_WATER = 64 * 1024;

/** How long a close lets data owed, then close_notify (or an alert), drain. */
export const CLOSE_NOTIFY_WAIT_MS = 1000;

/**
 * Writes `bytes` (an alert record) to the socket under the TLS engine as
 * they are, waiting at most {@linkcode CLOSE_NOTIFY_WAIT_MS} (a peer that
 * reads nothing must not hold the connection), then calls `then`, whether
 * the write went through or failed.
 *
 * @example
 * ```ts
 * import { sendThen } from "./tls_conn.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const server = await listener.accept();
 * await new Promise<void>((done) =>
 *   sendThen(server, new Uint8Array([21, 3, 3, 0, 2, 2, 40]), () => {
 *     server.close();
 *     done();
 *   })
 * );
 * ```
 */
export function sendThen(
  raw: Deno.Conn,
  bytes: Uint8Array,
  then: () => void,
): void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  Promise.race([
    raw.write(bytes),
    new Promise((resolve) => timer = setTimeout(resolve, CLOSE_NOTIFY_WAIT_MS)),
  ]).catch(() => {}).finally(() => {
    clearTimeout(timer);
    then();
  });
}

/**
 * The part of `Deno.TlsConn` that follows from `read`, `write`,
 * `closeWrite` and `close`: the streams (made on first use) and disposal.
 * A subclass sets `closed` when it closes.
 */
export abstract class TlsConnStreams {
  /** Closed (by `close()` or a cut): reads and writes fail. */
  protected closed = false;
  #readable?: ReadableStream<Uint8Array<ArrayBuffer>>;
  #writable?: WritableStream<Uint8Array<ArrayBufferLike>>;

  /** Decrypted bytes into `p`; `null` at the end. */
  abstract read(p: Uint8Array): Promise<number | null>;
  /** Encrypts and sends (some of) `p`. */
  abstract write(p: Uint8Array): Promise<number>;
  /** Sends close_notify: the peer reads the end. */
  abstract closeWrite(): Promise<void>;
  /** Closes the connection. */
  abstract close(): void;

  /** The decrypted bytes as a stream. */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#readable ??= connReadable(this, () => this.closed);
  }

  /** A stream that encrypts and sends what is written to it. */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    return this.#writable ??= connWritable(this, () => this.closed);
  }

  /** Closes, unless already closed. */
  [Symbol.dispose](): void {
    if (!this.closed) this.close();
  }
}
