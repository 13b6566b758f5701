/**
 * The connections a stream server holds, from accept to close: each one's
 * context for its handler and log lines ({@linkcode Connection}), and the
 * table of them all ({@linkcode ConnectionTable}): the count the admission
 * pipeline judges (a worker group's shared one too), the idle sweep, and
 * the drain a graceful stop waits on.
 *
 * @module
 */

import { formatAddr } from "./endpoint.ts";
import { closeQuietly } from "./io.ts";
import type { Log } from "./log.ts";
import type { ProxyHeader } from "./proxy_protocol.ts";
import type { ConnectionContext } from "./server_options.ts";
import type { TlsSession } from "./tls_peer.ts";

/** How long handlers get to return once a stop closed their connections. */
const HANDLER_STOP_MS = 1000;

/**
 * One accepted connection, as its handler and the server's log lines see
 * it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { Connection } from "./connections.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const connection = new Connection(await listener.accept());
 * assertEquals(connection.peer, `127.0.0.1:${(client.localAddr as Deno.NetAddr).port}`);
 * assertEquals(connection.via, "");
 * connection.close();
 * ```
 */
export class Connection implements ConnectionContext {
  /** The connection; with `acceptProxy` and TLS, the TLS one once started. */
  conn: Deno.Conn;
  readonly peer: string;
  /** Its source, when `perSource` counts it (see `Admission.admit`). */
  source?: string;
  // `declare`d, not initialised: no field on the connections of a server
  // without `acceptProxy`.
  declare proxyHeader?: ProxyHeader;
  /** TLS: the session, once its handshake is done and the client let in. */
  declare tls?: TlsSession;
  /**
   * For the idle sweep: when the first sweep after the connection's last
   * activity ran (`performance.now()`), or 0 if none has yet.
   */
  idleSince = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** When it was accepted (`performance.now()`), for the stats' durations. */
  readonly openedAt: number = performance.now();
  note?: string;
  declare onShutdown?: () => void;
  closed = false;

  /**
   * Wraps an accepted `conn`; `log` writes a line with the server's label
   * (see `ConnectionContext.log`).
   */
  constructor(
    conn: Deno.Conn,
    readonly log: (line: string) => void = () => {},
  ) {
    this.conn = conn;
    this.peer = formatAddr(conn.remoteAddr);
  }

  /** The client: the PROXY header's source, else the socket's peer. */
  get remoteAddr(): Deno.Addr {
    return this.proxyHeader?.source ?? this.conn.remoteAddr;
  }

  /** What the client reached: the PROXY header's destination, else ours. */
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

  /** Data moved: the idle timeout starts again. */
  active(): void {
    this.idleSince = 0;
  }

  /** Closes the connection once (the handler may have closed it). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.conn);
  }
}

/**
 * Every connection a server holds, whatever its stage (PROXY header,
 * handshake, handler). In a worker group the count is also kept in the
 * group's shared counter, which {@linkcode ConnectionTable.open} reads.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { ConnectionTable } from "./connections.ts";
 *
 * const table = new ConnectionTable(() => {});
 * assertEquals(table.open(), 0);
 * await table.drain(0); // nothing to wait for
 * ```
 */
export class ConnectionTable {
  readonly #connections = new Set<Connection>();
  readonly #log: Log;
  /** A worker group's shared count (`Atomics` on index 0), once known. */
  #group?: Int32Array;
  #idleTimer?: ReturnType<typeof setInterval>;
  #drained?: () => void;
  /** While a drain waits for its grace period: (re)starts it. */
  #startGrace?: (gracePeriodMs: number) => void;

  /** Logs its idle-timeout and drain lines to `log`, with `prefix`. */
  constructor(log: Log, readonly prefix = "") {
    this.#log = log;
  }

  /** Counts in `group` too from now on (a worker group's shared count). */
  shareWith(group: Int32Array): void {
    this.#group = group;
  }

  /** Connections open now: this server's, or its whole worker group's. */
  open(): number {
    return this.#group ? Atomics.load(this.#group, 0) : this.#connections.size;
  }

