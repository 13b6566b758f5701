/**
 * What `serve()` (in `server.ts`) takes and returns: the {@linkcode Service}
 * (a name, a default port, a handler per kind of transport), the
 * {@linkcode ServerOptions} every server takes with their defaults, and the
 * {@linkcode Server} it returns, shaped like `Deno.serve`'s: `addr`,
 * `finished`, `shutdown()`, `[Symbol.asyncDispose]`, and `socketClosed`
 * for whoever binds the address again. The servers themselves
 * are in `stream_server.ts` and `datagram_server.ts`.
 *
 * @module
 */

import type { AccessPolicy } from "./access.ts";
import type { RefusalReason } from "./admission.ts";
import type { Transport } from "./endpoint.ts";
import type { KeepAliveConfig } from "./keepalive.ts";
import type { Log } from "./log.ts";
import type { StatsOptions } from "./stats_server.ts";
// deno-lint-ignore no-unused-vars -- named by `proxyHeaderTimeoutMs`'s @default
import type { DEFAULT_PROXY_HEADER_TIMEOUT_MS } from "./proxy_protocol.ts";
import type { ProxyHeader } from "./proxy_protocol.ts";
import type { ClientCertMode, TlsServerFiles } from "./tls.ts";
import type { TlsEngineChoice } from "./tls_engine.ts";
import type { TlsSession } from "./tls_peer.ts";
// deno-lint-ignore no-unused-vars -- named by `mode`'s @default
import type { DEFAULT_UNIX_SOCKET_MODE } from "./unix.ts";

/** A running server (or a group of them, see {@linkcode combineServers}). */
export interface Server extends AsyncDisposable {
  /** The bound address (for `port: 0`, the real port). */
  readonly addr: Deno.Addr;
  /**
   * Settles once the socket is bound and serving. A plain TCP or UDP
   * socket is bound before `serve()` returns (a failure throws there);
   * `ready` waits for what comes after: a Unix socket's stale file checked
   * and replaced, a TLS certificate checked, a worker group's threads
   * started. Rejects when that fails, with the error, which nothing has
   * logged: the scripts print it as their one `error:` line.
   */
  readonly ready: Promise<void>;
  /** Resolves once the server has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /**
   * Resolves once a shutdown has closed the server's socket for good (a
   * Unix socket's file removed with it), or at once when binding failed:
   * from then this process holds nothing of its address, while
   * connections in flight may still go on. Closing is not done when
   * `close()` returns: an `accept()` or `receive()` still pending holds
   * the socket until it has ended, a turn of the event loop or more later.
   * (A program this process started a moment before may still hold a copy
   * until its exec has closed it: see `inetd_server.ts`.)
   */
  readonly socketClosed: Promise<void>;
  /**
   * Stops accepting, lets connections in flight finish within the grace
   * period (the server's, or `options.gracePeriodMs`), then closes the
   * rest; resolves like `finished`. `Infinity` waits for them however long
   * they take (inetd's reload retiring a service); a later call with a
   * shorter grace period (a plain `shutdown()`) starts that one instead.
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
  /**
   * TLS servers: reads the files again (`readTlsFiles` of the options),
   * and new handshakes get them once one handshake in memory
   * shows they work; connections in flight keep theirs. Rejects, keeping
   * the files in use, when they do not work (what SIGHUP does in the
   * scripts). Resolves `true` once the new files are in use, `false` where
   * nothing serves TLS (or absent).
   */
  reloadTls?(): Promise<boolean>;
}

/** How a {@linkcode Server} stops. */
export interface ShutdownOptions {
  /**
   * How long connections in flight may go on, in ms; `Infinity`: until
   * they end. Default: the server's `gracePeriodMs`.
   */
  gracePeriodMs?: number;
}

