/**
 * The server life cycle every server here shares: listen on a transport, an
 * accept loop that survives accept errors, a connection limit, a cheap idle
 * timeout, graceful shutdown, and one log line per event. Servers look like
 * `Deno.serve`'s: `addr`, `finished`, `shutdown()`, `[Symbol.asyncDispose]`.
 *
 * @module
 */

import { rerunCommand } from "./cli.ts";
import {
  ReplyMemory,
  serviceReplyKind,
  sourceKey,
  SourceRateLimiter,
} from "./datagram_guard.ts";
import { formatAddr, joinHostPort, type Transport } from "./endpoint.ts";
import { FloodLog, type Log, stderrLog } from "./log.ts";
import type { TlsCertificate } from "./tls.ts";
import {
  checkTlsCertificate,
  startServerTls,
  tlsServerContext,
} from "./tls_node.ts";
import { createUnixSocket, prepareUnixPath, socketFileOwner } from "./unix.ts";
import { answerGroupShutdown, spawnWorkers, workerInit } from "./workers.ts";
import {
  checkKeepAlive,
  isKeepAliveTimeout,
  type KeepAliveConfig,
  setKeepAlive,
} from "./keepalive.ts";

/** A running server (or a group of them, see {@linkcode combineServers}). */
export interface Server extends AsyncDisposable {
  /** The bound address (for `port: 0`, the real port). */
  readonly addr: Deno.Addr;
  /**
   * Settles once the socket is bound and serving; for TCP and UDP that is at
   * once, for a Unix socket after a stale socket file was checked and
   * replaced. Rejects when binding fails (the error is also logged).
   */
  readonly ready: Promise<void>;
  /** Resolves once the server has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, lets connections in flight finish within the grace
   * period, then closes the rest; resolves like `finished`.
   */
  shutdown(): Promise<void>;
}

/** Which peers may use a server; see `AccessList` in `mod.ts`. */
export interface AccessPolicy {
  /** `true` when `addr` may be served. */
  allows(addr: Deno.Addr): boolean;
}

/** Options every server takes. */
export interface ServerOptions {
  /** `tcp` (default), `udp`, `unix` (stream) or `unixpacket` (datagram). */
  transport?: Transport;
  /** Address to bind for TCP and UDP. Default `0.0.0.0`. */
  hostname?: string;
  /** Port for TCP and UDP; 0 picks a free one. Default: the service's own. */
  port?: number;
  /**
   * Socket file for `unix` and `unixpacket`. A stale socket there is
   * replaced; anything else is refused. When the server stops it removes
   * the file only if it is still the socket it made: a file or another
   * server's socket put there meanwhile stays (a `unix` listener is then
   * left open, accepting nothing, until the process exits, because Deno
   * removes a listener's path when it closes; `Deno.exit` does not).
   */
  path?: string;
  /**
   * Permission bits of the socket file for `unix` and `unixpacket`. Default
   * `0o600`: only the owner may connect.
   */
  mode?: number;
  /** Most connections served at once; the next is closed at once. Default 4096. */
  maxConnections?: number;
  /**
   * TCP: most connections at once from one source, TLS handshakes in
   * progress included; the next is closed at once (logged, counted, like
   * `maxConnections`). A source is an IPv4 address (IPv4-mapped ones
   * count as IPv4) or an IPv6 /64, as one host may use a whole /64. 0: no
   * limit. Default {@linkcode DEFAULT_PER_SOURCE}. With `workers`, each
   * thread counts its own connections. Unix sockets have no sources: the
   * socket file's mode is their access control.
   */
  perSource?: number;
  /** Closes a connection idle this long, in ms; 0 (default) never. */
  idleTimeoutMs?: number;
  /** How long shutdown waits for connections in flight, in ms. Default 10000. */
  gracePeriodMs?: number;
  /** Who may connect; everyone when absent. */
  access?: AccessPolicy;
  /**
   * Serve TLS (TCP only): the PEM certificate chain and key, e.g. from
   * `readTlsFiles`. Plain TCP when absent. Handlers get a
   * {@linkcode Deno.TlsConn} whose handshake is already done; a client
   * refused by `access` or `maxConnections` is closed before any TLS byte.
   */
  tls?: TlsCertificate;
  /**
   * TLS: a client that has not completed its handshake this many ms after
   * being accepted is closed (one log line). Default 10000.
   */
  handshakeTimeoutMs?: number;
  /**
   * TCP keepalive on every accepted connection (`true`: on with the
   * system's timing; a config also tunes it, which needs `--allow-ffi`, see
   * {@linkcode setKeepAlive}). A peer that stops answering the probes is
   * then logged as dead and its connection closed. Default off.
   */
  keepAlive?: KeepAliveConfig | boolean;
  /** UDP: answer datagrams from source ports below 1024. Default `false`. */
  allowLowPorts?: boolean;
  /**
   * Datagram replies per second to one source, whatever its port: an IPv4
   * address (IPv4-mapped ones count as IPv4), an IPv6 /64 or a Unix socket
   * path; bursts up to as many. 0: no limit. Default 100. The table of
   * sources is bounded (see `SourceRateLimiter` in `lib/datagram_guard.ts`).
   */
  udpRatePerSecond?: number;
  /**
   * Datagrams: the loop guard, on unless `false`, whatever the rate limit.
   * A datagram identical to the reply sent to its source (address and
   * port) within the last second is that reply bounced back by a server
   * that answers anything, and is dropped; and a service whose reply is
   * not the datagram itself (all but echo) does not answer a datagram
   * shaped like a simple service's reply (text in CRLF lines, or an
   * RFC 868 time: see `serviceReplyKind` in `lib/datagram_guard.ts`). So
   * a loop between two servers that answer anything ends within two
   * round trips, whatever their ports. Drops are logged, counted.
   */
  loopGuard?: boolean;
  /**
   * UDP: source ports never answered, even with `allowLowPorts`: the ports
   * of services that answer anything (echo, chargen...), where a reply
   * could start an endless loop. Default none.
   */
  dropSourcePorts?: Iterable<number>;
  /** Where log lines go. Default {@linkcode stderrLog}. */
  log?: Log;
  /** Label for log lines of a server with several sockets (`echo/tcp`). */
  label?: string;
  /** Aborting this signal shuts the server down. */
  signal?: AbortSignal;
  /**
   * TCP: serve with this many threads, each with its own listener on the
   * same port (`SO_REUSEPORT`, Linux), sharing `maxConnections` and
   * shutdown; see `lib/workers.ts`. The workers run the main module again,
   * so this is for scripts (`--workers N`). Default 1.
   */
  workers?: number;
}

