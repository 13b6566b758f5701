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
 * the `TLSWrap` class behind `TLSSocket`, a `Deno.Conn`'s resource id), so
 * a server proves them before its first connection (`tls_engine.ts`
 * decides). First {@linkcode nativeTlsRuntime} finds each piece and checks
 * that every method used here exists. Then {@linkcode proveNativeTls} runs
 * the engine by behaviour, with no permission needed, over a pair of
 * kernel pipes (`pipe_wrap`'s `createPipe`, each end opened as a stream
 * handle as a socket is one): a server engine set up as a connection's
 * (this class's `TLSWrap`, `initServerTls` with the server's own
 * certificate and key, `setHandle`, the `onhandshakedone`, `onerror` and
 * `onread` callbacks, cleartext read into a buffer given by
 * `useUserBuffer`) writes its records into one pipe by itself, as it does
 * into a socket; what arrives on the other is read as a connection reads
 * its socket (`useUserBuffer`, `readStart`, `onread` with the count in
 * `streamBaseState[kReadBytesOrError]`) and handed to it by `receive`; a
 * client engine of the same class sits at the other ends. They must:
 * finish the handshake on both sides; carry 4 bytes from the client to the
 * server byte-exact; carry 4 bytes back, sent by the server's
 * `writeBuffer`, whose completion must report 0; and deliver the server's
 * `shutdown` (close_notify) to the client as the end of the stream
 * (`UV_EOF`); with no stall (nothing moving for 20 turns of the event loop
 * and 100 ms) and within 5 s. Not run there: a TCP handle's `openFromRid`
 * on a connection's descriptor and `attach` to it (a pipe attaches by
 * `attachPipe`, to the same stream code); each connection checks their
 * status, and one that is not 0 runs on the adapter. When the proof fails,
 * the server serves TLS with the `node:tls` adapter of `tls_node.ts`
 * (tests/tls_native_test.ts and tests/tls_engine_test.ts say which runs).
 *
 * @module
 */

import process from "node:process";
import { Duplex } from "node:stream";
import { type SecureContext, TLSSocket } from "node:tls";
import { carriedOver } from "./departure.ts";
import { closeQuietly } from "./io.ts";
import {
  CLOSE_NOTIFY_WAIT_MS,
  sendThen,
  TLS_HIGH_WATER,
  TlsConnStreams,
} from "./tls_conn.ts";
import { legacyHelloAlert } from "./tls_hello.ts";
import {
  type ClientCertRequest,
  Tls12ClientCertGate,
} from "./tls12_client_cert.ts";
import type { TlsConnInfo, TlsHandshakeFacts } from "./tls_peer.ts";

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

/** How long {@linkcode proveNativeTls} may take before it has failed. */
const SELF_TEST_TIMEOUT_MS = 5000;
/**
 * The self-test has stalled (failed) once nothing moved between its
 * engines for this many turns of the event loop and this long: bytes in a
 * pipe are there at the next turn, so a stall is no slow machine.
 */
const SELF_TEST_IDLE_TURNS = 20;
const SELF_TEST_IDLE_MS = 100;
/** What the self-test's client sends, and what the server answers. */
const SELF_TEST_PING = new TextEncoder().encode("ping");
const SELF_TEST_PONG = new TextEncoder().encode("pong");

let proof: Promise<void> | undefined;

/**
 * Proves the runtime's TLS engine by behaviour, once per process: a
 * handshake and a round trip between a server engine set up as
 * {@linkcode NativeTlsConn} sets up its own (from `context`'s certificate
 * and key) and a client engine, over a pair of kernel pipes, as the
 * module doc lists. Resolves when all of it worked; rejects with what went wrong
 * (then serve with the `node:tls` adapter).
 *
 * @example
 * ```ts ignore
 * await proveNativeTls(tlsServerContext(readTlsFiles("cert.pem", "key.pem")));
 * ```
 */
export function proveNativeTls(context: SecureContext): Promise<void> {
  return proof ??= selfTest(context);
}

