/**
 * The stream server (TCP, TLS over TCP, Unix stream sockets): an accept
 * loop that survives accept errors (`accept_loop.ts`), one admission
 * pipeline for every connection (`admission.ts`: access list, connections
 * per source, connection limit) judged before anything is read, TLS
 * started only after it, a cheap idle timeout and a graceful stop that
 * waits for connections in flight (`connections.ts`). With
 * `acceptProxy`, each connection's PROXY protocol header is read first
 * (one for a client the listener cannot have carried is refused), and the
 * same pipeline judges the client it names, after it, on a Unix socket as
 * over TCP.
 *
 * @module
 */

import { AcceptLoop } from "./accept_loop.ts";
import { Admission, isRefusal, type RefusalReason } from "./admission.ts";
import { type Binding, bindStream } from "./bind.ts";
import { Connection, ConnectionTable } from "./connections.ts";
import { formatAddr } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { closeQuietly, writeAll } from "./io.ts";
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
import { BaseServer } from "./server_base.ts";
import {
  NO_CLIENT_CERTIFICATE,
  serviceLabel,
  StreamMetrics,
} from "./server_metrics.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_PER_SOURCE,
  type ServerOptions,
  type Service,
  type StreamHandler,
} from "./server_options.ts";
import type { TlsServerFiles } from "./tls.ts";
import { chooseTlsEngine } from "./tls_engine.ts";
import { certificateRefusedAlert } from "./tls_hello.ts";
import { ServerTls } from "./tls_server.ts";
import { socketFileOwner } from "./unix.ts";