/** What a stream handler learns about its connection. */
export interface ConnectionContext {
  /** The peer, formatted for logs (`127.0.0.1:5000`). */
  readonly peer: string;
  /** Call after moving data, so the idle timeout starts again. */
  active(): void;
  /** Bytes received, for the closing log line; handlers add to it. */
  bytesIn: number;
  /** Bytes sent, for the closing log line; handlers add to it. */
  bytesOut: number;
}

/** Serves one accepted connection; the server closes it afterwards. */
export type StreamHandler = (
  conn: Deno.Conn,
  context: ConnectionContext,
) => Promise<void>;

/**
 * Answers one datagram: the reply to send back to its source, or nothing.
 * `data` is only valid until the handler returns.
 */
export type DatagramHandler = (
  data: Uint8Array,
  source: Deno.Addr,
) => Uint8Array | null | undefined | Promise<Uint8Array | null | undefined>;

/** The handlers of a service: one per kind of transport it supports. */
export interface Service {
  /** Short name for log lines (`echo`). */
  name: string;
  /** Well-known port, used when `options.port` is absent. */
  defaultPort: number;
  /** Default bind address. Default `0.0.0.0`. */
  defaultHostname?: string;
  /** Handler for `tcp` and `unix`. */
  stream?: StreamHandler;
  /** Handler for `udp` and `unixpacket`. */
  datagram?: DatagramHandler;
}

/** Most clients at once unless `maxConnections` says otherwise. */
export const DEFAULT_MAX_CONNECTIONS = 4096;

/**
 * Connections at once from one source unless `perSource` says otherwise:
 * 256, a sixteenth of the default 4096 connections, so one host (one
 * address, or one IPv6 /64) cannot hold every slot; at least 16 hosts
 * must collude to fill the server, while a host's ordinary fan-out (a
 * browser's 6 per origin, a build farm's hundred) still fits.
 *
 * @example
 * ```ts
 * import { DEFAULT_PER_SOURCE } from "./server.ts";
 *
 * if (DEFAULT_PER_SOURCE !== 256) throw new Error(String(DEFAULT_PER_SOURCE));
 * ```
 */
export const DEFAULT_PER_SOURCE = 256;
/** Grace period on shutdown unless `gracePeriodMs` says otherwise. */
export const DEFAULT_GRACE_MS = 10_000;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** UDP replies a second to one source unless `udpRatePerSecond` says otherwise. */
export const DEFAULT_UDP_RATE = 100;
/** How long handlers get to return once shutdown closed their connections. */
const HANDLER_STOP_MS = 1000;
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/**
 * Starts `service` on the transport `options` name: the one entry point the
 * servers in `servers/` build on. Binding TCP and UDP happens before it
 * returns (so `addr` holds the real port); errors throw.
 *
 * @example An in-process echo server on a free port
 * ```ts
 * import { serve } from "./server.ts";
 * import { silentLog } from "./log.ts";
 *
 * await using server = serve({
 *   name: "echo",
 *   defaultPort: 7,
 *   async stream(conn) {
 *     const buffer = new Uint8Array(1024);
 *     for (let n; (n = await conn.read(buffer)) !== null;) {
 *       await conn.write(buffer.subarray(0, n));
 *     }
 *   },
 * }, { hostname: "127.0.0.1", port: 0, log: silentLog });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("hi"));
 * const reply = new Uint8Array(2);
 * await conn.read(reply);
 * ```
 */