/** One engine of the self-test, and what it has seen. */
interface SelfTestSide {
  readonly tls: Handle;
  secure: boolean;
  /** Cleartext read so far. */
  received: number[];
  ended: boolean;
  error?: Error;
}

/**
 * An engine that writes its records into the pipe `out` and is given what
 * arrives on `input`, read as a connection reads its socket (into a buffer
 * of `useUserBuffer`, the count in `streamBaseState`); `moved` is told of
 * every callback.
 */
function selfTestSide(
  rt: NativeTlsRuntime,
  server: boolean,
  context: SecureContext,
  out: Handle,
  input: Handle,
  moved: () => void,
): SelfTestSide {
  const tls = new rt.TLSWrap(server ? 1 : 0, 0);
  const side: SelfTestSide = { tls, secure: false, received: [], ended: false };
  // The server as a connection has it (client certificates aside: the
  // client here has none); the client trusts it without checking.
  const status = server
    ? tls.initServerTls({
      ...(context as unknown as { context: object }).context,
      rejectUnauthorized: false,
      requestCert: false,
    })
    : tls.initClientTls("", { rejectUnauthorized: false });
  if (status !== 0) {
    throw new Error(
      `the ${
        server ? "server" : "client"
      } engine did not take its settings (${status})`,
    );
  }
  if (tls.attachPipe(out) !== 0) {
    throw new Error("the engine did not attach to its pipe");
  }
  const encrypted = new Uint8Array(BUFFER_SIZE);
  input.useUserBuffer(encrypted);
  input.onread = (chunk?: ArrayBuffer | Uint8Array) => {
    moved();
    const n = rt.state[rt.kReadBytesOrError];
    if (n > 0) {
      tls.receive(
        chunk === undefined
          ? encrypted.subarray(0, n)
          : chunk instanceof ArrayBuffer
          ? new Uint8Array(chunk, rt.state[rt.kArrayBufferOffset], n)
          : chunk.subarray(0, n),
      );
    } else if (n < 0) {
      input.readStop();
      tls.emitEof();
    }
  };
  // The server reads cleartext into a buffer of its own, as a connection
  // does; the client gets the engine's buffers (the other way of reading).
  const cleartext = server ? new Uint8Array(BUFFER_SIZE) : undefined;
  if (cleartext) tls.useUserBuffer(cleartext);
  tls.setHandle(tls);
  tls.onhandshakedone = () => {
    moved();
    side.secure = true;
  };
  tls.onerror = (error: Error) => {
    moved();
    side.error ??= error;
  };
  tls.onread = (chunk?: ArrayBuffer) => {
    moved();
    const n = rt.state[rt.kReadBytesOrError];
    if (n > 0) {
      const bytes = chunk === undefined
        ? cleartext!.subarray(0, n)
        : new Uint8Array(chunk, rt.state[rt.kArrayBufferOffset], n);
      side.received.push(...bytes);
    } else if (n === rt.eof) side.ended = true;
    else if (n < 0) side.error ??= new Error(`read failed: ${rt.errname(n)}`);
  };
  input.readStart();
  return side;
}

/** The runtime's proof, as {@linkcode proveNativeTls} describes it. */
async function selfTest(context: SecureContext): Promise<void> {
  const rt = nativeTlsRuntime(context);
  if (!rt) {
    throw new Error(
      "this Deno lacks the TLSWrap and TCP internals the engine is driven by",
    );
  }
  const progress = new SelfTestProgress();
  const opened: SelfTestOpened = { pipes: [], sides: [] };
  try {
    const pair = startSelfTestPair(rt, context, opened, progress.moved);
    await exchangeSelfTestBytes(pair, progress);
  } finally {
    closeSelfTest(opened);
  }
}

/** The self-test's two engines. */
interface SelfTestPair {
  readonly server: SelfTestSide;
  readonly client: SelfTestSide;
}

/** What the self-test has opened, for its end to close. */
interface SelfTestOpened {
  readonly pipes: Handle[];
  readonly sides: SelfTestSide[];
}

/**
 * Whether the self-test's engines still move: each of their callbacks
 * calls `moved`, so a wait can tell a stall (a failure) from a slow
 * machine, within the test's deadline.
 */
