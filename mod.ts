/**
 * **sockets**: the classic C socket examples as small, safe Deno programs,
 * and the shared pieces they are built from.
 *
 * **The seed.** Comments here often say "the seed": the C socket examples
 * page this toolkit ports, a page of short C programs (an echo server, a
 * daytime server and client, keepalive, accept, connect, read and write
 * loops). Its fixed-size buffers, ignored return values and missing limits
 * are what many comments here say we do differently. Each script's module
 * doc names the example it mirrors:
 *
 * - `servers/echo.ts`: TCP Concurrent Echo Server;
 * - `servers/daytime.ts`: TCP Daytime Iterative Server;
 * - `clients/daytime.ts`: TCP Daytime Client;
 * - `servers/keepalive.ts`: Enabling TCP keepalive at server side;
 * - `servers/hello.ts` and `clients/hello.ts`: the TCP server and client
 *   snippets;
 * - `servers/udp.ts` and `clients/udp.ts`: the UDP server snippet and its
 *   other side;
 * - `servers/accept.ts`: Accepting connections on a blocking socket;
 * - `clients/connect.ts`: Connecting to a remote host;
 * - `servers/discard.ts`, `chargen.ts`, `qotd.ts`, `time.ts`, `inetd.ts`
 *   and `clients/time.ts`: none; they are the RFC simple services the
 *   seed's echo and daytime servers are the start of;
 *
 * and {@linkcode readExact} and {@linkcode writeAll} are its "Reading and
 * writing on a blocking socket".
 *
 * **What this module exports**, by area:
 * - Byte streams: {@linkcode readExact}, {@linkcode writeAll},
 *   {@linkcode LineReader} (bounded lines), {@linkcode closeQuietly}.
 * - Endpoints and addresses: {@linkcode parseEndpoint},
 *   {@linkcode formatAddr}, {@linkcode checkHost}, {@linkcode unmapIPv4},
 *   {@linkcode canonicalAddress}.
 * - The server life cycle: {@linkcode serve} (accept loop that survives
 *   errors, connection limits, idle timeout, graceful shutdown, logging)
 *   with its {@linkcode ServerOptions}; {@linkcode serveSimple} for the RFC
 *   simple services; {@linkcode AccessList}; {@linkcode setKeepAlive}
 *   (tuned like Go's `KeepAliveConfig`).
 * - Clients: {@linkcode dialHost} (resolve, then Happy Eyeballs, RFC 8305),
 *   {@linkcode readWithTimeout}, {@linkcode requestDatagram},
 *   {@linkcode relay} (stdin/stdout to a socket, with half-close, as `nc`),
 *   {@linkcode startClientTls}; every failure one clear
 *   {@linkcode ConnectError} line, from one table
 *   ({@linkcode classifyConnectFailure}).
 * - The command-line conventions: {@linkcode runMain},
 *   {@linkcode parseCommandLine}, {@linkcode serverFlags},
 *   {@linkcode runServers}.
 *
 * The servers themselves live in `servers/` (each is a module too, e.g.
 * `serveEcho` from `servers/echo.ts`). The machinery some of them are
 * built from has exports of its own, as std's packages do:
 * - `@sockets/sockets/proxy` (`lib/proxy_protocol.ts`): the PROXY
 *   protocol v1 and v2, read, parsed and written;
 * - `@sockets/sockets/splice` (`lib/splice.ts`): the byte pump of a
 *   forwarded pair, with half-close;
 * - `@sockets/sockets/spawn` (`lib/spawn.ts`): a program per connection,
 *   its environment, stderr and end (`servers/exec.ts`'s engine);
 * - `@sockets/sockets/inetd-conf` (`lib/inetd_conf.ts`): inetd.conf read
 *   and checked.
 *
 * @example An echo server inside a test
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { readExact, writeAll } from "./mod.ts";
 * import { serveEcho } from "./servers/echo.ts";
 *
 * await using server = serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await writeAll(conn, new TextEncoder().encode("ping"));
 * assertEquals(new TextDecoder().decode(await readExact(conn, 4)), "ping");
 * ```
 *
 * @module
 */

// Byte streams.
export {
  type ByteReader,
  type ByteWriter,
  closeQuietly,
  LineReader,
  type LineReaderOptions,
  LineTooLongError,
  readExact,
  readExactInto,
  type ReadExactOptions,
  UnexpectedEofError,
  writeAll,
} from "./lib/io.ts";

// Endpoints and addresses.
export {
  type Endpoint,
  EndpointError,
  type EndpointKind,
  formatAddr,
  formatEndpoint,
  joinHostPort,
  type NetEndpoint,
  parseEndpoint,
  parsePort,
  splitHostPort,
  type Transport,
  type UnixEndpoint,
  type WebSocketEndpoint,
} from "./lib/endpoint.ts";
export {
  AddressError,
  canonicalAddress,
  checkHost,
  formatIPv6,
  parseIPv4,
  parseIPv6,
  stripBrackets,
  unmapIPv4,
} from "./lib/address.ts";

// Logging.
export {
  FloodLog,
  flushStderrLog,
  type Log,
  silentLog,
  stderrLog,
  stderrLogNow,
  stdoutAfterLog,
} from "./lib/log.ts";