/** Options every server takes. */
export interface ServerOptions {
  /** `tcp` (default), `udp`, `unix` (stream) or `unixpacket` (datagram). */
  transport?: Transport;
  /**
   * Address to bind for TCP and UDP.
   *
   * @default {"0.0.0.0"} (a service may name another: `Service.defaultHostname`)
   */
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
   * Permission bits of the socket file for `unix` and `unixpacket`; the
   * default lets only the owner connect.
   *
   * @default {@linkcode DEFAULT_UNIX_SOCKET_MODE}
   */
  mode?: number;
  /**
   * Most connections served at once; the next is closed at once.
   *
   * @default {@linkcode DEFAULT_MAX_CONNECTIONS}
   */
  maxConnections?: number;
  /**
   * TCP: most connections at once from one source, TLS handshakes in
   * progress included; the next is closed at once (logged, counted, like
   * `maxConnections`). A source is an IPv4 address (IPv4-mapped ones
   * count as IPv4) or an IPv6 /64, as one host may use a whole /64. 0: no
   * limit. With `workers`, each thread counts its own connections. Unix
   * sockets have no sources: the socket file's mode is their access
   * control; but with `acceptProxy` the clients their headers name are
   * counted, as over TCP.
   *
   * @default {@linkcode DEFAULT_PER_SOURCE}
   */
  perSource?: number;
  /** Closes a connection idle this long, in ms; 0 (default) never. */
  idleTimeoutMs?: number;
  /**
   * How long shutdown waits for connections in flight, in ms.
   *
   * @default {@linkcode DEFAULT_GRACE_MS}
   */
  gracePeriodMs?: number;
  /** Who may connect; everyone when absent. */
  access?: AccessPolicy;
  /**
   * Serve TLS (TCP only): the PEM certificate chain and key, e.g. from
   * `readTlsFiles`. Plain TCP when absent. Handlers get a
   * {@linkcode Deno.TlsConn} whose handshake is already done; a client
   * refused by `access` or `maxConnections` is closed before any TLS byte.
   */
  tls?: TlsServerFiles;
  /**
   * TLS with `tls.clientCa`: `required` refuses a client without a
   * certificate (certificate_required), `optional` lets it in without one;
   * either way a certificate that does not chain to `tls.clientCa` is
   * refused once its handshake is done (one log line). The handler's
   * `context.tls.client` is the verified certificate.
   *
   * @default {"required"}
   */
  clientCert?: ClientCertMode;
  /**
   * TLS with `tls.clientCa`: a verified client certificate's subject
   * (written as stunnel writes it, `C=DE, O="Example, Inc.", CN=alice`)
   * must match this, or the client is refused. Default: any.
   */
  clientSubject?: RegExp;
  /**
   * TLS: how {@linkcode Server.reloadTls} reads the files again (the
   * scripts: `--cert`, `--key`, `--client-ca`, on SIGHUP); throws when one
   * cannot be read. Without it the server has nothing to reload.
   */
  readTlsFiles?: () => TlsServerFiles;
  /**
   * TLS files the handler itself uses (a forwarder's `--ca`, `--to-cert`,
   * `--to-key`), for {@linkcode Server.reloadTls}: reads them again and
   * returns what puts them in use, which runs once the server's own new
   * files are in use; throwing keeps everything as it is.
   */
  prepareTlsReload?: () => () => void;
  /**
   * TLS: a client that has not completed its handshake this many ms after
   * being accepted is closed (one log line).
   *
   * @default {@linkcode DEFAULT_HANDSHAKE_TIMEOUT_MS}
   */
  handshakeTimeoutMs?: number;
  /**
   * TLS: the engine connections run on (see `lib/tls_engine.ts`): `auto`
   * proves the runtime's own engine before the first connection and falls
   * back to `node:tls` with one log line when it fails; `native` makes a
   * failed proof an error (`ready` rejects); `node` always uses `node:tls`.
   *
   * @default "auto"
   */
  tlsEngine?: TlsEngineChoice;
  /**
   * Stream servers (TCP, Unix): read a PROXY protocol header (v1 or v2,
   * see `lib/proxy_protocol.ts`) from each connection first, before the
   * access check, TLS and `perSource`, which then judge the client address
   * it carries, on a Unix socket as over TCP (a header for a client the
   * listener cannot have carried, UDP or a Unix socket client on TCP, is
   * refused: see `checkProxyHeaderFits`); so do the log lines (`accepted PEER for CLIENT (PROXY
   * v1)`) and the handler's `context.remoteAddr`. A header that says
   * `LOCAL` (v2) or `UNKNOWN` (v1) leaves the connection's own addresses.
   * A missing, bad or slow header (see `proxyHeaderTimeoutMs`; at most
   * `DEFAULT_MAX_PROXY_HEADER_BYTES`) closes the connection with one log
   * line (rate-limited); the bytes after the header are the handler's.
   * Only for a server that only proxies you trust can reach: a header
   * chooses the address the server believes. Default `false`.
   */
  acceptProxy?: boolean;
  /**
   * `acceptProxy`: the whole header must have arrived this many ms after
   * the connection was accepted.
   *
   * @default {@linkcode DEFAULT_PROXY_HEADER_TIMEOUT_MS}
   */
  proxyHeaderTimeoutMs?: number;
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
   * path; bursts up to as many. 0: no limit. The table of sources is
   * bounded (see `SourceRateLimiter` in `lib/datagram_guard.ts`).
   *
   * @default {@linkcode DEFAULT_UDP_RATE}
   */
  udpRatePerSecond?: number;
  /**
   * Datagrams: the loop guard, on unless `false`, whatever the rate limit
   * (`LoopGuard` in `lib/datagram_guard.ts`). It tells a loop between two
   * servers that answer anything from a client by what only a loop does:
   * a source (address and port) whose datagrams are our replies to it
   * coming back with no think time (within `LOOP_THINK_MS`; the same
   * bytes, or, to a service whose reply ignores the request, a simple
   * service's reply), `LOOP_ROUNDS` round trips more than the rate limit
   * allows (`DEFAULT_UDP_RATE` a second when that is lower or 0), is
   * dropped until it slows down (logged, counted). So two echo servers
   * with no rate limit stop each other within a few hundred round trips,
   * and a client repeating the same datagram within the rate limit is
   * always answered: a datagram's bytes alone never drop it.
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
  /**
   * Serve the process's stats (Prometheus `/metrics`, `/stats.json`, a
   * page at `/`) here while the server runs; servers that name the same
   * address share one endpoint (see `lib/stats_server.ts`). Off by
   * default.
   */
  stats?: StatsOptions;
}

