/**
 * Server-side TLS over an already accepted TCP connection, for the server
 * life cycle. `Deno.listenTls` starts the handshake itself the moment it
 * accepts, in a task that holds the socket until the client finishes or
 * leaves: `close()` cannot cut a silent client, and a client refused by
 * `--allow` or `--max-connections` would still be sent a ServerHello. So
 * the servers accept plain TCP, refuse at once what they refuse, and only
 * then start TLS here ({@linkcode startServerTls}: on the runtime's TLS
 * engine over the socket itself, `tls_native.ts`, as fast as
 * `Deno.listenTls`; else through `node:tls` over the connection, the
 * {@linkcode NodeTlsConn} adapter, whose socket also closes when told),
 * handing handlers a {@linkcode Deno.TlsConn}. The adapter also runs the
 * client side of `--insecure`.
 *
 * @module
 */

import { Duplex } from "node:stream";
import {
  connect,
  type ConnectionOptions,
  createSecureContext,
  type SecureContext,
  TLSSocket,
} from "node:tls";
import { carriedOver } from "./departure.ts";
import { connReadable, connWritable, writeAll } from "./io.ts";
import { handshakeAlert } from "./tls_hello.ts";
import { NativeTlsConn } from "./tls_native.ts";
import type { TlsCertificate } from "./tls.ts";

const HIGH_WATER = 64 * 1024;
/** How much of a client's first bytes is kept to read its ClientHello. */
const MAX_HELLO_BYTES = 16 * 1024;
/** How long `close()` lets a close_notify (and data before it) drain. */
const CLOSE_NOTIFY_WAIT_MS = 1000;

/** What {@linkcode duplexOf} asks of the TLS connection it carries. */
interface DuplexHooks {
  /**
   * Resolves when the socket may be read: pausing the TLS socket does not
   * stop `node:tls` reading what is under it, so backpressure goes here.
   */
  gate(): Promise<void>;
  /** Sees each chunk read from the socket. */
  onRead(chunk: Uint8Array): void;
  /** The peer closed its side (the read after this is `null`). */
  onEnd(): void;
  /**
   * Called when `node:tls` destroys the duplex: closes the socket, maybe
   * after a last write (a TLS alert), by calling `close` when done.
   */
  onDestroy(close: () => void): void;
}

/** A Deno.Conn as a node Duplex, so `node:tls` can run over it. */
function duplexOf(conn: Deno.Conn, hooks: DuplexHooks): Duplex {
  const buffer = new Uint8Array(HIGH_WATER);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  };
  return new Duplex({
    allowHalfOpen: true,
    read() {
      hooks.gate().then(() => conn.read(buffer)).then(
        (n) => {
          if (n === null) {
            hooks.onEnd();
            return this.push(null);
          }
          const chunk = buffer.slice(0, n);
          hooks.onRead(chunk);
          this.push(chunk);
        },
        (error) => this.destroy(closed ? undefined : error),
      );
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeAll(conn, chunk).then(() => callback(), (error) => callback(error));
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), () => callback());
    },
    destroy(error, callback) {
      hooks.onDestroy(close);
      callback(error);
    },
  });
}

/**
 * Builds the reusable TLS context once per server.
 *
 * @example
 * ```ts ignore
 * const context = tlsServerContext({ cert, key });
 * ```
 */
export function tlsServerContext(certificate: TlsCertificate): SecureContext {
  return createSecureContext({
    cert: certificate.cert,
    key: certificate.key,
  });
}

/**
 * Checks that `certificate` works by running one handshake in memory (a
 * key that does not match its certificate, or PEM that does not parse,
 * fails here, at start, rather than on every client). Resolves, or rejects
 * with the TLS library's reason.
 *
 * @example
 * ```ts ignore
 * await checkTlsCertificate({ cert, key });
 * ```
 */
export function checkTlsCertificate(
  certificate: TlsCertificate,
): Promise<void> {
  const [a, b] = duplexPair();
  const server = new TLSSocket(a, {
    isServer: true,
    secureContext: tlsServerContext(certificate),
  });
  const client = connect({ socket: b, rejectUnauthorized: false });
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => done(new Error("TLS self-check timed out")),
      5000,
    );
    function done(error?: Error) {
      clearTimeout(timer);
      server.destroy();
      client.destroy();
      if (error) reject(error);
      else resolve();
    }
    server.once("secure", () => done());
    server.once("error", (error: Error) => done(error));
    client.once("error", (error: Error) => done(error));
  });
}

function duplexPair(): [Duplex, Duplex] {
  const make = (): Duplex & { other?: Duplex } => {
    const side: Duplex & { other?: Duplex } = new Duplex({
      read() {},
      write(chunk, _encoding, callback) {
        side.other!.push(chunk);
        callback();
      },
      final(callback) {
        side.other!.push(null);
        callback();
      },
    });
    return side;
  };
  const a = make();
  const b = make();
  a.other = b;
  b.other = a;
  return [a, b];
}