export function serve(service: Service, options: ServerOptions = {}): Server {
  const transport = options.transport ?? "tcp";
  if (transport === "tcp" || transport === "unix") {
    if (!service.stream) {
      throw new TypeError(`${service.name} does not serve ${transport}`);
    }
    if (transport === "tcp" && (options.workers ?? 1) > 1) {
      return serveGroup(service, service.stream, options);
    }
    return new StreamServer(service, service.stream, transport, options);
  }
  if (!service.datagram) {
    throw new TypeError(`${service.name} does not serve ${transport}`);
  }
  return new DatagramServer(service, service.datagram, transport, options);
}

class Connection implements ConnectionContext {
  readonly conn: Deno.Conn;
  readonly peer: string;
  /** Its source for `perSource` ({@linkcode sourceKey}), when counted. */
  readonly source?: string;
  idleTicks = 0;
  bytesIn = 0;
  bytesOut = 0;
  closed = false;

  constructor(conn: Deno.Conn, source?: string) {
    this.conn = conn;
    this.peer = formatAddr(conn.remoteAddr);
    this.source = source;
  }

  active(): void {
    this.idleTicks = 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed by the handler.
    }
  }
}

/**
 * Binding failed: the message says where and what to do about it (another
 * port, root for ports below 1024); `cause` is the system's error.
 *
 * @example
 * ```ts
 * import { ListenError, serve } from "./server.ts";
 * import { silentLog } from "./log.ts";
 *
 * const service = { name: "discard", defaultPort: 9, async stream() {} };
 * await using first = serve(service, { hostname: "127.0.0.1", port: 0, log: silentLog });
 * const { port } = first.addr as Deno.NetAddr;
 * try {
 *   serve(service, { hostname: "127.0.0.1", port, log: silentLog });
 *   throw new Error("bound twice");
 * } catch (error) {
 *   if (!(error instanceof ListenError)) throw error;
 * }
 * ```
 */
export class ListenError extends Error {
  /** Where the server tried to listen (`0.0.0.0:13`, or a socket path). */
  readonly address: string;

  /** Builds the error; `cause` is the system's error. */
  constructor(message: string, address: string, cause: unknown) {
    super(message, { cause });
    this.name = "ListenError";
    this.address = address;
  }
}

function bind<T>(listen: () => T, hostOrPath: string, port?: number): T {
  try {
    return listen();
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const address = port === undefined
      ? hostOrPath
      : joinHostPort(hostOrPath, port);
    const reason = (error as Error).message.replace(/ \(os error \d+\)$/, "");
    let message = `cannot listen on ${address}: ${reason}`;
    if (error instanceof Deno.errors.AddrInUse) {
      message = `address ${address} is already in use${
        port === undefined ? "" : " (pick another port with --port)"
      }`;
    } else if (
      error instanceof Deno.errors.PermissionDenied && port !== undefined &&
      port < 1024
    ) {
      message = `permission denied listening on ${address}: ports below 1024 ` +
        `need root or CAP_NET_BIND_SERVICE; ${userPortHint(hostOrPath, port)}`;
    } else if (error instanceof Deno.errors.AddrNotAvailable) {
      message = `cannot listen on ${address}: no such address on this host`;
    } else if (error instanceof Deno.errors.InvalidData) {
      message =
        `cannot listen on ${address}: bad TLS certificate or key: ${reason}`;
    }
    throw new ListenError(message, address, error);
  }
}

/** The command that runs this script on port + 10000, as inetd would. */
function userPortHint(hostname: string, port: number): string {
  const user = String(port + 10000);
  const udp = Deno.args.includes("--udp");
  const command = rerunCommand(
    udp
      ? ["--unstable-net", "--allow-net"]
      : [`--allow-net=${joinHostPort(hostname, port + 10000)}`],
    { port: user },
  );
  return command ? `as a user: ${command}` : `as a user, pick --port ${user}`;
}

function keepAliveConfig(
  option: KeepAliveConfig | boolean | undefined,
): KeepAliveConfig | undefined {
  if (option === undefined || option === false) return undefined;
  if (option === true) return {};
  return option.enable === false ? undefined : option;
}

function unixPath(transport: Transport, options: ServerOptions): string {
  if (!options.path) throw new TypeError(`${transport} needs a socket path`);
  return options.path;
}

