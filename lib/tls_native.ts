/**
 * Server-side TLS over an accepted TCP connection at the runtime's speed.
 * The server accepts plain TCP and refuses what it refuses before any TLS
 * byte (see `tls_node.ts`); an accepted connection's socket is then handed
 * to the TLS engine that runs `node:tls` in Deno (rustls, in Rust), driven
 * directly: it reads the socket and encrypts straight into it, and this
 * class only moves cleartext between that engine and the handler. No
 * `node:stream` Duplex or `TLSSocket` in between; bulk bytes are read from
 * the socket only while a read waits, as `Deno.Conn` does, and a large
 * read gets its bytes decrypted straight into its buffer (others land in a buffer shared by
 * all connections: nothing allocated per read); writes are handed over at
 * once, and batched while one is on its way.
 *
 * The engine and the socket handle are Deno internals (`process.binding`,
 * the `TLSWrap` class behind `TLSSocket`, a `Deno.Conn`'s resource id):
 * {@linkcode nativeTlsRuntime} checks that each is there and what it needs
 * does what it should, and the server falls back to the `node:tls` adapter
 * of `tls_node.ts` when not (tests/tls_native_test.ts says which runs).
 *
 * @module
 */

import process from "node:process";
import { Duplex } from "node:stream";
import { type SecureContext, TLSSocket } from "node:tls";
import { carriedOver } from "./departure.ts";
import { closeQuietly, connReadable, connWritable } from "./io.ts";
import { legacyHelloAlert } from "./tls_hello.ts";

/**
 * Decrypted bytes a connection holds unread before it stops reading its
 * socket; bytes it queues behind the write on its way before `write` waits.
 */
const HIGH_WATER = 64 * 1024;
/** How long `close()` lets data owed, then close_notify, drain. */
const CLOSE_NOTIFY_WAIT_MS = 1000;
/** Largest read (and decrypted chunk) handed over at once. */
const BUFFER_SIZE = 64 * 1024;
/** A read into a buffer this large gets its bytes from the engine directly. */
const DIRECT_READ_MIN = 16 * 1024;

// A native handle of the runtime: untyped.
// deno-lint-ignore no-explicit-any
type Handle = any;

/** The runtime's pieces this needs; see {@linkcode nativeTlsRuntime}. */
export interface NativeTlsRuntime {
  /** Builds a TCP socket handle (`new TCP(type)`). */
  readonly TCP: new (type: number) => Handle;
  /** `TCP`'s type for a connected socket. */
  readonly socketType: number;
  /** Builds a TLS engine (`new TLSWrap(kind, provider)`). */
  readonly TLSWrap: new (kind: number, provider: number) => Handle;
  /** Where a read callback finds its byte count (or negative error). */
  readonly state: Int32Array;
  readonly kReadBytesOrError: number;
  readonly kArrayBufferOffset: number;
  /** The read "error" that means end of stream. */
  readonly eof: number;
  /** A libuv error number's name, for messages. */
  readonly errname: (code: number) => string;
}

let runtime: NativeTlsRuntime | null | undefined;

/**
 * The runtime's native TLS pieces, or `null` when this Deno does not have
 * them all (then the server uses the `node:tls` adapter). Looked up once.
 */
