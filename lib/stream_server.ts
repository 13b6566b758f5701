/**
 * The stream server (TCP, TLS over TCP, Unix stream sockets): an accept
 * loop that survives accept errors (backing off as Go's `http.Server`
 * does), refusals before anything is read (access list, connections per
 * source, connection limit), TLS started only after them, a cheap idle
 * timeout, and a graceful stop that waits for connections in flight.
 * With `acceptProxy`, each connection's PROXY protocol header is read
 * first, and the access list and the count per source judge the client
 * it names, after it.
 *
 * @module
 */

import { type Binding, bindStream } from "./bind.ts";
import { sourceKey } from "./datagram_guard.ts";
import { formatAddr } from "./endpoint.ts";
import { closeQuietly } from "./io.ts";
import {
  checkKeepAlive,
  isKeepAliveTimeout,
  type KeepAliveConfig,
  setKeepAlive,
} from "./keepalive.ts";
import { FloodLog } from "./log.ts";
import { withoutOsError } from "./os_error.ts";
import {
  DEFAULT_PROXY_HEADER_TIMEOUT_MS,
  type ProxyHeader,
  readProxyHeader,
} from "./proxy_protocol.ts";
import type { AccessPolicy } from "./access.ts";
import { BaseServer } from "./server_base.ts";
import {
  type ConnectionContext,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_PER_SOURCE,
  type ServerOptions,
  type Service,
  type StreamHandler,
} from "./server_options.ts";
import { startServerTls, tlsServerContext } from "./tls_node.ts";
import { socketFileOwner } from "./unix.ts";

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** How long handlers get to return once shutdown closed their connections. */
const HANDLER_STOP_MS = 1000;
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/** What the threads of a worker group share (see `workers.ts`). */
export interface GroupShare {
  /**
   * Connections open in the whole group (`Atomics` on index 0): a worker
   * has it once the main thread answered; the server accepts only then.
   */
  connections: Promise<Int32Array>;
}

class Connection implements ConnectionContext {
  /** The connection; with `acceptProxy` and TLS, the TLS one once started. */
  conn: Deno.Conn;
  readonly peer: string;
  /** Its source for `perSource` ({@linkcode sourceKey}), when counted. */
  source?: string;
  // `declare`d, not initialised: no field on the connections of a server
  // without `acceptProxy`.
  declare proxyHeader?: ProxyHeader;
  idleTicks = 0;
  bytesIn = 0;
  bytesOut = 0;
  note?: string;
  closed = false;

  constructor(conn: Deno.Conn, source?: string) {
    this.conn = conn;
    this.peer = formatAddr(conn.remoteAddr);
    this.source = source;
  }

  get remoteAddr(): Deno.Addr {
    return this.proxyHeader?.source ?? this.conn.remoteAddr;
  }

  get localAddr(): Deno.Addr {
    return this.proxyHeader?.destination ?? this.conn.localAddr;
  }

  /** With `acceptProxy`: ` for CLIENT (PROXY v1)`, for its log lines. */
  get via(): string {
    const header = this.proxyHeader;
    if (!header) return "";
    return ` for ${formatAddr(this.remoteAddr)} (PROXY v${header.version}${
      header.command === "proxy" ? "" : ", own address"
    })`;
  }

  active(): void {
    this.idleTicks = 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.conn); // The handler may have closed it.
  }
}

function keepAliveConfig(
  option: KeepAliveConfig | boolean | undefined,
): KeepAliveConfig | undefined {
  if (option === undefined || option === false) return undefined;
  if (option === true) return {};
  return option.enable === false ? undefined : option;
}