/** What a stream handler learns about its connection. */
export interface ConnectionContext {
  /**
   * The peer, formatted for logs (`127.0.0.1:5000`): the socket's, the
   * proxy's with `acceptProxy` (the log lines add `for CLIENT`).
   */
  readonly peer: string;
  /**
   * The client: the connection's peer, or with `acceptProxy` the source
   * its PROXY header carries (unless the header says `LOCAL`/`UNKNOWN`).
   */
  readonly remoteAddr: Deno.Addr;
  /**
   * The address the client connected to: the connection's own, or with
   * `acceptProxy` the destination its PROXY header carries (the proxy's
   * address the client reached).
   */
  readonly localAddr: Deno.Addr;
  /** With `acceptProxy`: the header the connection started with. */
  readonly proxyHeader?: ProxyHeader;
  /**
   * TLS: protocol, cipher, the server's subject and the client's verified
   * certificate (with `tls.clientCa`, when it sent one).
   */
  readonly tls?: TlsSession;
  /** Call after moving data, so the idle timeout starts again. */
  active(): void;
  /**
   * Logs one line about the connection, between its `accepted` and
   * `closed` lines, after the server's label as its own lines are (`web:`,
   * `worker 1:`): what only the handler sees (a WebSocket upgrade).
   */
  log(line: string): void;
  /** Bytes received, for the closing log line; handlers add to it. */
  bytesIn: number;
  /** Bytes sent, for the closing log line; handlers add to it. */
  bytesOut: number;
  /**
   * More for the closing log line, after the byte counts: what a handler
   * alone knows (a forwarder's target, duration and why it ended).
   */
  note?: string;
  /**
   * What the server does, once a shutdown's grace period is over, instead
   * of cutting the connection: the protocol's goodbye (a WebSocket close
   * frame, 1001), after which the handler ends soon; the connection is
   * cut if it has not within a moment.
   */
  onShutdown?: () => void;
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
  /**
   * Descriptors each stream connection holds besides its socket (exec: a
   * program's pidfd and three pipes; forward: the target's socket), for
   * the check against the process's limit at start (`descriptors.ts`).
   * Default 0.
   */
  descriptorsPerConnection?: number;
  /**
   * What a client the stream server refuses before reading from it
   * (`access`, `perSource`, `maxConnections`) is told before it is
   * closed: an HTTP `403`/`503` from a WebSocket bridge. Not over TLS
   * (refused before the handshake). Default: nothing.
   */
  refusal?: (reason: RefusalReason) => Uint8Array;
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
 * import { assertEquals } from "@std/assert";
 * import { DEFAULT_MAX_CONNECTIONS, DEFAULT_PER_SOURCE } from "./server_options.ts";
 *
 * assertEquals(DEFAULT_PER_SOURCE, DEFAULT_MAX_CONNECTIONS / 16);
 * ```
 */
export const DEFAULT_PER_SOURCE = 256;
/** Grace period on shutdown unless `gracePeriodMs` says otherwise. */
export const DEFAULT_GRACE_MS = 10_000;
/** TLS handshake deadline unless `handshakeTimeoutMs` says otherwise. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** UDP replies a second to one source unless `udpRatePerSecond` says otherwise. */
export const DEFAULT_UDP_RATE = 100;