/** Shared by both kinds of server: state, logging and the stop sequence. */
abstract class BaseServer implements Server {
  readonly ready: Promise<void>;
  readonly finished: Promise<void>;
  protected readonly log: Log;
  protected readonly prefix: string;
  protected readonly gracePeriodMs: number;
  protected closing = false;
  #resolveFinished!: () => void;
  #shutdownStarted = false;

  constructor(options: ServerOptions, ready: Promise<void>) {
    this.log = options.log ?? stderrLog;
    this.prefix = options.label ? `${options.label}: ` : "";
    this.gracePeriodMs = options.gracePeriodMs ?? DEFAULT_GRACE_MS;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.ready = ready;
    // A rejected `ready` also settles `finished`; a caller that never awaits
    // `ready` must not crash on an unhandled rejection.
    ready.catch(() => {
      this.closing = true;
      this.#resolveFinished();
    });
    options.signal?.addEventListener("abort", () => this.shutdown(), {
      once: true,
    });
  }

  abstract get addr(): Deno.Addr;

  /** Closes the socket and drains; resolves when all is closed. */
  protected abstract stop(): Promise<void>;

  shutdown(): Promise<void> {
    if (!this.#shutdownStarted) {
      this.#shutdownStarted = true;
      this.closing = true;
      this.ready.then(() => this.stop(), () => {}).finally(() =>
        this.#resolveFinished()
      );
    }
    return this.finished;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}

class StreamServer extends BaseServer {
  readonly #handler: StreamHandler;
  readonly #connections = new Set<Connection>();
  readonly #maxConnections: number;
  readonly #idleTimeoutMs: number;
  readonly #access?: AccessPolicy;
  readonly #keepAlive?: KeepAliveConfig;
  readonly #refusedFull: FloodLog;
  readonly #perSource: number;
  /** Open connections by source, for `perSource`. */
  readonly #bySource = new Map<string, number>();
  readonly #refusedSource: FloodLog;
  readonly #refusedAccess: FloodLog;
  readonly #handshakeFailed: FloodLog;
  /** Set for TLS: the handshake deadline, in ms. */
  readonly #handshakeTimeoutMs?: number;
  readonly #abortedEarly: FloodLog;
  readonly #tlsContext?: ReturnType<typeof tlsServerContext>;
  #idleTimer?: ReturnType<typeof setInterval>;
  #idleTickMs = 0;
  #backoffTimer?: ReturnType<typeof setTimeout>;
  #wakeBackoff?: () => void;
  #acceptLoopDone: Promise<void> = Promise.resolve();
  #drained?: () => void;
  readonly #addr: Deno.Addr;

  constructor(
    service: Service,
    handler: StreamHandler,
    transport: "tcp" | "unix",
    options: ServerOptions,
    group?: GroupShare,
  ) {
    let listener: Deno.Listener | undefined;
    let ready: Promise<void>;
    let addr: Deno.Addr;
    let socketInode: number | undefined;
    const keepAlive = transport === "tcp"
      ? keepAliveConfig(options.keepAlive)
      : undefined;
    // Before binding: a missing --allow-ffi is one error at start, not one
    // per client.
    if (keepAlive) {
      // Set on the plain TCP connection, before TLS starts: no FFI needed
      // for plain keepalive on a TLS server.
      checkKeepAlive(keepAlive);
    }
    if (transport === "tcp") {
      const hostname = options.hostname ?? service.defaultHostname ??
        "0.0.0.0";
      const port = options.port ?? service.defaultPort;
      listener = bind(
        () =>
          Deno.listen({
            transport: "tcp",
            hostname,
            port,
            ...(group && { reusePort: true }),
          }),
        hostname,
        port,
      );
      addr = listener.addr;
      ready = Promise.resolve();
      if (options.tls) {
        // A key that does not fit its certificate fails here, once.
        const bound = listener;
        ready = checkTlsCertificate(options.tls).catch((error) => {
          bound.close();
          throw new ListenError(
            `cannot serve TLS on ${
              formatAddr(addr)
            }: certificate and key do not work together (does the key match the certificate?): ${
              (error as Error).message.split("\n")[0]
            }`,
            formatAddr(addr),
            error,
          );
        });
      }
    } else {
      if (options.tls) throw new TypeError("TLS is served over TCP only");
      const path = unixPath(transport, options);
      addr = { transport: "unix", path };
      ready = prepareUnixPath(path).then(() => {
        listener = bind(
          () =>
            createUnixSocket(
              path,
              () => Deno.listen({ transport: "unix", path }),
              options.mode,
            ),
          path,
        );
        // While the listener is open its inode cannot be reused: this
        // number tells our socket from whatever replaces it.
        socketInode = Deno.lstatSync(path).ino ?? undefined;
      });
    }
    super(options, ready);
    this.#addr = addr;
    this.#socketInode = () => socketInode;
    this.#handler = handler;
    this.#groupConnections = group?.connections;
    this.#maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 0;
    this.#access = options.access;
    this.#keepAlive = keepAlive;
    this.#refusedFull = new FloodLog(this.log, `${this.prefix}refused`);
    this.#perSource = transport === "tcp"
      ? options.perSource ?? DEFAULT_PER_SOURCE
      : 0;
    if (!Number.isInteger(this.#perSource) || this.#perSource < 0) {
      throw new RangeError(
        `perSource must be a whole number, 0 or more: ${options.perSource}`,
      );
    }
    this.#refusedSource = new FloodLog(this.log, `${this.prefix}refused`);
    this.#refusedAccess = new FloodLog(this.log, `${this.prefix}refused`);
    this.#handshakeFailed = new FloodLog(
      this.log,
      `${this.prefix}TLS handshake failed:`,
    );
    if (options.tls) {
      this.#handshakeTimeoutMs = options.handshakeTimeoutMs ??
        DEFAULT_HANDSHAKE_TIMEOUT_MS;
      this.#tlsContext = tlsServerContext(options.tls);
    }
    this.#abortedEarly = new FloodLog(this.log, `${this.prefix}dropped`);
    // A Unix listener exists once `ready` settles; a TCP one already does,
    // but with TLS it accepts only once the certificate passed its check.
    const start = (l: Deno.Listener) => {
      this.#acceptLoopDone = this.#acceptLoop(l);
      if (this.#idleTimeoutMs > 0) this.#startIdleSweep();
    };
    if (listener && !options.tls) {
      this.#boundListener = listener;
      start(listener);
    } else {
      ready.then(() => {
        this.#boundListener = listener!;
        if (this.closing) listener!.close();
        else start(listener!);
      }, () => {});
    }
  }

  #boundListener?: Deno.Listener;
  /** Unix: the inode of the socket file this server created, once bound. */
  readonly #socketInode: () => number | undefined;
  /** Ends the accept loop without closing the listener (see `stop()`). */
  #stopAccepting?: () => void;
  readonly #acceptStopped = new Promise<null>((resolve) =>
    this.#stopAccepting = () => resolve(null)
  );
  /** For a worker group: connections open in the whole group. */
  readonly #groupConnections?: Int32Array;