/**
 * Starts the server side of TLS on `conn`, accepted and let in: on the
 * runtime's TLS engine over the socket itself ({@linkcode NativeTlsConn},
 * as fast as `Deno.listenTls`) when this Deno has what that needs, else
 * through `node:tls` ({@linkcode NodeTlsConn}). Either way nothing is sent
 * before the client's first bytes, and `close()` closes the socket at once
 * while the handshake is on.
 *
 * @example
 * ```ts ignore
 * const conn = startServerTls(await listener.accept(), tlsServerContext(certificate));
 * await conn.handshake();
 * ```
 */
export function startServerTls(
  conn: Deno.Conn,
  context: SecureContext,
): Deno.TlsConn {
  return NativeTlsConn.start(conn, context) ??
    new NodeTlsConn(conn, { server: context });
}

/** Which side of TLS a {@linkcode NodeTlsConn} runs. */
export type TlsSide =
  | { server: SecureContext }
  | { client: Omit<ConnectionOptions, "socket"> };

/**
 * One side of a TLS connection over a Deno TCP connection, run by
 * `node:tls`, as a {@linkcode Deno.TlsConn}: the server side for the
 * server life cycle, the client side for `--insecure` (which Deno's own
 * `startTls` cannot do: it always verifies). `handshake()`, `read`, `write` (resolves once
 * the bytes are handed to the socket: backpressure), `closeWrite` (sends
 * close_notify, then shuts down the TCP write side), and `close()`, which
 * closes the TCP socket at once, mid-handshake too.
 *
 * @example
 * ```ts ignore
 * const conn = new NodeTlsConn(await listener.accept(), { server: tlsServerContext(certificate) });
 * await conn.handshake();
 * ```
 */
export class NodeTlsConn implements Deno.TlsConn {
  /** Our address. */
  readonly localAddr: Deno.NetAddr;
  /** The peer's address. */
  readonly remoteAddr: Deno.NetAddr;
  readonly #raw: Deno.Conn;
  readonly #duplex: Duplex;
  readonly #socket: TLSSocket;
  readonly #handshake: Promise<Deno.TlsHandshakeInfo>;
  readonly #chunks: Uint8Array[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #pendingWrites = new Set<(error: Error) => void>();
  #buffered = 0;
  #resumeReading?: () => void;
  #ended = false;
  #error?: Error;
  #closed = false;
  #secure = false;
  /** Server side: the client's first bytes (its ClientHello), until secure. */
  #hello?: Uint8Array;
  /** Server side: the alert owed to a client refused during the handshake. */
  #alert?: Uint8Array;
  #readable?: ReadableStream<Uint8Array<ArrayBuffer>>;
  #writable?: WritableStream<Uint8Array<ArrayBufferLike>>;