/** What the threads of a worker group share (see `workers.ts`). */
export interface GroupShare {
  /**
   * Connections open in the whole group (`Atomics` on index 0): a worker
   * has it once the main thread answered; the server accepts only then.
   */
  connections: Promise<Int32Array>;
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
  readonly #refusal?: (reason: RefusalReason) => Uint8Array;
  readonly #binding: Binding<Deno.Listener>;
  readonly #connections: ConnectionTable;
  readonly #admission: Admission;
  readonly #idleTimeoutMs: number;
  readonly #keepAlive?: KeepAliveConfig;
  /** Refusals before anything is read: one flood log per reason. */
  readonly #refused: Record<RefusalReason, FloodLog>;
  readonly #handshakeFailed = new FloodLog(
    this.log,
    `${this.prefix}TLS handshake failed:`,
  );
  readonly #badProxyHeader = new FloodLog(
    this.log,
    `${this.prefix}closed`,
    undefined,
    "without a valid PROXY header",
  );
  /** `acceptProxy`: the header's deadline, in ms; unset without it. */
  readonly #proxyHeaderTimeoutMs?: number;
  /** The listener's kind, for the clients a PROXY header may name. */
  readonly #transport: "tcp" | "unix";
  /** Set for TLS: the handshake deadline, in ms. */
  readonly #handshakeTimeoutMs?: number;
  readonly #tls?: ServerTls;
  readonly #readTlsFiles?: () => TlsServerFiles;
  readonly #prepareTlsReload?: () => () => void;
  /** Clients refused for their certificate, after the handshake. */
  readonly #certificateRefused = new FloodLog(
    this.log,
    `${this.prefix}refused`,
  );
  #acceptLoop?: AcceptLoop;
  #boundListener?: Deno.Listener;
  /** What `--stats` and SIGUSR2 show: counted at accept, refusal and close. */
  readonly #metrics: StreamMetrics;

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
    // A Unix socket's peers have no address to count, but with
    // `acceptProxy` their headers' clients have.
    const perSource = transport === "tcp" || options.acceptProxy
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
    const tls = options.tls ? new ServerTls(options.tls, options) : undefined;
    // The engine proves itself (or not) once the certificate passed its
    // check, before the first connection.
    const tlsEngine = tls &&
      binding.ready.then(() => chooseTlsEngine(tls.context, options.tlsEngine));
    const bound = tlsEngine ? tlsEngine.then(() => {}) : binding.ready;
    // deno-lint-ignore prefer-const -- assigned once `this` exists
    let connections!: ConnectionTable;
    const ready = group
      ? Promise.all([bound, group.connections]).then(([, count]) =>
        connections.shareWith(count)
      )
      : bound;
    super(options, ready);
    tlsEngine?.then(({ engine, fallback }) => {
      tls!.engine = engine;
      if (fallback) this.log(`${this.prefix}${fallback}`);
    }, () => {});
    connections = this.#connections = new ConnectionTable(
      this.log,
      this.prefix,
    );
    this.#binding = binding;
    this.#handler = handler;
    this.#refusal = service.refusal;
    this.#admission = new Admission({
      access: options.access,
      perSource,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      open: () => connections.open(),
    });
    const refused = () => new FloodLog(this.log, `${this.prefix}refused`);
    this.#refused = {
      access: refused(),
      "per-source": refused(),
      full: refused(),
      rate: refused(),
    };
    this.#metrics = new StreamMetrics({
      service: serviceLabel(service.name, transport, options.label),
      transport: options.tls ? "tls" : transport,
    });
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 0;
    this.#keepAlive = keepAlive;
    this.#proxyHeaderTimeoutMs = proxyHeaderTimeoutMs;
    this.#transport = transport;
    if (options.tls) {
      this.#handshakeTimeoutMs = options.handshakeTimeoutMs ??
        DEFAULT_HANDSHAKE_TIMEOUT_MS;
      this.#tls = tls;
      this.#readTlsFiles = options.readTlsFiles;
    }
    this.#prepareTlsReload = options.prepareTlsReload;
    this.#startWhenBound(!!options.tls || !!group);
  }

  /**
   * Starts accepting: a TCP listener exists already, but accepts only once
   * `ready` settles when `deferred` (TLS: the certificate passed its check;
   * a worker group: the shared count came); a Unix one exists only then.
   */
  #startWhenBound(deferred: boolean): void {
    const start = (listener: Deno.Listener) => {
      this.#boundListener = listener;
      this.#acceptLoop = new AcceptLoop(
        listener,
        (conn) => this.#accepted(conn),
        this.log,
        this.prefix,
      );
      if (this.#idleTimeoutMs > 0) {
        this.#connections.startIdleSweep(this.#idleTimeoutMs);
      }
    };
    const listener = this.#binding.socket();
    if (listener && !deferred) {
      start(listener);
      return;
    }
    this.ready.then(() => {
      const listener = this.#binding.socket()!;
      if (this.closing) {
        this.#boundListener = listener;
        listener.close();
      } else start(listener);
    }, () => {});
  }

  get addr(): Deno.Addr {
    return this.#binding.addr;
  }

  /**
   * TLS: reads the files again (`options.readTlsFiles`; SIGHUP in the
   * scripts) and new handshakes get them once one handshake in memory
   * shows they work; connections in flight go on with theirs; so do the
   * handler's own (`options.prepareTlsReload`). Rejects, keeping the
   * files in use, when they cannot be read or do not work.
   * Resolves `true` once they are in use; `false` without TLS.
   */
  async reloadTls(): Promise<boolean> {
    const serves = this.#tls && this.#readTlsFiles;
    if (!serves && !this.#prepareTlsReload) return false;
    // Everything read and checked before anything changes.
    const files = serves ? this.#readTlsFiles!() : undefined;
    const commit = this.#prepareTlsReload?.();
    if (files) await this.#tls!.reload(files);
    commit?.();
    return true;
  }

  /** A connection's own lines (`ConnectionContext.log`), one for all. */
  readonly #logAbout = (line: string): void =>
    this.log(`${this.prefix}${line}`);

  /**
   * A connection the loop accepted. Without `acceptProxy` its peer is the
   * client, judged now by the admission pipeline, before any byte is read
   * or sent (a refused client never gets a TLS byte). With it, the client
   * comes in its header: the connection holds a slot (refused if the
   * server is full) while the header comes, then the same pipeline judges
   * the client the header names.
   */
  #accepted(conn: Deno.Conn): void {
    const connection = new Connection(conn, this.#logAbout);
    const verdict = this.#proxyHeaderTimeoutMs === undefined
      ? this.#admission.admit(conn.remoteAddr)
      : this.#admission.full() ?? {};
    if (isRefusal(verdict)) {
      this.#refused[verdict.reason].event(`${connection.peer}: ${verdict.why}`);
      this.#metrics.refused[verdict.reason].value++;
      this.#refuse(conn, verdict.reason);
      return;
    }
    connection.source = verdict.source;
    this.#connections.add(connection);
    this.#metrics.open.value++;
    if (this.#keepAlive) this.#setKeepAlive(conn, this.#keepAlive);
    if (
      this.#proxyHeaderTimeoutMs === undefined &&
      this.#handshakeTimeoutMs === undefined
    ) {
      this.#run(connection);
      return;
    }
    this.#prepare(connection).then((ready) => {
      if (ready) this.#run(connection);
      else this.#drop(connection);
    });
  }

  /**
   * With `acceptProxy` or TLS, what comes before the handler: the PROXY
   * header and the client's admission, then the handshake. Whether the
   * connection goes on; if not, its failure was logged.
   */
  async #prepare(connection: Connection): Promise<boolean> {
    if (
      this.#proxyHeaderTimeoutMs !== undefined &&
      !(await this.#admitProxied(connection))
    ) {
      return false;
    }
    if (this.#tls) {
      // TLS starts only now, after the admission: a refused client never
      // gets a TLS byte.
      const conn = this.#tls.start(connection.conn);
      connection.conn = conn;
      const failure = await this.#handshake(connection);
      if (failure !== undefined) {
        // Closed by shutdown or the idle sweep: that logged already.
        if (!connection.closed) {
          this.#handshakeFailed.event(failure);
          this.#metrics.refused["tls-handshake"].value++;
        }
        return false;
      }
      if (connection.closed) return false;
      const verdict = this.#tls.verdict(conn);
      if ("refused" in verdict) {
        this.#certificateRefused.event(
          `${connection.peer}${connection.via}: ${verdict.refused}`,
        );
        // Cut, not closed with close_notify: the client must not take
        // the refusal for a clean, empty answer (the engine can no longer
        // send an alert the session's way: a plaintext one, then the cut).
        conn.abort(certificateRefusedAlert());
        this.#metrics.refused["client-certificate"].value++;
        this.#countHandshake(conn.handshakeFacts().protocol, "refused");
        return false;
      }
      connection.tls = verdict.session;
      this.#countHandshake(
        verdict.session.protocol,
        verdict.session.client ? "verified" : NO_CLIENT_CERTIFICATE,
      );
    }
    return true;
  }

  /**
   * `acceptProxy`: reads the connection's PROXY header, then judges the
   * client it names by the admission pipeline. Whether the connection
   * goes on; if not, it was logged in one line: a bad header
   * rate-limited, as anyone who reaches the port can send one; a refused
   * client as its closing line, as a header comes from a trusted proxy.
   */
  async #admitProxied(connection: Connection): Promise<boolean> {
    let header: ProxyHeader;
    try {
      header = await readProxyHeader(connection.conn, {
        deadlineMs: this.#proxyHeaderTimeoutMs,
        listener: this.#transport,
      });
    } catch (error) {
      // Closed by shutdown or the idle sweep: that logged already.
      if (!connection.closed) {
        this.#metrics.refused["proxy-header"].value++;
        this.#badProxyHeader.event(
          `${connection.peer} (0 bytes in, 0 bytes out): ${
            escapeControlChars(withoutOsError((error as Error).message))
          }`,
        );
      }
      return false;
    }
    connection.proxyHeader = header;
    const verdict = this.#admission.admit(connection.remoteAddr, true);
    if (isRefusal(verdict)) {
      const why = verdict.reason === "access" && header.command === "proxy"
        ? `${verdict.why} (the address in its PROXY header)`
        : verdict.why;
      this.#metrics.refused[verdict.reason].value++;
      this.log(
        `${this.prefix}closed ${connection.peer} (0 bytes in, 0 bytes out)${connection.via}: ${why}`,
      );
      const answer = this.#tls ? undefined : this.#refusal?.(verdict.reason);
      if (answer) await writeAll(connection.conn, answer).catch(() => {});
      return false;
    }
    connection.source = verdict.source;
    return true;
  }

  /**
   * Closes a refused connection, telling it why first where the service
   * says how (an HTTP status; never over TLS, which has not started).
   */
  #refuse(conn: Deno.Conn, reason: RefusalReason): void {
    const answer = this.#tls ? undefined : this.#refusal?.(reason);
    if (!answer) {
      conn.close();
      return;
    }
    // One small write to a fresh socket: it fits the send buffer.
    conn.write(answer).catch(() => {}).finally(() => closeQuietly(conn));
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

  /**
   * Runs the handler, then logs the closing line. Not `async`: a function
   * awaiting the handler stayed suspended, generator and registers, for
   * the connection's whole life (about 240 bytes of heap a connection).
   */
  #run(connection: Connection): void {
    const client = connection.tls?.client;
    this.log(
      `${this.prefix}accepted ${connection.peer}${connection.via}${
        client ? ` (certificate ${escapeControlChars(client.subject)})` : ""
      }`,
    );
    let running: Promise<void>;
    this.#metrics.accepted.value++;
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
            : `: ${escapeControlChars(error.message)}`,
        ),
    );
  }

  /** After the handler: closes, forgets and logs the connection. */
  #ended(connection: Connection, failure: string): void {
    const cut = connection.closed;
    this.#drop(connection);
    this.#metrics.closed(
      connection.bytesIn,
      connection.bytesOut,
      connection.openedAt,
    );
    // A handler's note may name what it was given (a target's path).
    const note = connection.note
      ? ` ${escapeControlChars(connection.note)}`
      : "";
    this.log(
      `${this.prefix}closed ${connection.peer} (${connection.bytesIn} bytes in, ${connection.bytesOut} bytes out)${connection.via}${note}${
        cut ? "" : failure
      }`,
    );
  }

  /** Closes and forgets a connection (its source's count with it). */
  #drop(connection: Connection): void {
    connection.close();
    if (this.#connections.delete(connection)) {
      this.#metrics.open.value--;
      this.#admission.release(connection.source);
    }
  }

  /**
   * Counts a TLS handshake done, by the protocol version agreed and the
   * client certificate's result: `verified`, `refused`, or `none` (none
   * asked for or sent: `NO_CLIENT_CERTIFICATE`).
   */
  #countHandshake(protocol: string, clientCertificate: string): void {
    this.#metrics.tlsHandshake(protocol, clientCertificate).value++;
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
          (error: Error) =>
            `${who}: ${escapeControlChars(withoutOsError(error.message))}`,
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
    this.#acceptLoop?.stop();
    if (
      "path" in this.addr &&
      socketFileOwner(this.addr.path, this.#binding.inode()) === "other"
    ) {
      listener.unref();
      this.#acceptLoop?.abandon();
      this.log(
        `${this.prefix}${
          formatAddr(this.addr)
        } is no longer this server's socket; left in place`,
      );
      return;
    }
    closeQuietly(listener);
  }

  protected override shortenGrace(gracePeriodMs: number): void {
    this.#connections.shortenGrace(gracePeriodMs);
  }

  protected async stop(gracePeriodMs: number): Promise<void> {
    this.#closeListener();
    // The listener closes for real only once no accept is pending on it:
    // a pending accept() holds the socket until it has been cancelled, a
    // turn of the event loop or more after close(). Its rejection ends the
    // loop (or the loop was between accepts, or left the listener open).
    await this.#acceptLoop?.done;
    this.socketClosedNow();
    await this.#connections.drain(gracePeriodMs);
    for (const log of Object.values(this.#refused)) log.flush();
    this.#handshakeFailed.flush();
    this.#certificateRefused.flush();
    this.#acceptLoop?.flush();
    this.#badProxyHeader.flush();
  }
}