  #open(): number {
    return this.#groupConnections
      ? Atomics.load(this.#groupConnections, 0)
      : this.#connections.size;
  }

  #track(connection: Connection): void {
    this.#connections.add(connection);
    if (connection.source !== undefined) {
      this.#bySource.set(
        connection.source,
        (this.#bySource.get(connection.source) ?? 0) + 1,
      );
    }
    if (this.#groupConnections) Atomics.add(this.#groupConnections, 0, 1);
  }

  #untrack(connection: Connection): void {
    if (!this.#connections.delete(connection)) return;
    if (this.#groupConnections) Atomics.sub(this.#groupConnections, 0, 1);
    if (connection.source !== undefined) {
      const left = this.#bySource.get(connection.source)! - 1;
      if (left > 0) this.#bySource.set(connection.source, left);
      else this.#bySource.delete(connection.source);
    }
  }

  get addr(): Deno.Addr {
    return this.#addr;
  }

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    let backoffMs = 0;
    while (!this.closing) {
      let conn: Deno.Conn;
      try {
        const accepting = listener.accept();
        const accepted = await Promise.race([accepting, this.#acceptStopped]);
        if (accepted === null) {
          // Stopped with the listener left open: whoever still connects
          // through it is closed.
          accepting.then((late) => late.close(), () => {});
          break;
        }
        conn = accepted;
        backoffMs = 0;
      } catch (error) {
        if (this.closing) break;
        if (
          error instanceof Deno.errors.NotConnected ||
          error instanceof Deno.errors.ConnectionAborted ||
          error instanceof Deno.errors.ConnectionReset
        ) {
          // That one client reset before it was accepted (ENOTCONN from
          // getpeername, ECONNABORTED): the next one is fine, so no
          // backoff, which would make every queued client wait.
          this.#abortedEarly.event(
            `a connection reset before it was accepted: ${
              (error as Error).message
            }`,
          );
          continue;
        }
        // EMFILE, ENFILE, ENOBUFS...: back off and go on, as Go's
        // http.Server does, instead of dying like the seed's loop.
        backoffMs = Math.min(
          Math.max(backoffMs * 2, ACCEPT_BACKOFF_MIN_MS),
          ACCEPT_BACKOFF_MAX_MS,
        );
        this.log(
          `${this.prefix}accept failed: ${
            (error as Error).message
          }; retrying in ${backoffMs} ms`,
        );
        await this.#sleep(backoffMs);
        continue;
      }
      if (this.#access && !this.#access.allows(conn.remoteAddr)) {
        this.#refusedAccess.event(
          `${formatAddr(conn.remoteAddr)}: not allowed`,
        );
        conn.close();
        continue;
      }
      const source = this.#perSource > 0
        ? sourceKey(conn.remoteAddr)
        : undefined;
      if (
        source !== undefined &&
        (this.#bySource.get(source) ?? 0) >= this.#perSource
      ) {
        this.#refusedSource.event(
          `${
            formatAddr(conn.remoteAddr)
          }: too many connections from ${source} (max ${this.#perSource} per source)`,
        );
        conn.close();
        continue;
      }
      if (this.#open() >= this.#maxConnections) {
        this.#refusedFull.event(
          `${
            formatAddr(conn.remoteAddr)
          }: too many connections (max ${this.#maxConnections})`,
        );
        conn.close();
        continue;
      }
      if (this.#keepAlive) {
        try {
          setKeepAlive(conn, this.#keepAlive);
        } catch (error) {
          this.log(
            `${this.prefix}keepalive not set for ${
              formatAddr(conn.remoteAddr)
            }: ${(error as Error).message}`,
          );
        }
      }
      // TLS starts only now, after the refusals above: a refused client
      // never gets a TLS byte.
      if (this.#tlsContext) {
        conn = startServerTls(conn, this.#tlsContext);
      }
      this.#handle(new Connection(conn, source));
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wakeBackoff = resolve;
      this.#backoffTimer = setTimeout(resolve, ms);
    });
  }