class SelfTestProgress {
  readonly deadline = Date.now() + SELF_TEST_TIMEOUT_MS;
  moves = 0;
  movedAt = Date.now();
  /** Told of every engine callback. */
  readonly moved = (): void => {
    this.moves++;
    this.movedAt = Date.now();
  };

  /** Waits until `done`, or fails with an engine's error or saying `what` was missing. */
  async until(
    what: string,
    done: () => boolean,
    { server, client }: SelfTestPair,
  ): Promise<void> {
    for (let idle = 0; !done();) {
      const failed = server.error ?? client.error;
      if (failed) throw failed;
      const stalled = idle >= SELF_TEST_IDLE_TURNS &&
        Date.now() - this.movedAt >= SELF_TEST_IDLE_MS;
      if (stalled || Date.now() > this.deadline) throw new Error(`no ${what}`);
      const before = this.moves;
      await new Promise((resolve) => setTimeout(resolve, 0));
      idle = this.moves === before ? idle + 1 : 0;
    }
  }
}

/**
 * The self-test's engines, started, each writing into a pipe the other
 * one reads; what opens goes into `opened` at once, so that a failure
 * halfway still closes it.
 */
function startSelfTestPair(
  rt: NativeTlsRuntime,
  context: SecureContext,
  opened: SelfTestOpened,
  moved: () => void,
): SelfTestPair {
  const pipes = (process as unknown as { binding(name: string): Handle })
    .binding("pipe_wrap");
  /** A pipe end as a stream handle, as a connection's socket is one. */
  const pipeEnd = (fd: number): Handle => {
    const pipe = new pipes.Pipe(0);
    opened.pipes.push(pipe);
    if (pipe.open(fd) !== 0) throw new Error("a pipe end did not open");
    return pipe;
  };
  const [toServer, fromClient] = pipes.createPipe();
  const [toClient, fromServer] = pipes.createPipe();
  const server = selfTestSide(
    rt,
    true,
    context,
    pipeEnd(fromServer),
    pipeEnd(toServer),
    moved,
  );
  opened.sides.push(server);
  const client = selfTestSide(
    rt,
    false,
    context,
    pipeEnd(fromClient),
    pipeEnd(toClient),
    moved,
  );
  opened.sides.push(client);
  for (const { tls } of opened.sides) {
    if (tls.start() !== 0) throw new Error("the engine did not start");
    tls.readStart();
  }
  return { server, client };
}

/**
 * The self-test's exchange: a handshake, `ping` from the client, `pong`
 * back (its write completed), then the server's close_notify; throws
 * what went wrong or never came.
 */
async function exchangeSelfTestBytes(
  pair: SelfTestPair,
  progress: SelfTestProgress,
): Promise<void> {
  const { server, client } = pair;
  const until = (what: string, done: () => boolean) =>
    progress.until(what, done, pair);
  await until("handshake", () => server.secure && client.secure);
  writeSelfTestBytes(client, SELF_TEST_PING, progress.moved);
  await until("bytes from the client", () => server.received.length >= 4);
  const completion = writeSelfTestBytes(server, SELF_TEST_PONG, progress.moved);
  await until(
    "bytes from the server",
    () => client.received.length >= 4 && completion() !== undefined,
  );
  if (completion() !== 0) {
    throw new Error(`the server's write completed with ${completion()}`);
  }
  if (!sameBytes(server.received, SELF_TEST_PING)) {
    throw new Error("the server read other bytes than the client sent");
  }
  if (!sameBytes(client.received, SELF_TEST_PONG)) {
    throw new Error("the client read other bytes than the server sent");
  }
  if (server.tls.shutdown({ oncomplete: progress.moved }) !== 0) {
    throw new Error("the server's shutdown failed");
  }
  await until("close_notify", () => client.ended);
}

/**
 * Writes `bytes` as cleartext on `side`; returns what reads the write's
 * completion status (`undefined` until it completes).
 */