  /** Starts TLS over `raw` (which this now owns). */
  constructor(raw: Deno.Conn, side: TlsSide) {
    this.#raw = raw;
    // A zero-byte write must reach the socket to find a reset there.
    carriedOver(this, raw);
    this.localAddr = raw.localAddr as Deno.NetAddr;
    this.remoteAddr = raw.remoteAddr as Deno.NetAddr;
    const isServer = "server" in side;
    if (isServer) this.#hello = new Uint8Array(0);
    this.#duplex = duplexOf(raw, {
      gate: () => this.#readGate(),
      onRead: (chunk) => {
        if (!this.#hello || this.#secure) return;
        if (this.#hello.byteLength < MAX_HELLO_BYTES) {
          const hello = new Uint8Array(
            this.#hello.byteLength + chunk.byteLength,
          );
          hello.set(this.#hello);
          hello.set(chunk, this.#hello.byteLength);
          this.#hello = hello;
        }
      },
      onDestroy: (close) => this.#closeRaw(close),
      // `node:tls` ignores the end of the stream before the handshake is
      // done: a client that connected and left would keep its slot until
      // the handshake timeout.
      onEnd: () => {
        if (!this.#secure) this.#socket.destroy();
      },
    });
    const socket = "server" in side
      ? new TLSSocket(this.#duplex, {
        isServer: true,
        secureContext: side.server,
      })
      : connect({ ...side.client, socket: this.#duplex });
    this.#socket = socket;
    this.#handshake = new Promise((resolve, reject) => {
      socket.once("server" in side ? "secure" : "secureConnect", () => {
        this.#secure = true;
        resolve({ alpnProtocol: null });
      });
      socket.once("error", reject);
      socket.once(
        "close",
        () =>
          reject(
            new Deno.errors.ConnectionReset("closed before the TLS handshake"),
          ),
      );
    });
    this.#handshake.catch(() => {});
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.byteLength;
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", (error: Error) => {
      if (isServer && !this.#secure && !this.#error) {
        this.#alert = handshakeAlert(error, this.#hello!);
      }
      this.#error ??= error;
      this.#failWrites(error);
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#failWrites(
        this.#error ?? new Deno.errors.BrokenPipe("connection closed"),
      );
      this.#wake();
    });
  }

  /**
   * Closes the TCP socket once `node:tls` is done with it. A server whose
   * handshake failed owes the client an alert, which `node:tls` (on
   * rustls, in Deno) does not send: without it the client sees "unexpected
   * eof" where `Deno.listenTls` sends handshake_failure. `node:tls` emits
   * the error only after destroying the socket, hence the wait of one
   * turn, then the alert, then the close.
   */
  #closeRaw(close: () => void): void {
    if (this.#secure || !this.#hello) return close();
    setTimeout(() => {
      const alert = this.#alert;
      this.#hello = undefined;
      if (!alert) return close();
      let timer: ReturnType<typeof setTimeout> | undefined;
      Promise.race([
        this.#raw.write(alert),
        new Promise((resolve) =>
          timer = setTimeout(resolve, CLOSE_NOTIFY_WAIT_MS)
        ),
      ]).catch(() => {}).finally(() => {
        clearTimeout(timer);
        close();
      });
    }, 0);
  }

  /**
   * Resolves when the socket may be read: at once, unless the handler has
   * left HIGH_WATER bytes unread (then it waits until they are read, so a
   * client that writes and never reads stalls instead of filling memory).
   */
  #readGate(): Promise<void> {
    if (this.#buffered < HIGH_WATER || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#resumeReading = resolve);
  }

  #wake(): void {
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  #failWrites(error: Error): void {
    for (const fail of this.#pendingWrites) fail(error);
    this.#pendingWrites.clear();
  }

  /** The TLS version agreed (`TLSv1.3`), once the handshake is done: for the stats. */
  get protocol(): string | undefined {
    try {
      return this.#socket.getProtocol() ?? undefined;
    } catch {
      return undefined;
    }
  }
  /** Resolves once the handshake is done; rejects if it fails. */
  handshake(): Promise<Deno.TlsHandshakeInfo> {
    return this.#handshake;
  }

  /** Reads decrypted bytes into `p`; `null` at the peer's close_notify or EOF. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#closed) throw new Deno.errors.BadResource("connection closed");
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#waiters.add(resolve));
    }
    const chunk = this.#chunks[0];
    const n = Math.min(p.byteLength, chunk.byteLength);
    p.set(chunk.subarray(0, n));
    if (n === chunk.byteLength) this.#chunks.shift();
    else this.#chunks[0] = chunk.subarray(n);
    this.#buffered -= n;
    if (this.#buffered < HIGH_WATER / 2 && this.#resumeReading) {
      const resume = this.#resumeReading;
      this.#resumeReading = undefined;
      resume();
    }
    return n;
  }

  /** Encrypts and sends `p`; resolves once it is handed to the socket. */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("connection closed"));
    }
    if (this.#error) return Promise.reject(this.#error);
    if (p.byteLength === 0) return Promise.resolve(0);
    return new Promise<number>((resolve, reject) => {
      const fail = (error: Error) => reject(error);
      this.#pendingWrites.add(fail);
      this.#socket.write(p, (error?: Error | null) => {
        this.#pendingWrites.delete(fail);
        if (error) reject(error);
        else resolve(p.byteLength);
      });
    });
  }

  /** Sends close_notify and shuts down the write side; reading goes on. */
  closeWrite(): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("connection closed"));
    }
    return new Promise<void>((resolve) => {
      this.#socket.end(() => resolve());
    });
  }

  /**
   * Closes the connection. After a handshake, sends close_notify first (as
   * TLS asks, so the peer can tell the end from a cut), waiting at most
   * {@linkcode CLOSE_NOTIFY_WAIT_MS} for it to leave; otherwise, and for a
   * peer still in its handshake, closes the TCP socket at once.
   */
  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("connection closed");
    this.#closed = true;
    this.#failWrites(new Deno.errors.BadResource("connection closed"));
    this.#wake();
    this.#resumeReading?.();
    const destroy = () => {
      clearTimeout(timer);
      this.#socket.destroy();
      this.#duplex.destroy();
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (this.#secure && !this.#error && !this.#socket.writableEnded) {
      timer = setTimeout(destroy, CLOSE_NOTIFY_WAIT_MS);
      this.#socket.end(destroy);
    } else if (this.#secure && !this.#error && !this.#socket.writableFinished) {
      // closeWrite() already sent close_notify; let it finish leaving.
      timer = setTimeout(destroy, CLOSE_NOTIFY_WAIT_MS);
      this.#socket.once("finish", destroy);
    } else {
      destroy();
    }
  }

  /** Keeps the event loop alive while open (the default). */
  ref(): void {
    this.#raw.ref();
  }

  /** Lets the event loop finish while this is open. */
  unref(): void {
    this.#raw.unref();
  }

  /** The decrypted bytes as a stream. */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#readable ??= connReadable(this, () => this.#closed);
  }

  /** A stream that encrypts and sends what is written to it. */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    return this.#writable ??= connWritable(this, () => this.#closed);
  }

  /** Closes, unless already closed. */
  [Symbol.dispose](): void {
    if (!this.#closed) this.close();
  }
}