  async #handle(connection: Connection): Promise<void> {
    this.#track(connection);
    if (this.#handshakeTimeoutMs !== undefined) {
      const failure = await this.#handshake(connection);
      if (failure !== undefined) {
        // Closed by shutdown or the idle sweep: that logged already.
        if (!connection.closed) this.#handshakeFailed.event(failure);
        connection.close();
        this.#untrack(connection);
        if (this.#connections.size === 0) this.#drained?.();
        return;
      }
    }
    this.log(`${this.prefix}accepted ${connection.peer}`);
    let failure = "";
    try {
      await this.#handler(connection.conn, connection);
    } catch (error) {
      if (!connection.closed) {
        failure = this.#keepAlive && isKeepAliveTimeout(error)
          ? ": peer dead (keepalive probes unanswered)"
          : `: ${(error as Error).message}`;
      }
    } finally {
      const cut = connection.closed;
      connection.close();
      this.#untrack(connection);
      this.log(
        `${this.prefix}closed ${connection.peer} (${connection.bytesIn} bytes in, ${connection.bytesOut} bytes out)${
          cut ? "" : failure
        }`,
      );
      if (this.#connections.size === 0) this.#drained?.();
    }
  }

  /**
   * Handshakes before the handler runs, bounded in time, so a client that
   * sends garbage or nothing is one log line, not an error inside the
   * handler. Resolves to the failure, or `undefined` once done.
   */
  async #handshake(connection: Connection): Promise<string | undefined> {
    const conn = connection.conn as Deno.TlsConn;
    const timeoutMs = this.#handshakeTimeoutMs!;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<string>((resolve) =>
      timer = setTimeout(
        () =>
          resolve(
            `${connection.peer}: no handshake within ${timeoutMs / 1000} s`,
          ),
        timeoutMs,
      )
    );
    try {
      return await Promise.race([
        conn.handshake().then(
          () => undefined,
          (error: Error) =>
            `${connection.peer}: ${
              error.message.replace(/ \(os error \d+\)$/, "")
            }`,
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
      "path" in this.#addr &&
      socketFileOwner(this.#addr.path, this.#socketInode()) === "other"
    ) {
      listener.unref();
      this.#stopAccepting?.();
      this.log(
        `${this.prefix}${this.#addr.path} is no longer this server's socket; left in place`,
      );
      return;
    }
    try {
      listener.close();
    } catch {
      // Already closed.
    }
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

  protected async stop(): Promise<void> {
    this.#closeListener();
    clearTimeout(this.#backoffTimer);
    this.#wakeBackoff?.();
    await this.#acceptLoopDone;
    if (this.#connections.size > 0) {
      this.log(
        `${this.prefix}shutting down: waiting up to ${
          this.gracePeriodMs / 1000
        } s for ${this.#connections.size} connection(s)`,
      );
      const drained = new Promise<void>((resolve) => this.#drained = resolve);
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      const graceOver = new Promise<boolean>((resolve) =>
        graceTimer = setTimeout(() => resolve(true), this.gracePeriodMs)
      );
      const cut = await Promise.race([drained.then(() => false), graceOver]);
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
  }
}

/** What the threads of a worker group share. */
interface GroupShare {
  connections: Int32Array;
}

/**
 * A TCP server on `options.workers` threads: this thread listens first (so
 * port 0 becomes a real port), then starts the others on that port. In a
 * worker of the group, the same call joins the group instead.
 */
function serveGroup(
  service: Service,
  handler: StreamHandler,
  options: ServerOptions,
): Server {
  const init = workerInit;
  const index = init?.index ?? 0;
  const connections = init?.connections ??
    new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
  const label = `${options.label ? `${options.label} ` : ""}worker ${index}`;
  const server = new StreamServer(service, handler, "tcp", {
    ...options,
    label,
    port: init?.port ?? options.port,
  }, { connections });
  if (init) {
    answerGroupShutdown(server);
    return server;
  }
  const log = options.log ?? stderrLog;
  const group = spawnWorkers(
    options.workers!,
    (server.addr as Deno.NetAddr).port,
    connections,
    log,
  );
  const finished = Promise.all([server.finished, group.finished]).then(
    () => {},
  );
  const shutdown = () =>
    Promise.all([server.shutdown(), group.shutdown()]).then(() => {});
  return {
    addr: server.addr,
    ready: Promise.all([server.ready, group.ready]).then(() => {}),
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

class DatagramServer extends BaseServer {
  #socket?: Deno.DatagramConn;
  readonly #handler: DatagramHandler;
  readonly #allowLowPorts: boolean;
  readonly #dropSourcePorts: ReadonlySet<number>;
  readonly #access?: AccessPolicy;
  readonly #rate: SourceRateLimiter;
  /** For the loop guard; absent when it is off. */
  readonly #replies?: ReplyMemory;
  readonly #droppedLowPort: FloodLog;
  readonly #droppedRate: FloodLog;
  readonly #droppedLoop: FloodLog;
  readonly #refusedAccess: FloodLog;
  readonly #addr: Deno.Addr;
  /** The inode of the socket file this server created, once bound. */
  readonly #socketFile: () => number | undefined;
  #loopDone: Promise<void> = Promise.resolve();
  /** Settles once the datagram being handled has been answered. */
  #inFlight?: Promise<void>;

  constructor(
    service: Service,
    handler: DatagramHandler,
    transport: "udp" | "unixpacket",
    options: ServerOptions,
  ) {
    let socket: Deno.DatagramConn | undefined;
    let socketFile: number | undefined;
    let ready: Promise<void>;
    let addr: Deno.Addr;
    if (transport === "udp") {
      const hostname = options.hostname ?? service.defaultHostname ??
        "0.0.0.0";
      const port = options.port ?? service.defaultPort;
      socket = bind(
        () => Deno.listenDatagram({ transport: "udp", hostname, port }),
        hostname,
        port,
      );
      addr = socket.addr;
      ready = Promise.resolve();
    } else {
      const path = unixPath(transport, options);
      addr = { transport: "unixpacket", path };
      ready = prepareUnixPath(path).then(() => {
        socket = bind(
          () =>
            createUnixSocket(
              path,
              () => Deno.listenDatagram({ transport: "unixpacket", path }),
              options.mode,
            ),
          path,
        );
        socketFile = Deno.lstatSync(path).ino ?? undefined;
      });
    }
    super(options, ready);
    this.#addr = addr;
    this.#socketFile = () => socketFile;
    this.#handler = handler;
    this.#allowLowPorts = options.allowLowPorts ?? false;
    this.#dropSourcePorts = new Set(options.dropSourcePorts ?? []);
    this.#access = options.access;
    this.#rate = new SourceRateLimiter(
      options.udpRatePerSecond ?? DEFAULT_UDP_RATE,
    );
    this.#droppedLowPort = new FloodLog(this.log, `${this.prefix}dropped`);
    this.#droppedRate = new FloodLog(this.log, `${this.prefix}dropped`);
    if (options.loopGuard !== false) this.#replies = new ReplyMemory();
    this.#droppedLoop = new FloodLog(this.log, `${this.prefix}dropped`);
    this.#refusedAccess = new FloodLog(this.log, `${this.prefix}refused`);
    const start = (s: Deno.DatagramConn) => {
      this.#socket = s;
      if (this.closing) s.close();
      else this.#loopDone = this.#receiveLoop(s);
    };
    if (socket) start(socket);
    else ready.then(() => start(socket!), () => {});
  }

  get addr(): Deno.Addr {
    return this.#addr;
  }

  async #receiveLoop(socket: Deno.DatagramConn): Promise<void> {
    const buffer = new Uint8Array(65536);
    while (!this.closing) {
      let data: Uint8Array;
      let source: Deno.Addr;
      try {
        [data, source] = await socket.receive(buffer);
      } catch (error) {
        if (this.closing) break;
        this.log(`${this.prefix}receive failed: ${(error as Error).message}`);
        continue;
      }
      const peer = formatAddr(source);
      if ("port" in source && source.port < 1024 && !this.#allowLowPorts) {
        // CVE-1999-0103: a reply to a privileged port (echo, chargen...)
        // can start an endless loop between two services.
        this.#droppedLowPort.event(
          `datagram from ${peer}: source port below 1024`,
        );
        continue;
      }
      if ("port" in source && this.#dropSourcePorts.has(source.port)) {
        this.#droppedLowPort.event(
          `datagram from ${peer}: source port is a service port (loop protection)`,
        );
        continue;
      }
      if (this.#access && !this.#access.allows(source)) {
        this.#refusedAccess.event(`datagram from ${peer}: not allowed`);
        continue;
      }
      if ("path" in source && !source.path) {
        this.#droppedRate.event(
          `datagram from an unbound Unix socket: no address to reply to`,
        );
        continue;
      }
      if (this.#replies?.bouncedBack(peer, data)) {
        // Our own reply, back from a server that answers anything: answering
        // it would start a loop (two echo servers: forever).
        this.#droppedLoop.event(
          `datagram from ${peer}: the reply just sent to it, bounced back (loop protection)`,
        );
        continue;
      }
      let answered!: () => void;
      this.#inFlight = new Promise((resolve) => answered = resolve);
      try {
        const reply = await this.#handler(data, source);
        if (!reply) continue;
        const kind = this.#replies && !sameBytes(reply, data)
          ? serviceReplyKind(data)
          : undefined;
        if (kind) {
          // A service whose reply ignores the request, asked by another
          // such service's reply: the two would answer each other forever.
          this.#droppedLoop.event(
            `datagram from ${peer}: ${kind}, another service's reply (loop protection)`,
          );
          continue;
        }
        const from = sourceKey(source);
        if (!this.#rate.take(from)) {
          this.#droppedRate.event(
            `reply to ${peer}: over ${this.#rate.perSecond} replies/s to ${from}`,
          );
          continue;
        }
        await socket.send(reply, source);
        this.#replies?.sent(peer, reply);
      } catch (error) {
        if (this.closing) break;
        this.log(
          `${this.prefix}reply to ${peer} failed: ${(error as Error).message}`,
        );
      } finally {
        this.#inFlight = undefined;
        answered();
      }
    }
  }

  protected async stop(): Promise<void> {
    // A datagram being answered (a handler may even call `shutdown()`, as
    // `--once` does) gets its reply before the socket closes, within the
    // grace period, as stream connections in flight do.
    if (this.#inFlight) {
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#inFlight,
        new Promise((resolve) =>
          graceTimer = setTimeout(resolve, this.gracePeriodMs)
        ),
      ]);
      clearTimeout(graceTimer);
    }
    try {
      this.#socket?.close();
    } catch {
      // Already closed.
    }
    await this.#loopDone;
    if ("path" in this.#addr) {
      // Remove only the socket this server created: whatever replaced it
      // meanwhile (a file, another server's socket) is not ours to delete.
      if (socketFileOwner(this.#addr.path, this.#socketFile()) === "ours") {
        try {
          Deno.removeSync(this.#addr.path);
        } catch {
          // Gone meanwhile.
        }
      }
    }
    this.#droppedLowPort.flush();
    this.#droppedRate.flush();
    this.#droppedLoop.flush();
    this.#refusedAccess.flush();
  }
}

/**
 * `@std/bytes`' `equals`, which lib/ cannot import: `deno install` and
 * `deno compile` run the scripts without deno.json's import map.
 */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Groups servers so they stop together: one `shutdown()` stops all,
 * `finished` resolves when all have, and `addr` is the first one's.
 *
 * @example
 * ```ts
 * import { combineServers, serve } from "./server.ts";
 * import { silentLog } from "./log.ts";
 *
 * const service = { name: "discard", defaultPort: 9, async stream() {}, datagram: () => null };
 * await using servers = combineServers([
 *   serve(service, { hostname: "127.0.0.1", port: 0, log: silentLog }),
 * ]);
 * ```
 */
export function combineServers(servers: Server[]): Server {
  if (servers.length === 0) throw new TypeError("no servers to combine");
  const finished = Promise.all(servers.map((s) => s.finished)).then(() => {});
  const shutdown = () =>
    Promise.all(servers.map((s) => s.shutdown())).then(() => {});
  return {
    addr: servers[0].addr,
    ready: Promise.all(servers.map((s) => s.ready)).then(() => {}),
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

/**
 * The line a server logs once bound: `listening on 127.0.0.1:7`, with
 * `(echo/tcp)` after it when a process serves several sockets.
 *
 * @example
 * ```ts
 * import { listeningLine } from "./server.ts";
 *
 * const line = listeningLine({ transport: "tcp", hostname: "::1", port: 7 });
 * if (line !== "listening on [::1]:7") throw new Error(line);
 * ```
 */
export function listeningLine(addr: Deno.Addr, label?: string): string {
  return `listening on ${formatAddr(addr)}${label ? ` (${label})` : ""}`;
}