export function nativeTlsRuntime(
  context: SecureContext,
): NativeTlsRuntime | null {
  if (runtime !== undefined) return runtime;
  runtime = null;
  try {
    const binding =
      (process as unknown as { binding(name: string): Handle }).binding;
    const tcpWrap = binding("tcp_wrap");
    const streamWrap = binding("stream_wrap");
    const uv = binding("uv");
    const TCP = tcpWrap.TCP;
    // `TLSSocket` over a JS stream holds the engine as its handle.
    const probe = new TLSSocket(
      new Duplex({ read() {}, write: (_chunk, _encoding, done) => done() }),
      { isServer: true, secureContext: context },
    );
    probe.on("error", () => {});
    const TLSWrap = (probe as unknown as { _handle?: Handle })._handle
      ?.constructor;
    probe.destroy();
    const methods = (object: Handle, names: string[]) =>
      names.every((name) => typeof object?.prototype?.[name] === "function");
    if (
      methods(TCP, [
        "openFromRid",
        "readStart",
        "readStop",
        "useUserBuffer",
        "setNoDelay",
        "close",
        "ref",
        "unref",
      ]) &&
      methods(TLSWrap, [
        "initServerTls",
        "attach",
        "setHandle",
        "useUserBuffer",
        "start",
        "readStart",
        "receive",
        "emitEof",
        "writeBuffer",
        "writev",
        "shutdown",
        "destroySsl",
      ]) &&
      streamWrap.streamBaseState instanceof Int32Array &&
      typeof streamWrap.kReadBytesOrError === "number" &&
      typeof streamWrap.kArrayBufferOffset === "number" &&
      typeof tcpWrap.constants?.SOCKET === "number" &&
      typeof uv.UV_EOF === "number" &&
      typeof uv.errname === "function" &&
      typeof (context as unknown as { context?: object }).context ===
        "object"
    ) {
      runtime = {
        TCP,
        socketType: tcpWrap.constants.SOCKET,
        TLSWrap,
        state: streamWrap.streamBaseState,
        kReadBytesOrError: streamWrap.kReadBytesOrError,
        kArrayBufferOffset: streamWrap.kArrayBufferOffset,
        eof: uv.UV_EOF,
        errname: (code) => {
          try {
            return uv.errname(code);
          } catch {
            return String(code);
          }
        },
      };
    }
  } catch {
    // Not this runtime: the adapter it is.
  }
  return runtime;
}

/** A `Deno.Conn`'s resource id (internal since Deno 2). */
function ridOf(conn: Deno.Conn): number | undefined {
  for (const symbol of Object.getOwnPropertySymbols(conn)) {
    if (symbol.description === "Deno.internal.rid") {
      const rid = (conn as unknown as Record<symbol, unknown>)[symbol];
      return typeof rid === "number" ? rid : undefined;
    }
  }
  return undefined;
}

/** What the engine's `initServerTls` takes, built once per context. */
const engineContexts = new WeakMap<SecureContext, object>();
function engineContext(context: SecureContext): object {
  let value = engineContexts.get(context);
  if (!value) {
    value = {
      ...(context as unknown as { context: object }).context,
      rejectUnauthorized: false,
      requestCert: false,
    };
    engineContexts.set(context, value);
  }
  return value;
}

// Every read lands in one of these and is consumed before the callback
// returns (the engine copies what it is given; cleartext is copied to the
// reader or its queue), so all connections share them: nothing allocated
// per read.
let encrypted: Uint8Array | undefined;
let cleartext: Uint8Array | undefined;

/**
 * `buffer.subarray(0, n)`, reusing the last view of each buffer while `n`
 * repeats (a conversation's messages): no allocation per message.
 */
const views = new WeakMap<Uint8Array, Uint8Array>();
function head(buffer: Uint8Array, n: number): Uint8Array {
  const last = views.get(buffer);
  if (last?.byteLength === n) return last;
  const view = buffer.subarray(0, n);
  views.set(buffer, view);
  return view;
}

/** A read waiting for bytes. */
interface Reader {
  p: Uint8Array;
  resolve(n: number | null): void;
  reject(error: Error): void;
}

/** A write waiting for room in the queue. */
interface Waiter {
  resolve(): void;
  reject(error: Error): void;
}

/**
 * The server side of TLS over an accepted TCP connection, run by the
 * runtime's TLS engine on the connection's own socket, as a
 * {@linkcode Deno.TlsConn}: `handshake()`, `read` (bulk bytes are read
 * from the socket only while a read waits), `write` (resolves once
 * the bytes are the engine's; while one write is on its way, the next are
 * queued, up to 64 KiB, and sent together), `closeWrite` (close_notify,
 * then the TCP write side), and `close()`, which closes the socket at
 * once, mid-handshake too. Construct with {@linkcode NativeTlsConn.start}.
 *
 * A client whose first record is a ClientHello offering nothing newer than
 * TLS 1.1 gets protocol_version (as OpenSSL servers say) in a record of its
 * own version, without the engine seeing it; other refusals get the
 * engine's own alert (handshake_failure, illegal_parameter, decode_error).
 */