/** A server of connections: TCP (with or without TLS) or a Unix stream socket. */
export class StreamServer extends BaseServer {
  readonly #handler: StreamHandler;
  readonly #binding: Binding<Deno.Listener>;
  readonly #connections = new Set<Connection>();
  readonly #maxConnections: number;
  readonly #idleTimeoutMs: number;
  readonly #access?: AccessPolicy;
  readonly #keepAlive?: KeepAliveConfig;
  readonly #perSource: number;
  /** Open connections by source, for `perSource`. */
  readonly #bySource = new Map<string, number>();
  readonly #refusedFull = new FloodLog(this.log, `${this.prefix}refused`);
  readonly #refusedSource = new FloodLog(this.log, `${this.prefix}refused`);
  readonly #refusedAccess = new FloodLog(this.log, `${this.prefix}refused`);
  readonly #handshakeFailed = new FloodLog(
    this.log,
    `${this.prefix}TLS handshake failed:`,
  );
  readonly #abortedEarly = new FloodLog(this.log, `${this.prefix}dropped`);
  readonly #badProxyHeader = new FloodLog(
    this.log,
    `${this.prefix}closed`,
    undefined,
    "without a valid PROXY header",
  );
  /** `acceptProxy`: the header's deadline, in ms; unset without it. */
  readonly #proxyHeaderTimeoutMs?: number;
  /** Set for TLS: the handshake deadline, in ms. */
  readonly #handshakeTimeoutMs?: number;
  readonly #tlsContext?: ReturnType<typeof tlsServerContext>;
  #idleTimer?: ReturnType<typeof setInterval>;
  #idleTickMs = 0;
  #backoffTimer?: ReturnType<typeof setTimeout>;
  #wakeBackoff?: () => void;
  #acceptLoopDone: Promise<void> = Promise.resolve();
  #drained?: () => void;
  /** While a stop waits for connections: (re)starts its grace period. */
  #startGrace?: (gracePeriodMs: number) => void;
  #boundListener?: Deno.Listener;
  /**
   * Ends the accept loop without closing the listener (see `stop()`):
   * `stop()` stops waiting for the loop at once, and the loop closes
   * whoever it still accepts and ends. One race for the server's life, not
   * one per accept: racing every accept against a long-lived promise left
   * a reaction on it per connection (about 1.1 KB of heap each), and a
   * promise made per accept cost the connection path its allocations.
   */
  #stopAccepting = (): void => {
    this.#acceptStopRequested = true;
    this.#acceptStopped?.();
  };
  #acceptStopRequested = false;
  #acceptStopped?: () => void;
  /** For a worker group: connections open in the whole group, once known. */
  readonly #groupConnections: () => Int32Array | undefined;

  constructor(
    service: Service,
    handler: StreamHandler,
    transport: "tcp" | "unix",
    options: ServerOptions,
    group?: GroupShare,
  ) {
    const keepAlive = transport === "tcp"
      ? keepAliveConfig(options.keepAlive)
      : undefined;
    // Before binding: a missing --allow-ffi is one error at start, not one
    // per client. Keepalive is set on the plain TCP connection, before TLS
    // starts: no FFI needed for plain keepalive on a TLS server.
    if (keepAlive) checkKeepAlive(keepAlive);
    const perSource = transport === "tcp"
      ? options.perSource ?? DEFAULT_PER_SOURCE
      : 0;
    if (!Number.isInteger(perSource) || perSource < 0) {
      throw new RangeError(
        `perSource must be a whole number, 0 or more: ${options.perSource}`,
      );
    }
    const proxyHeaderTimeoutMs = options.acceptProxy
      ? options.proxyHeaderTimeoutMs ?? DEFAULT_PROXY_HEADER_TIMEOUT_MS
      : undefined;
    if (
      proxyHeaderTimeoutMs !== undefined &&
      !(proxyHeaderTimeoutMs > 0 && Number.isFinite(proxyHeaderTimeoutMs))
    ) {
      throw new RangeError(
        `proxyHeaderTimeoutMs must be more than 0: ${options.proxyHeaderTimeoutMs}`,
      );
    }
    const binding = bindStream(service, transport, options, !!group);
    let shared: Int32Array | undefined;
    const ready = group
      ? Promise.all([binding.ready, group.connections]).then(([, count]) => {
        shared = count;
      })
      : binding.ready;
    super(options, ready);
    this.#binding = binding;
    this.#handler = handler;
    this.#groupConnections = () => shared;
    this.#maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 0;
    this.#access = options.access;
    this.#keepAlive = keepAlive;
    this.#perSource = perSource;
    this.#proxyHeaderTimeoutMs = proxyHeaderTimeoutMs;
    if (options.tls) {
      this.#handshakeTimeoutMs = options.handshakeTimeoutMs ??
        DEFAULT_HANDSHAKE_TIMEOUT_MS;
      this.#tlsContext = tlsServerContext(options.tls);
    }
    this.#startWhenBound(!!options.tls || !!group);
  }

  /**
   * Starts accepting: a TCP listener exists already, but accepts only once
   * `ready` settles when `deferred` (TLS: the certificate passed its check;
   * a worker group: the shared count came); a Unix one exists only then.
   */
  #startWhenBound(deferred: boolean): void {
    const start = (listener: Deno.Listener) => {
      this.#acceptLoopDone = Promise.race([
        this.#acceptLoop(listener),
        new Promise<void>((resolve) => this.#acceptStopped = resolve),
      ]);
      if (this.#idleTimeoutMs > 0) this.#startIdleSweep();
    };
    const listener = this.#binding.socket();
    if (listener && !deferred) {
      this.#boundListener = listener;
      start(listener);
      return;
    }
    this.ready.then(() => {
      const listener = this.#binding.socket()!;
      this.#boundListener = listener;
      if (this.closing) listener.close();
      else start(listener);
    }, () => {});
  }

  #open(): number {
    const group = this.#groupConnections();
    return group ? Atomics.load(group, 0) : this.#connections.size;
  }

  #track(connection: Connection): void {
    this.#connections.add(connection);
    if (connection.source !== undefined) {
      this.#bySource.set(
        connection.source,
        (this.#bySource.get(connection.source) ?? 0) + 1,
      );
    }
    const group = this.#groupConnections();
    if (group) Atomics.add(group, 0, 1);
  }

  #untrack(connection: Connection): void {
    if (!this.#connections.delete(connection)) return;
    const group = this.#groupConnections();
    if (group) Atomics.sub(group, 0, 1);
    if (connection.source !== undefined) {
      const left = this.#bySource.get(connection.source)! - 1;
      if (left > 0) this.#bySource.set(connection.source, left);
      else this.#bySource.delete(connection.source);
    }
  }

  get addr(): Deno.Addr {
    return this.#binding.addr;
  }

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    let backoffMs = 0;
    while (!this.closing) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
        backoffMs = 0;
      } catch (error) {
        if (this.closing || this.#acceptStopRequested) break;
        backoffMs = await this.#acceptFailed(error as Error, backoffMs);
        continue;
      }
      if (this.#acceptStopRequested) {
        // Stopped with the listener left open: whoever still connects
        // through it is closed.
        conn.close();
        break;
      }
      if (this.#proxyHeaderTimeoutMs !== undefined) {
        // The client's address comes in its PROXY header: only the
        // server's own limit now, the rest once that is read.
        if (this.#refusesFull(conn)) {
          conn.close();
          continue;
        }
        if (this.#keepAlive) this.#setKeepAlive(conn, this.#keepAlive);
        this.#handle(new Connection(conn));
        continue;
      }
      const source = this.#perSource > 0
        ? sourceKey(conn.remoteAddr)
        : undefined;
      if (this.#refuses(conn, source)) {
        conn.close();
        continue;
      }
      if (this.#keepAlive) this.#setKeepAlive(conn, this.#keepAlive);
      // TLS starts only now, after the refusals: a refused client never
      // gets a TLS byte.
      if (this.#tlsContext) {
        conn = startServerTls(conn, this.#tlsContext);
      }
      this.#handle(new Connection(conn, source));
    }
  }

  /**
   * After a failed `accept`: the backoff before the next one (0 when that
   * one client had reset), having waited it.
   */
  async #acceptFailed(error: Error, backoffMs: number): Promise<number> {
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
    this.log(
      `${this.prefix}accept failed: ${error.message}; retrying in ${backoffMs} ms`,
    );
    await this.#sleep(backoffMs);
    return backoffMs;
  }

  /**
   * Whether `conn` is refused before anything is read: not allowed, too
   * many from its source, or the server full (each logged, counted).
   */
  #refuses(conn: Deno.Conn, source: string | undefined): boolean {
    if (this.#access && !this.#access.allows(conn.remoteAddr)) {
      this.#refusedAccess.event(`${formatAddr(conn.remoteAddr)}: not allowed`);
      return true;
    }
    const tooMany = this.#tooManyFrom(source);
    if (tooMany !== undefined) {
      this.#refusedSource.event(`${formatAddr(conn.remoteAddr)}: ${tooMany}`);
      return true;
    }
    return this.#refusesFull(conn);
  }

  /** Whether the server is full (logged, counted). */
  #refusesFull(conn: Deno.Conn): boolean {
    if (this.#open() < this.#maxConnections) return false;
    this.#refusedFull.event(
      `${
        formatAddr(conn.remoteAddr)
      }: too many connections (max ${this.#maxConnections})`,
    );
    return true;
  }

  /** Why `source` may not have another connection, if it may not. */
  #tooManyFrom(source: string | undefined): string | undefined {
    if (
      source === undefined ||
      (this.#bySource.get(source) ?? 0) < this.#perSource
    ) {
      return undefined;
    }
    return `too many connections from ${source} (max ${this.#perSource} per source)`;
  }

  /**
   * `acceptProxy`: reads the connection's PROXY header, then judges the
   * client it names as {@linkcode StreamServer.#refuses} judges a peer
   * (access list, then its source's count), and starts TLS. Whether the
   * connection goes on; if not, it was logged in one line: a bad header
   * rate-limited, as anyone who reaches the port can send one; a refused
   * client as its closing line, as a header comes from a trusted proxy.
   */
  async #admitProxied(connection: Connection): Promise<boolean> {
    let header: ProxyHeader;
    try {
      header = await readProxyHeader(connection.conn, {
        deadlineMs: this.#proxyHeaderTimeoutMs,
      });
    } catch (error) {
      // Closed by shutdown or the idle sweep: that logged already.
      if (!connection.closed) {
        this.#badProxyHeader.event(
          `${connection.peer} (0 bytes in, 0 bytes out): ${
            withoutOsError((error as Error).message)
          }`,
        );
      }
      return false;
    }
    connection.proxyHeader = header;
    const client = connection.remoteAddr;
    let refusal: string | undefined;
    if (this.#access && !this.#access.allows(client)) {
      refusal = header.command === "proxy"
        ? "not allowed (the address in its PROXY header)"
        : "not allowed";
    } else if (this.#perSource > 0) {
      const source = sourceKey(client);
      refusal = this.#tooManyFrom(source);
      if (refusal === undefined) {
        connection.source = source;
        this.#bySource.set(source, (this.#bySource.get(source) ?? 0) + 1);
      }
    }
    if (refusal !== undefined) {
      this.log(
        `${this.prefix}closed ${connection.peer} (0 bytes in, 0 bytes out)${connection.via}: ${refusal}`,
      );
      return false;
    }
    if (this.#tlsContext) {
      connection.conn = startServerTls(connection.conn, this.#tlsContext);
    }
    return true;
  }

  #setKeepAlive(conn: Deno.Conn, config: KeepAliveConfig): void {
    try {
      setKeepAlive(conn, config);
    } catch (error) {
      this.log(
        `${this.prefix}keepalive not set for ${formatAddr(conn.remoteAddr)}: ${
          (error as Error).message
        }`,
      );
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wakeBackoff = resolve;
      this.#backoffTimer = setTimeout(resolve, ms);
    });
  }

  #handle(connection: Connection): void {
    this.#track(connection);
    if (
      this.#proxyHeaderTimeoutMs === undefined &&
      this.#handshakeTimeoutMs === undefined
    ) {
      this.#run(connection);
      return;
    }
    this.#admit(connection).then((admitted) => {
      if (admitted) this.#run(connection);
      else this.#drop(connection);
    });
  }

  /**
   * With `acceptProxy` or TLS, what comes before the handler: the PROXY
   * header, then the handshake. Whether the connection goes on; if not,
   * its failure was logged.
   */
  async #admit(connection: Connection): Promise<boolean> {
    if (
      this.#proxyHeaderTimeoutMs !== undefined &&
      !(await this.#admitProxied(connection))
    ) {
      return false;
    }
    if (this.#handshakeTimeoutMs !== undefined) {
      const failure = await this.#handshake(connection);
      if (failure !== undefined) {
        // Closed by shutdown or the idle sweep: that logged already.
        if (!connection.closed) this.#handshakeFailed.event(failure);
        return false;
      }
    }
    return true;
  }

  /**
   * Runs the handler, then logs the closing line. Not `async`: a function
   * awaiting the handler stayed suspended, generator and registers, for
   * the connection's whole life (about 240 bytes of heap a connection).
   */
  #run(connection: Connection): void {
    this.log(`${this.prefix}accepted ${connection.peer}${connection.via}`);
    let running: Promise<void>;
    try {
      // As `await` would: a handler that returns no promise (plain JS) too.
      running = Promise.resolve(this.#handler(connection.conn, connection));
    } catch (error) {
      running = Promise.reject(error);
    }
    running.then(
      () => this.#ended(connection, ""),
      (error: Error) =>
        this.#ended(
          connection,
          connection.closed
            ? ""
            : this.#keepAlive && isKeepAliveTimeout(error)
            ? ": peer dead (keepalive probes unanswered)"
            : `: ${error.message}`,
        ),
    );
  }

  /** After the handler: closes, forgets and logs the connection. */
  #ended(connection: Connection, failure: string): void {
    const cut = connection.closed;
    connection.close();
    this.#untrack(connection);
    this.log(
      `${this.prefix}closed ${connection.peer} (${connection.bytesIn} bytes in, ${connection.bytesOut} bytes out)${connection.via}${
        connection.note ? ` ${connection.note}` : ""
      }${cut ? "" : failure}`,
    );
    if (this.#connections.size === 0) this.#drained?.();
  }

  /** Ends a connection the handler never got (its failure logged already). */
  #drop(connection: Connection): void {
    connection.close();
    this.#untrack(connection);
    if (this.#connections.size === 0) this.#drained?.();
  }

  /**
   * Handshakes before the handler runs, bounded in time, so a client that
   * sends garbage or nothing is one log line, not an error inside the
   * handler. Resolves to the failure, or `undefined` once done.
   */
  async #handshake(connection: Connection): Promise<string | undefined> {
    const conn = connection.conn as Deno.TlsConn;
    const who = connection.peer + connection.via;
    const timeoutMs = this.#handshakeTimeoutMs!;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<string>((resolve) =>
      timer = setTimeout(
        () =>
          resolve(
            `${who}: no handshake within ${timeoutMs / 1000} s`,
          ),
        timeoutMs,
      )
    );
    try {
      return await Promise.race([
        conn.handshake().then(
          () => undefined,
          (error: Error) => `${who}: ${withoutOsError(error.message)}`,
        ),
        timedOut,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Closes the listener, unless it is a Unix one whose path now holds
   * something else: Deno removes a Unix listener's path when the listener
   * closes (whatever is there by then), and a file or another server's
   * socket put there meanwhile is not ours to delete. Such a listener is
   * left open (no longer keeping the process alive, accepting nothing)
   * until the process exits; `Deno.exit`, which the scripts end with,
   * removes nothing.
   */
  #closeListener(): void {
    const listener = this.#boundListener;
    if (!listener) return;
    if (
      "path" in this.addr &&
      socketFileOwner(this.addr.path, this.#binding.inode()) === "other"
    ) {
      listener.unref();
      this.#stopAccepting();
      this.log(
        `${this.prefix}${this.addr.path} is no longer this server's socket; left in place`,
      );
      return;
    }
    closeQuietly(listener);
  }

  #startIdleSweep(): void {
    // One timer for all connections: each tick ages every connection, and
    // handlers reset the age with `active()`; no timer per connection.
    this.#idleTickMs = Math.max(10, Math.min(1000, this.#idleTimeoutMs / 4));
    // The first tick after `active()` comes up to one tick early, hence the
    // extra tick: a connection closes after between S and S + tick idle.
    const limit = Math.ceil(this.#idleTimeoutMs / this.#idleTickMs) + 1;
    this.#idleTimer = setInterval(() => {
      for (const connection of this.#connections) {
        if (++connection.idleTicks >= limit) {
          this.log(
            `${this.prefix}idle timeout: closing ${connection.peer} after ${
              this.#idleTimeoutMs / 1000
            } s`,
          );
          connection.close();
        }
      }
    }, this.#idleTickMs);
  }

  protected override shortenGrace(gracePeriodMs: number): void {
    this.#startGrace?.(gracePeriodMs);
  }

  protected async stop(gracePeriodMs: number): Promise<void> {
    this.#closeListener();
    clearTimeout(this.#backoffTimer);
    this.#wakeBackoff?.();
    // The listener closes for real only once no accept is pending on it:
    // a pending accept() holds the socket until it has been cancelled, a
    // turn of the event loop or more after close(). Its rejection ends the
    // loop (or the loop was between accepts, or left the listener open).
    await this.#acceptLoopDone;
    this.socketClosedNow();
    if (this.#connections.size > 0) {
      this.log(
        Number.isFinite(gracePeriodMs)
          ? `${this.prefix}shutting down: waiting up to ${
            gracePeriodMs / 1000
          } s for ${this.#connections.size} connection(s)`
          : `${this.prefix}stopped accepting: ${this.#connections.size} connection(s) go on until they end`,
      );
      const drained = new Promise<void>((resolve) => this.#drained = resolve);
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      const graceOver = new Promise<boolean>((resolve) => {
        this.#startGrace = (ms) => {
          clearTimeout(graceTimer);
          graceTimer = setTimeout(() => resolve(true), ms);
        };
      });
      if (Number.isFinite(gracePeriodMs)) this.#startGrace!(gracePeriodMs);
      const cut = await Promise.race([drained.then(() => false), graceOver]);
      this.#startGrace = undefined;
      clearTimeout(graceTimer);
      if (cut) {
        const count = this.#connections.size;
        for (const connection of this.#connections) connection.close();
        // A handler blocked on something other than its connection (a full
        // stdout pipe, say) would hold the exit forever: wait a moment only.
        let stuckTimer: ReturnType<typeof setTimeout> | undefined;
        const stuck = await Promise.race([
          drained.then(() => false),
          new Promise<boolean>((resolve) =>
            stuckTimer = setTimeout(() => resolve(true), HANDLER_STOP_MS)
          ),
        ]);
        clearTimeout(stuckTimer);
        this.log(
          `${this.prefix}grace period over: closed ${count} connection(s) still in flight`,
        );
        if (stuck) {
          this.log(
            `${this.prefix}${this.#connections.size} handler(s) did not stop after their connection closed; stopping anyway`,
          );
        }
      }
    }
    clearInterval(this.#idleTimer);
    this.#refusedAccess.flush();
    this.#refusedFull.flush();
    this.#refusedSource.flush();
    this.#handshakeFailed.flush();
    this.#abortedEarly.flush();
    this.#badProxyHeader.flush();
  }
}