// Servers.
export { combineServers, serve } from "./lib/server.ts";
export {
  type ConnectionContext,
  type DatagramHandler,
  DEFAULT_GRACE_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_PER_SOURCE,
  DEFAULT_UDP_RATE,
  type Server,
  type ServerOptions,
  type Service,
  type ShutdownOptions,
  type StreamHandler,
} from "./lib/server_options.ts";
export type { RefusalReason } from "./lib/admission.ts";
// What a client's PROXY header said (`ConnectionContext.proxyHeader`).
export type { ProxyHeader, ProxyTlv } from "./lib/proxy_protocol.ts";
export { ListenError } from "./lib/bind.ts";
export { DEFAULT_UNIX_SOCKET_MODE, UnixPathError } from "./lib/unix.ts";
// What a running server counts (`--stats`, SIGUSR2).
export {
  serveStats,
  type StatsOptions,
  type StatsServer,
  withStats,
} from "./lib/stats_server.ts";
export {
  type Cell,
  type FamilySnapshot,
  HistogramCell,
  type Labels,
  MetricDefinitionError,
  MetricsRegistry,
  type MetricType,
  processMetrics,
  type Sample,
  type SeriesSnapshot,
  toPrometheusText,
} from "./lib/metrics.ts";
export { dumpStats } from "./lib/stats_dump.ts";
export {
  AccessList,
  type AccessPolicy,
  type AccessRules,
  Cidr,
  CidrError,
} from "./lib/access.ts";
export {
  describeKeepAlive,
  getKeepAlive,
  isKeepAliveTimeout,
  KEEPALIVE_LIMITS,
  type KeepAliveConfig,
  KeepAliveError,
  type KeepAliveErrorReason,
  setKeepAlive,
} from "./lib/keepalive.ts";
export {
  INETD_BASE,
  MAX_SIMPLE_DATAGRAM,
  replyService,
  serveSimple,
  SIMPLE_SERVICE_PORTS,
  simpleLoopPorts,
  TOOLKIT_UDP_PORTS,
  userPortHelp,
} from "./lib/simple.ts";
export {
  dateFromRfc868,
  encodeRfc868,
  RFC868_EPOCH_OFFSET,
  rfc868Seconds,
} from "./lib/rfc868.ts";
export {
  parsePosixTimeZone,
  type PosixTimeZone,
  posixZoneDateMisses,
} from "./lib/tz.ts";

// Text from outside in log and error lines.
export { escapeControlChars } from "./lib/escape_control_chars.ts";

// Quantities in messages.
export { formatBytes, formatSeconds } from "./lib/units.ts";

// Files and TLS material.
export {
  FileReadError,
  type FileReadFailure,
  MAX_SMALL_FILE_BYTES,
  readSmallFile,
  type ReadSmallFileOptions,
  readSmallTextFile,
} from "./lib/files.ts";
export {
  type ClientCertMode,
  readCaFile,
  readTlsFiles,
  type TlsCertificate,
  TlsFileError,
  type TlsServerFiles,
} from "./lib/tls.ts";
export {
  TLS_ENGINE_CHOICES,
  type TlsEngineChoice,
  TlsEngineError,
} from "./lib/tls_engine.ts";
export {
  type DistinguishedName,
  type DnAttribute,
  formatDn,
  type PeerCertificate,
  type TlsSession,
  tlsSessionEnv,
} from "./lib/tls_peer.ts";

// Clients.
export {
  checkConnectHost,
  classifyConnectFailure,
  ConnectError,
  type ConnectFailure,
  type ConnectFailureClass,
  connectFailureReason,
  type ConnectHost,
  describeConnectFailure,
  DialError,
  type DialFailure,
  DialTimeoutError,
  HostNotFoundError,
  NoReplyError,
  ResolveError,
} from "./lib/connect_error.ts";
export {
  type Closable,
  type ConnectFunction,
  DEFAULT_ATTEMPT_DELAY_MS,
  dialHappyEyeballs,
  dialHost,
  type DialHostOptions,
  type DialOptions,
  happyEyeballsOrder,
  MIN_ATTEMPT_DELAY_MS,
  resolveHost,
  type ResolveOptions,
} from "./lib/dial.ts";
export {
  type DatagramRequestOptions,
  readWithTimeout,
  requestDatagram,
} from "./lib/client.ts";
export {
  type DatagramRelayOptions,
  type DatagramSocket,
  relay,
  type RelayConn,
  relayDatagrams,
  type RelayOptions,
  type RelayResult,
} from "./lib/relay.ts";
export { type ClientTlsOptions, startClientTls } from "./lib/tls_client.ts";

// The command line.
export {
  clientFlags,
  type CommandSpec,
  type Flag,
  flag,
  type FlagBuilders,
  flagsHelp,
  type FlagTable,
  type FlagValues,
  HelpRequested,
  parseCommandLine,
  pickFlags,
  positiveSecondsFlag,
  secondsFlag,
  UsageError,
} from "./lib/cli.ts";
export { rerunCommand, runMain } from "./lib/main.ts";
export {
  runServers,
  type ServerFlag,
  type ServerFlags,
  serverFlags,
  type ServerFlagValues,
  serverOptionsFromFlags,
  TCP_SERVER_FLAG_NAMES,
  udpGuardHelp,
} from "./lib/server_cli.ts";