function writeSelfTestBytes(
  side: SelfTestSide,
  bytes: Uint8Array,
  moved: () => void,
): () => number | undefined {
  let completed: number | undefined;
  const status = side.tls.writeBuffer({
    oncomplete: (status: number) => {
      moved();
      completed = status;
    },
  }, bytes);
  if (status !== 0) throw new Error(`a write failed (${status})`);
  return () => completed;
}

/** Whether the cleartext an engine read, `got`, is the `sent` bytes. */
function sameBytes(got: number[], sent: Uint8Array): boolean {
  return got.length === sent.length &&
    got.every((byte, i) => byte === sent[i]);
}

/** Frees the self-test's engines and closes its pipes, whatever happened. */
function closeSelfTest({ pipes, sides }: SelfTestOpened): void {
  for (const { tls } of sides) {
    try {
      tls.destroySsl();
    } catch {
      // Its failure is not the test's.
    }
  }
  for (const pipe of pipes) {
    try {
      pipe.readStop();
      pipe.close();
    } catch {
      // Closed already.
    }
  }
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

/**
 * What the engine's `initServerTls` takes, built once per context (a
 * context serves one client-certificate mode). Asked for a certificate, the
 * engine refuses a client that sends none when `rejectUnauthorized`
 * (certificate_required), and lets one that does not chain finish its
 * handshake, with `verifyError()` saying why: the server judges that.
 */
const engineContexts = new WeakMap<SecureContext, object>();
function engineContext(
  context: SecureContext,
  clientCerts?: ClientCertRequest,
): object {
  let value = engineContexts.get(context);
  if (!value) {
    value = {
      ...(context as unknown as { context: object }).context,
      rejectUnauthorized: clientCerts?.mode === "required",
      requestCert: clientCerts !== undefined,
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
 * Asked for client certificates ({@linkcode NativeTlsConn.start}'s
 * `clientCerts`), a TLS 1.2 client without one or with one that does not
 * chain gets handshake_failure or unknown_ca (`tls12_client_cert.ts`), a
 * TLS 1.3 one without one the engine's certificate_required.
 */
export class NativeTlsConn extends TlsConnStreams
  implements Deno.TlsConn, TlsConnInfo {
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
  /** With client certificates: TLS 1.2's refusals, before the engine. */
  #gate?: Tls12ClientCertGate;
  #secure = false;
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

  /**
   * Starts TLS over `raw` (which this now owns), or returns `undefined`
   * (`raw` untouched) when the runtime cannot: then use the adapter.
   */
  static start(
    raw: Deno.Conn,
    context: SecureContext,
    clientCerts?: ClientCertRequest,
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
      tls.initServerTls(engineContext(context, clientCerts)) !== 0 ||
      tls.attach(tcp) !== 0
    ) {
      tls.destroySsl();
      tcp.close();
      return undefined;
    }
    const conn = new NativeTlsConn(raw, rt, tcp, tls);
    if (clientCerts) conn.#gate = new Tls12ClientCertGate(clientCerts);
    return conn;
  }

  private constructor(
    raw: Deno.Conn,
    rt: NativeTlsRuntime,
    tcp: Handle,
    tls: Handle,
  ) {
    super();
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
      else this.#receive(bytes);
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
      this.#receive(hello);
      return;
    }
    this.#refuse(
      verdict,
      new Error("peer is incompatible: it offers TLS 1.1 or older only"),
    );
  }

  /** The client's bytes to the engine: through the gate, when there is one. */
  #receive(bytes: Uint8Array): void {
    if (!this.#gate) {
      this.#tls.receive(bytes);
      return;
    }
    const { forward, refusal } = this.#gate.feed(bytes);
    // Decided: the gate steps aside for the rest of the connection.
    if (this.#gate.decided) this.#gate = undefined;
    if (forward.byteLength > 0) this.#tls.receive(forward);
    if (refusal) this.#refuse(refusal.alert, new Error(refusal.reason));
  }

  /**
   * Refuses the client before the engine would: stops reading, sends
   * `alert` (plaintext, the engine idle meanwhile), then fails the
   * handshake with `error`.
   */
  #refuse(alert: Uint8Array, error: Error): void {
    this.#tcp.readStop();
    this.#reading = false;
    sendThen(this.#raw, alert, () => this.#settle?.reject(error));
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
      if (this.closed) return;
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
   * little) until TLS_HIGH_WATER is held; after a large one, only once asked
   * again, as `Deno.Conn` reads: bulk bytes stay in the kernel until a
   * read wants them (then they are decrypted straight into its buffer, not
   * held and copied twice), and a client whose bytes nobody reads is held
   * back by TCP itself.
   */
  #readIfWanted(delivered = 0): void {
    const wanted = !this.#ended && !this.#error && !this.#destroyed &&
      (this.#readers.length > 0 ||
        (delivered < DIRECT_READ_MIN && this.#held < TLS_HIGH_WATER));
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
      if (this.closed) {
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

  /** Resolves once the handshake is done; rejects if it fails. */
  handshake(): Promise<Deno.TlsHandshakeInfo> {
    return this.#handshake;
  }

  /** What the finished handshake settled: protocol, cipher, the client's certificate. */
  handshakeFacts(): TlsHandshakeFacts {
    return engineFacts(this.#tls);
  }

  /** Reads decrypted bytes into `p`; `null` at the peer's close_notify or EOF. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.closed) {
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
    if (this.closed) {
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
    if (this.#queued <= TLS_HIGH_WATER) return Promise.resolve(n);
    return new Promise((resolve, reject) =>
      this.#waiters.push({ resolve: () => resolve(n), reject })
    );
  }

  /** Sends close_notify once all is written, then shuts down the TCP write side. */
  async closeWrite(): Promise<void> {
    if (this.closed) throw new Deno.errors.BadResource("connection closed");
    if (this.#shutdown) return;
    await this.#handshake;
    await this.#whenIdle();
    if (this.closed || this.#shutdown || this.#error) return;
    this.#shutdown = true;
    this.#tls.shutdown({ oncomplete() {} });
  }

  /** Closed: reads and writes waiting fail, a handshake under way too. */
  #markClosed(): void {
    this.closed = true;
    this.#wakeReader();
    const closed = new Deno.errors.BadResource("connection closed");
    for (const waiter of this.#waiters.splice(0)) waiter.reject(closed);
    this.#settle?.reject(
      new Deno.errors.ConnectionReset("closed before the TLS handshake"),
    );
  }

  /** Closes the socket at once, without close_notify (see `TlsConnInfo`). */
  abort(alert?: Uint8Array): void {
    if (this.closed) return;
    this.#markClosed();
    if (!alert) {
      this.#destroy();
      return;
    }
    // The engine stopped; the alert goes out as it is, then the cut.
    this.#tcp.readStop();
    this.#reading = false;
    sendThen(this.#raw, alert, () => this.#destroy());
  }

  /**
   * Closes the connection. After a handshake, first lets what is owed and
   * then close_notify leave (as TLS asks, so the peer can tell the end from
   * a cut), waiting at most {@linkcode CLOSE_NOTIFY_WAIT_MS}; otherwise,
   * and for a peer still in its handshake, closes the socket at once.
   */
  close(): void {
    if (this.closed) throw new Deno.errors.BadResource("connection closed");
    this.#markClosed();
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
}

/**
 * What the engine (a `TLSWrap`, under either adapter) says of a finished
 * handshake: `getProtocol`, `getCipher` and `getPeerCertificate` fill or
 * return plain objects, `verifyError` names OpenSSL's code.
 */
export function engineFacts(tls: Handle): TlsHandshakeFacts {
  const protocol: { protocol?: string } = {};
  const cipher: { name?: string } = {};
  tls.getProtocol(protocol);
  tls.getCipher(cipher);
  const peer = tls.getPeerCertificate(false);
  const verifyError = tls.verifyError();
  return {
    protocol: protocol.protocol ?? "",
    cipher: cipher.name ?? "",
    peerCertificate: peer?.raw ? new Uint8Array(peer.raw) : undefined,
    verifyError: verifyError
      ? String((verifyError as Error).message ?? verifyError)
      : undefined,
  };
}