export class NativeTlsConn implements Deno.TlsConn {
  /** Our address. */
  readonly localAddr: Deno.NetAddr;
  /** The peer's address. */
  readonly remoteAddr: Deno.NetAddr;
  readonly #raw: Deno.Conn;
  readonly #rt: NativeTlsRuntime;
  readonly #tcp: Handle;
  readonly #tls: Handle;
  readonly #handshake: Promise<Deno.TlsHandshakeInfo>;
  #settle?: { resolve(): void; reject(error: Error): void };
  /** The client's first bytes, held until they are known not to be refused. */
  #hello?: Uint8Array = new Uint8Array(0);
  #secure = false;
  #closed = false;
  #destroyed = false;
  #ended = false;
  #error?: Error;
  // Reading: decrypted bytes not yet read, and the read waiting for them.
  readonly #chunks: Uint8Array[] = [];
  /** Bytes in #chunks. */
  #held = 0;
  /** Whether the socket is being read: see #readIfWanted. */
  #reading = true;
  /** Reads waiting for bytes, served in order. */
  readonly #readers: Reader[] = [];
  /** The engine decrypts straight into the waiting read's buffer. */
  #direct = false;
  // Writing: one write with the engine at a time; the rest wait here.
  #writing = false;
  readonly #queue: Uint8Array[] = [];
  #queued = 0;
  readonly #waiters: Waiter[] = [];
  /** Called when the last write is out (or failed). */
  readonly #idle: (() => void)[] = [];
  #shutdown = false;
  readonly #request = {
    oncomplete: (status: number) => {
      try {
        this.#written(status);
      } catch (error) {
        this.#crashed(error);
      }
    },
  };
  #readable?: ReadableStream<Uint8Array<ArrayBuffer>>;
  #writable?: WritableStream<Uint8Array<ArrayBufferLike>>;

  /**
   * Starts TLS over `raw` (which this now owns), or returns `undefined`
   * (`raw` untouched) when the runtime cannot: then use the adapter.
   */
  static start(
    raw: Deno.Conn,
    context: SecureContext,
  ): NativeTlsConn | undefined {
    const rt = nativeTlsRuntime(context);
    const rid = ridOf(raw);
    if (!rt || rid === undefined) return undefined;
    const tcp = new rt.TCP(rt.socketType);
    // The socket's own descriptor stays with `raw` (closing it would shut
    // the socket's write side): the handle gets a duplicate. So a TLS
    // connection holds two descriptors (see `descriptors.ts`), and this
    // runtime offers no way to one: `openFromRid` only duplicates
    // (ext/node/ops/tcp_wrap.rs), a `Deno.Conn`'s resource sends a FIN
    // when dropped (tokio's write half shuts the socket down), and no op
    // moves its socket into a handle. Only accepting with the handle's own
    // listener would, which the server's plain-TCP checks before TLS (the
    // PROXY header, access, limits) do not allow today.
    if (tcp.openFromRid(rid) !== 0) {
      tcp.close();
      return undefined;
    }
    const tls = new rt.TLSWrap(1, 0);
    if (
      tls.initServerTls(engineContext(context)) !== 0 ||
      tls.attach(tcp) !== 0
    ) {
      tls.destroySsl();
      tcp.close();
      return undefined;
    }
    return new NativeTlsConn(raw, rt, tcp, tls);
  }

  private constructor(
    raw: Deno.Conn,
    rt: NativeTlsRuntime,
    tcp: Handle,
    tls: Handle,
  ) {
    this.#raw = raw;
    // A zero-byte write must reach the socket to find a reset there.
    carriedOver(this, raw);
    this.#rt = rt;
    this.#tcp = tcp;
    this.#tls = tls;
    this.localAddr = raw.localAddr as Deno.NetAddr;
    this.remoteAddr = raw.remoteAddr as Deno.NetAddr;
    this.#handshake = new Promise((resolve, reject) => {
      this.#settle = {
        resolve: () => resolve({ alpnProtocol: null }),
        reject,
      };
    });
    this.#handshake.catch(() => {});
    encrypted ??= new Uint8Array(BUFFER_SIZE);
    cleartext ??= new Uint8Array(BUFFER_SIZE);
    tcp.useUserBuffer(encrypted);
    // An exception thrown back into the runtime from these callbacks would
    // end the process: a fault fails this connection only.
    tcp.onread = (buffer?: ArrayBuffer | Uint8Array) => {
      try {
        this.#onEncrypted(buffer);
      } catch (error) {
        this.#crashed(error);
      }
    };
    tls.useUserBuffer(cleartext);
    // The engine calls its handle's `onread`, `onerror`, `onhandshakedone`.
    tls.setHandle(tls);
    tls.onhandshakedone = () => {
      try {
        this.#onSecure();
      } catch (error) {
        this.#crashed(error);
      }
    };
    tls.onerror = (error: Error) => {
      try {
        this.#onError(error);
      } catch (error) {
        this.#crashed(error);
      }
    };
    tls.onread = (buffer?: ArrayBuffer) => {
      try {
        this.#onCleartext(buffer);
      } catch (error) {
        this.#crashed(error);
      }
    };
    if (tls.start() !== 0) {
      this.#onError(new Error("the TLS engine did not start"));
      return;
    }
    tcp.readStart();
    tls.readStart();
  }

  /** A callback failed: this connection fails, and stops reading. */
  #crashed(error: unknown): void {
    const failure = error instanceof Error ? error : new Error(String(error));
    try {
      this.#tcp.readStop();
      this.#reading = false;
    } catch {
      // Closed already.
    }
    this.#settle?.reject(failure);
    this.#fail(failure);
  }

  /** Encrypted bytes from the socket (or its end, or an error). */
  #onEncrypted(buffer?: ArrayBuffer | Uint8Array): void {
    const rt = this.#rt;
    const n = rt.state[rt.kReadBytesOrError];
    if (n > 0) {
      const bytes = buffer === undefined
        ? head(encrypted!, n)
        : buffer instanceof ArrayBuffer
        ? new Uint8Array(buffer, rt.state[rt.kArrayBufferOffset], n)
        : buffer.subarray(0, n);
      if (this.#hello) this.#onHello(bytes);
      else this.#tls.receive(bytes);
      return;
    }
    if (n === 0) return;
    this.#tcp.readStop();
    this.#reading = false;
    if (!this.#secure) {
      // A client that connected and left frees its place at once rather
      // than at the handshake deadline.
      this.#settle?.reject(
        new Deno.errors.ConnectionReset(
          n === rt.eof
            ? "closed before the TLS handshake"
            : `${rt.errname(n)} before the TLS handshake`,
        ),
      );
    } else if (n === rt.eof) {
      this.#tls.emitEof();
    } else {
      this.#fail(
        new Deno.errors.ConnectionReset(
          `connection lost: ${rt.errname(n)}`,
        ),
      );
    }
  }

  /**
   * The client's first bytes: held until its first record is whole, then
   * refused (protocol_version) or handed to the engine with what follows.
   */
  #onHello(bytes: Uint8Array): void {
    const held = this.#hello!;
    const hello = new Uint8Array(held.byteLength + bytes.byteLength);
    hello.set(held);
    hello.set(bytes, held.byteLength);
    const verdict = legacyHelloAlert(hello);
    if (verdict === "wait") {
      this.#hello = hello;
      return;
    }
    this.#hello = undefined;
    if (verdict === "tls12") {
      this.#tls.receive(hello);
      return;
    }
    this.#tcp.readStop();
    this.#reading = false;
    const error = new Error(
      "peer is incompatible: it offers TLS 1.1 or older only",
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    Promise.race([
      this.#raw.write(verdict),
      new Promise((resolve) =>
        timer = setTimeout(resolve, CLOSE_NOTIFY_WAIT_MS)
      ),
    ]).catch(() => {}).finally(() => {
      clearTimeout(timer);
      this.#settle?.reject(error);
    });
  }

  #onSecure(): void {
    this.#secure = true;
    this.#settle?.resolve();
  }

  #onError(error: Error): void {
    if (!this.#secure) {
      this.#tcp.readStop();
      this.#reading = false;
      this.#settle?.reject(error);
    } else {
      this.#fail(error);
    }
  }

  /** Decrypted bytes (or the end of them) from the engine. */
  #onCleartext(buffer?: ArrayBuffer): void {
    const rt = this.#rt;
    const n = rt.state[rt.kReadBytesOrError];
    if (n > 0) {
      if (this.#closed) return;
      if (this.#direct && buffer === undefined) {
        // Already in the reader's buffer (the engine never hands over more
        // than the buffer holds); what follows goes to the shared one.
        this.#takeReader()!.resolve(n);
        this.#readIfWanted(n);
        return;
      }
      const bytes = buffer === undefined
        ? head(cleartext!, n)
        : new Uint8Array(buffer, rt.state[rt.kArrayBufferOffset], n);
      let at = 0;
      while (at < n && this.#chunks.length === 0 && this.#readers.length > 0) {
        const reader = this.#takeReader()!;
        const taken = Math.min(reader.p.byteLength, n - at);
        reader.p.set(
          at === 0 && taken === n ? bytes : bytes.subarray(at, at + taken),
        );
        at += taken;
        reader.resolve(taken);
      }
      if (at < n) {
        this.#chunks.push(bytes.slice(at));
        this.#held += n - at;
      }
      this.#readIfWanted(n);
    } else if (n < 0) {
      if (n === rt.eof) this.#ended = true;
      else {
        this.#error ??= new Deno.errors.InvalidData(
          `TLS read failed: ${rt.errname(n)}`,
        );
      }
      this.#wakeReader();
    }
  }

  /**
   * Whether to read the socket, after `delivered` bytes went to the reads
   * (0: a read is asking): while a read waits, and after small pieces
   * (a conversation: the next comes after our answer, and holding it costs
   * little) until HIGH_WATER is held; after a large one, only once asked
   * again, as `Deno.Conn` reads: bulk bytes stay in the kernel until a
   * read wants them (then they are decrypted straight into its buffer, not
   * held and copied twice), and a client whose bytes nobody reads is held
   * back by TCP itself.
   */
  #readIfWanted(delivered = 0): void {
    const wanted = !this.#ended && !this.#error && !this.#destroyed &&
      (this.#readers.length > 0 ||
        (delivered < DIRECT_READ_MIN && this.#held < HIGH_WATER));
    if (wanted === this.#reading) return;
    this.#reading = wanted;
    if (wanted) this.#tcp.readStart();
    else this.#tcp.readStop();
  }

  /** The first waiting read, no longer waiting (nor its buffer the engine's). */
  #takeReader(): Reader | undefined {
    if (this.#direct) {
      this.#direct = false;
      if (!this.#destroyed) this.#tls.useUserBuffer(cleartext);
    }
    return this.#readers.shift();
  }

  /** At the end, an error or close(): every waiting read learns it. */
  #wakeReader(): void {
    for (let reader; (reader = this.#takeReader());) {
      if (this.#closed) {
        reader.reject(new Deno.errors.BadResource("connection closed"));
      } else if (this.#error) reader.reject(this.#error);
      else reader.resolve(null);
    }
  }

  #fail(error: Error): void {
    this.#error ??= error;
    this.#wakeReader();
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#error);
    this.#queue.length = 0;
    this.#queued = 0;
    this.#wakeIdle();
  }

  #wakeIdle(): void {
    if (this.#idle.length === 0) return;
    for (const idle of this.#idle.splice(0)) idle();
  }

  /** Hands `data` to the engine, which encrypts it into the socket. */
  #send(data: Uint8Array | Uint8Array[]): void {
    this.#writing = true;
    const status = Array.isArray(data)
      ? this.#tls.writev(this.#request, data, true)
      : this.#tls.writeBuffer(this.#request, data);
    if (status !== 0) {
      this.#writing = false;
      this.#fail(
        new Deno.errors.BrokenPipe(
          `TLS write failed: ${this.#rt.errname(status)}`,
        ),
      );
    }
  }

  /** The engine's write is out: send what queued meanwhile. */
  #written(status: number): void {
    this.#writing = false;
    if (this.#destroyed) return;
    if (status < 0) {
      this.#fail(
        new Deno.errors.BrokenPipe(
          `TLS write failed: ${this.#rt.errname(status)}`,
        ),
      );
      return;
    }
    if (this.#queue.length > 0) {
      const queue = this.#queue.splice(0);
      this.#queued = 0;
      this.#send(queue.length === 1 ? queue[0] : queue);
      if (this.#waiters.length > 0) {
        for (const waiter of this.#waiters.splice(0)) waiter.resolve();
      }
    } else {
      this.#wakeIdle();
    }
  }

  /** Resolves once every write is out (or failed). */
  #whenIdle(): Promise<void> {
    if (!this.#writing && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** The TLS version agreed (`TLSv1.3`), once the handshake is done: for the stats. */
  get protocol(): string | undefined {
    // The engine fills in `protocol` of the object it is given.
    const info: { protocol?: string } = {};
    try {
      this.#tls.getProtocol(info);
    } catch {
      return undefined;
    }
    return info.protocol;
  }
  /** Resolves once the handshake is done; rejects if it fails. */
  handshake(): Promise<Deno.TlsHandshakeInfo> {
    return this.#handshake;
  }

  /** Reads decrypted bytes into `p`; `null` at the peer's close_notify or EOF. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("connection closed"));
    }
    if (this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const n = Math.min(p.byteLength, chunk.byteLength);
      p.set(chunk.subarray(0, n));
      if (n === chunk.byteLength) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(n);
      this.#held -= n;
      return Promise.resolve(n);
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve(null);
    if (p.byteLength === 0) return Promise.resolve(0);
    if (!this.#secure) {
      return this.#handshake.then(() => this.read(p));
    }
    return new Promise((resolve, reject) => {
      this.#readers.push({ p, resolve, reject });
      if (this.#readers.length === 1 && p.byteLength >= DIRECT_READ_MIN) {
        this.#direct = true;
        this.#tls.useUserBuffer(p);
      }
      this.#readIfWanted();
    });
  }

  /**
   * Encrypts and sends `p`: resolves once the engine has the bytes, or
   * they are queued behind the write on its way (up to 64 KiB; past that,
   * once they go out).
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("connection closed"));
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#shutdown) {
      return Promise.reject(
        new Deno.errors.BrokenPipe("the write side is closed"),
      );
    }
    const n = p.byteLength;
    if (n === 0) return Promise.resolve(0);
    if (!this.#secure) return this.#handshake.then(() => this.write(p));
    if (!this.#writing) {
      this.#send(p);
      return this.#error ? Promise.reject(this.#error) : Promise.resolve(n);
    }
    this.#queue.push(p.slice());
    this.#queued += n;
    if (this.#queued <= HIGH_WATER) return Promise.resolve(n);
    return new Promise((resolve, reject) =>
      this.#waiters.push({ resolve: () => resolve(n), reject })
    );
  }

  /** Sends close_notify once all is written, then shuts down the TCP write side. */
  async closeWrite(): Promise<void> {
    if (this.#closed) throw new Deno.errors.BadResource("connection closed");
    if (this.#shutdown) return;
    await this.#handshake;
    await this.#whenIdle();
    if (this.#closed || this.#shutdown || this.#error) return;
    this.#shutdown = true;
    this.#tls.shutdown({ oncomplete() {} });
  }

  /**
   * Closes the connection. After a handshake, first lets what is owed and
   * then close_notify leave (as TLS asks, so the peer can tell the end from
   * a cut), waiting at most {@linkcode CLOSE_NOTIFY_WAIT_MS}; otherwise,
   * and for a peer still in its handshake, closes the socket at once.
   */
  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("connection closed");
    this.#closed = true;
    this.#wakeReader();
    const closed = new Deno.errors.BadResource("connection closed");
    for (const waiter of this.#waiters.splice(0)) waiter.reject(closed);
    this.#settle?.reject(
      new Deno.errors.ConnectionReset("closed before the TLS handshake"),
    );
    if (!this.#secure || this.#error || this.#shutdown) {
      this.#destroy();
      return;
    }
    // Meanwhile what the peer still sends is read and dropped: unread, it
    // would turn the final close into a reset that can cut what we owe.
    if (!this.#reading && !this.#ended) {
      this.#reading = true;
      this.#tcp.readStart();
    }
    const timer = setTimeout(() => this.#destroy(), CLOSE_NOTIFY_WAIT_MS);
    this.#whenIdle().then(() => {
      clearTimeout(timer);
      if (this.#destroyed) return;
      if (!this.#error) {
        this.#shutdown = true;
        this.#tls.shutdown({ oncomplete() {} });
      }
      this.#destroy();
    });
  }

  /** Closes the engine, the socket handle and the connection under them. */
  #destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#queue.length = 0;
    this.#wakeIdle();
    try {
      this.#tcp.readStop();
      this.#reading = false;
      this.#tls.destroySsl();
      this.#tcp.close();
    } finally {
      closeQuietly(this.#raw);
    }
  }

  /** Sets TCP_NODELAY (`true`: no Nagle delay), as `Deno.TcpConn` does. */
  setNoDelay(noDelay = true): void {
    this.#tcp.setNoDelay(noDelay);
  }

  /** Keeps the event loop alive while open (the default). */
  ref(): void {
    this.#tcp.ref();
  }

  /** Lets the event loop finish while this is open. */
  unref(): void {
    this.#tcp.unref();
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