  /** This server's own connections. */
  get size(): number {
    return this.#connections.size;
  }

  add(connection: Connection): void {
    this.#connections.add(connection);
    if (this.#group) Atomics.add(this.#group, 0, 1);
  }

  /** Forgets `connection`; whether it was held. */
  delete(connection: Connection): boolean {
    if (!this.#connections.delete(connection)) return false;
    if (this.#group) Atomics.sub(this.#group, 0, 1);
    if (this.#connections.size === 0) this.#drained?.();
    return true;
  }

  /**
   * Closes a connection idle `timeoutMs` (with one log line). One timer
   * for all, and no clock read per byte moved: handlers mark activity
   * with `active()`; the first sweep after it notes the time, and a later
   * one that finds `timeoutMs` gone since then closes the connection. So
   * a connection closes after between S and S + 2 ticks idle (a tick is
   * S/8, between 10 ms and 1 s), never before, however late a busy event
   * loop runs the sweep (counting ticks instead closed connections early
   * by as much as the loop lagged).
   */
  startIdleSweep(timeoutMs: number): void {
    const tickMs = Math.max(10, Math.min(1000, timeoutMs / 8));
    this.#idleTimer = setInterval(() => {
      const now = performance.now();
      for (const connection of this.#connections) {
        if (connection.idleSince === 0) connection.idleSince = now;
        else if (now - connection.idleSince >= timeoutMs) {
          this.#log(
            `${this.prefix}idle timeout: closing ${connection.peer} after ${
              timeoutMs / 1000
            } s`,
          );
          connection.close();
        }
      }
    }, tickMs);
  }

  /**
   * Waits for every connection to end, for up to `gracePeriodMs`
   * (`Infinity`: however long), then closes those left and waits a
   * moment for their handlers; each step logged. Ends the idle sweep.
   */
  async drain(gracePeriodMs: number): Promise<void> {
    try {
      if (this.#connections.size > 0) await this.#drain(gracePeriodMs);
    } finally {
      clearInterval(this.#idleTimer);
    }
  }

  /**
   * Whether `drained` settles within `HANDLER_STOP_MS`: a handler blocked
   * on something other than its connection (a full stdout pipe, say)
   * would hold the exit forever, so a stop waits a moment only.
   */
  async #settled(drained: Promise<void>): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const settled = await Promise.race([
      drained.then(() => true),
      new Promise<boolean>((resolve) =>
        timer = setTimeout(() => resolve(false), HANDLER_STOP_MS)
      ),
    ]);
    clearTimeout(timer);
    return settled;
  }

  /** A drain under way gives connections `gracePeriodMs` from now. */
  shortenGrace(gracePeriodMs: number): void {
    this.#startGrace?.(gracePeriodMs);
  }

  async #drain(gracePeriodMs: number): Promise<void> {
    const prefix = this.prefix;
    this.#log(
      Number.isFinite(gracePeriodMs)
        ? `${prefix}shutting down: waiting up to ${
          gracePeriodMs / 1000
        } s for ${this.#connections.size} connection(s)`
        : `${prefix}stopped accepting: ${this.#connections.size} connection(s) go on until they end`,
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
    if (!cut) return;
    const count = this.#connections.size;
    let goodbyes = 0;
    for (const connection of this.#connections) {
      // A protocol's goodbye first where the handler has one (a WebSocket
      // close frame); the connection is cut if it has not ended a moment
      // later.
      if (connection.onShutdown) {
        goodbyes++;
        connection.onShutdown();
      } else connection.close();
    }
    let stuck = !(await this.#settled(drained));
    if (stuck && goodbyes > 0) {
      for (const connection of this.#connections) connection.close();
      stuck = !(await this.#settled(drained));
    }
    this.#log(
      `${prefix}grace period over: closed ${count} connection(s) still in flight`,
    );
    if (stuck) {
      this.#log(
        `${prefix}${this.#connections.size} handler(s) did not stop after their connection closed; stopping anyway`,
      );
    }
  }
}
