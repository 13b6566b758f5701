/**
 * A tiny netcat, from the seed's "Connecting to a remote host" (the seed:
 * the classic C socket examples page this toolkit ports): resolves NAME
 * (A and AAAA, through the system resolver, so `/etc/hosts` names such as
 * `localhost` work), prints each address on stderr, connects in Happy
 * Eyeballs order (RFC 8305: IPv6 first, families interleaved, the next
 * attempt after 250 ms (`--attempt-delay`) or as soon as one fails, first
 * to connect wins, the others are cancelled), prints `connected to
 * ADDRESS` on stderr, then relays stdin to the socket and the socket to
 * stdout. When stdin ends it half-closes the connection and keeps printing
 * until the server closes. When the server finishes first, what stdin
 * still has is sent on (the server may only have half-closed); it exits
 * once stdin ends or has been idle for half a second. It is the toolkit's
 * general client: every server here can be tried with it.
 *
 * `deno task connect NAME PORT` may reach 127.0.0.1:15000 only; a name
 * needs permission to resolve it and to reach its addresses:
 *
 * ```sh
 * $ echo ping | deno run --allow-net=127.0.0.1:15000 clients/connect.ts 127.0.0.1 15000
 * address 127.0.0.1:15000
 * error: connection refused by 127.0.0.1:15000
 * $ socat TCP-LISTEN:15000,reuseaddr,fork EXEC:cat &
 * $ echo ping | deno task connect 127.0.0.1 15000
 * address 127.0.0.1:15000
 * connected to 127.0.0.1:15000
 * ping
 * $ echo ping | deno run --allow-net=localhost,127.0.0.1:15000,[::1]:15000 \
 *     clients/connect.ts localhost 15000
 * address 127.0.0.1:15000
 * connected to 127.0.0.1:15000
 * ping
 * ```
 *
 * A Unix stream socket, and UDP (each chunk read from stdin is one
 * datagram; replies go to stdout; after stdin ends it waits until none has
 * come for `--timeout` seconds, default 1):
 *
 * ```sh
 * $ socat UNIX-LISTEN:/tmp/echo.sock,fork EXEC:cat &
 * $ echo ping | deno run --allow-net=unix:/tmp/echo.sock --allow-read=/tmp/echo.sock \
 *     --allow-write=/tmp/echo.sock clients/connect.ts --unix /tmp/echo.sock
 * connected to /tmp/echo.sock
 * ping
 * $ socat UDP-RECVFROM:15000,bind=127.0.0.1,fork EXEC:cat &
 * $ echo ping | deno run --unstable-net --allow-net=0.0.0.0:0,127.0.0.1:15000 \
 *     clients/connect.ts --udp 127.0.0.1 15000
 * address 127.0.0.1:15000
 * connected to 127.0.0.1:15000
 * ping
 * ```
 *
 * TLS (`--tls`) verifies the server against Deno's root certificates or a
 * CA file (`--ca`, which needs read permission) for a name
 * (`--servername`, default NAME, also sent as SNI), or not at all
 * (`--insecure`, with a warning). A server that asks for a client
 * certificate (mutual TLS: socat `verify=1`, stunnel `verify = 2`,
 * haproxy `verify required`, our servers' `--client-ca`) gets the one of
 * `--cert FILE --key FILE` (with `--allow-read` for both). Against socat
 * as the server, with the
 * certificates of the README's recipe:
 *
 * ```sh
 * $ socat OPENSSL-LISTEN:15000,reuseaddr,fork,cert=cert.pem,key=key.pem,verify=0 EXEC:cat &
 * $ echo "over tls" | deno run --allow-net=127.0.0.1:15000 --allow-read=ca.pem \
 *     clients/connect.ts --tls --ca ca.pem --servername localhost 127.0.0.1 15000
 * address 127.0.0.1:15000
 * connected to 127.0.0.1:15000
 * TLS handshake done with 127.0.0.1:15000
 * over tls
 * $ echo x | deno task connect --tls 127.0.0.1 15000
 * address 127.0.0.1:15000
 * connected to 127.0.0.1:15000
 * error: TLS handshake with 127.0.0.1:15000 failed: certificate not trusted (unknown issuer): give --ca FILE with the CA that signed it, or --insecure to skip the check
 * $ deno install -g -f -n sock-connect --config=deno.json --allow-net=127.0.0.1:15000 clients/connect.ts
 * ...
 * $ echo x | sock-connect 127.0.0.1 15001
 * address 127.0.0.1:15001
 * error: cannot connect to 127.0.0.1:15001: requires net access to "127.0.0.1:15001": run again as: deno run --allow-net=127.0.0.1:15001 clients/connect.ts 127.0.0.1 15001
 * ```
 *
 * The same with ncat and socat:
 *
 * | here                     | ncat                                        | socat                               |
 * | ------------------------ | ------------------------------------------- | ----------------------------------- |
 * | `connect.ts NAME PORT`   | `ncat NAME PORT`                            | `socat - TCP:NAME:PORT`             |
 * | `--tls`                  | `--ssl --ssl-verify` (no verify by default) | `OPENSSL:NAME:PORT` (verifies)      |
 * | `--ca FILE`              | `--ssl-trustfile FILE`                      | `cafile=FILE`                       |
 * | `--servername NAME`      | `--ssl-servername NAME`                     | `commonname=NAME`, `snihost=NAME`   |
 * | `--insecure`             | `--ssl` without `--ssl-verify`              | `verify=0`                          |
 * | `--cert FILE --key FILE` | `--ssl-cert FILE --ssl-key FILE`            | `cert=FILE,key=FILE`                |
 *
 * A WebSocket (`ws://HOST[:PORT]/PATH`, `wss://` over TLS, as websocat
 * does): each chunk of stdin is one binary message and each message's
 * bytes go to stdout, or with `--text` each line is one text message and
 * each message is printed as a line. WebSocket has no half-close: when
 * stdin ends, the close frame goes once no message has come for
 * `--timeout` seconds (default 1), so the server's answer to the last
 * line is still printed. `wss://` verifies the server for the URL's host
 * against Deno's roots and `--ca` FILE's certificates (added to them, as
 * Deno's WebSocket client takes them; it takes no other name to verify,
 * so `--servername` is refused):
 *
 * ```sh
 * $ socat TCP-LISTEN:15000,reuseaddr,fork EXEC:cat &
 * $ deno run --allow-net=0.0.0.0:8080,127.0.0.1:15000 servers/forward.ts ws://0.0.0.0:8080/ tcp://127.0.0.1:15000 &
 * $ echo ping | deno run --allow-net=127.0.0.1:8080 clients/connect.ts ws://127.0.0.1:8080/
 * connected to ws://127.0.0.1:8080/
 * ping
 * ```
 *
 * | here                            | websocat                          |
 * | ------------------------------- | --------------------------------- |
 * | `connect.ts ws://HOST:PORT/P`   | `websocat -b ws://HOST:PORT/P`    |
 * | `connect.ts --text ws://...`    | `websocat ws://...` (text lines)  |
 *
 * Unlike the seed, which takes the first IPv4 address only and ignores
 * failures, every failure here is one `error:` line and exit 1.
 *
 * @module
 */

import { dialWebSocket } from "../lib/websocket_dial.ts";
import { joinWebSocket } from "../lib/websocket_join.ts";
import {
  ConnectError,
  connectFailureReason,
  DEFAULT_ATTEMPT_DELAY_MS,
  describeConnectFailure,
  dialHost,
  type Endpoint,
  EndpointError,
  escapeControlChars,
  flag,
  flagsHelp,
  formatAddr,
  formatBytes,
  formatEndpoint,
  joinHostPort,
  type Log,
  MAX_SMALL_FILE_BYTES,
  MIN_ATTEMPT_DELAY_MS,
  parseCommandLine,
  parseEndpoint,
  positiveSecondsFlag,
  readCaFile,
  readTlsFiles,
  relay,
  relayDatagrams,
  type RelayOptions,
  type RelayResult,
  resolveHost,
  runMain,
  secondsFlag,
  startClientTls,
  stderrLogNow,
  stdoutAfterLog,
  type TlsCertificate,
  UsageError,
  type WebSocketEndpoint,
} from "../mod.ts";
import { notePermission } from "../lib/main.ts";

/** Options for {@linkcode connectClient} and {@linkcode runConnect}. */
export interface ConnectOptions {
  /** Host name or IP literal (TCP and UDP). */
  hostname?: string;
  /** Port, 1 to 65535 (TCP and UDP). */
  port?: number;
  /** Connect to this Unix stream socket instead. */
  unix?: string;
  /** Use UDP instead of TCP. */
  udp?: boolean;
  /**
   * TCP: give up connecting (resolving included) after this long. Default:
   * never (the system's own timeouts apply). UDP: once stdin has ended, stop
   * when no reply has come for this long. Default 1000 ms.
   */
  timeoutMs?: number;
  /** RFC 8305's Connection Attempt Delay. Default 250 ms. */
  attemptDelayMs?: number;
  /** Also log each attempt and failure with its time (`trying ...`). */
  verbose?: boolean;
  /** Where the stderr lines go. Default: stderr. */
  log?: Log;
  /** TCP: speak TLS over the connection. */
  tls?: ConnectTlsOptions;
  /**
   * Open this WebSocket instead (`tls.caCerts` gives a `wss://` one CA
   * certificates, added to the default roots).
   */
  webSocket?: WebSocketEndpoint;
  /** WebSocket: a text message per line instead of binary messages. */
  text?: boolean;
}

/** TLS settings of {@linkcode ConnectOptions}. */
export interface ConnectTlsOptions {
  /** PEM CA certificates to trust instead of Deno's default roots. */
  caCerts?: string[];
  /** The name to verify (and send as SNI). Default: the host dialled. */
  serverName?: string;
  /** Do not verify the server at all (a warning is logged). */
  insecure?: boolean;
  /** A client certificate and key, for a server that asks for one. */
  certificate?: TlsCertificate;
}

/**
 * Opens the stream connection `options` describe (TCP by Happy Eyeballs, or
 * a Unix socket), logging each address and `connected to ADDRESS`. Every
 * expected failure is a `ConnectError` (from `mod.ts`) whose message is the
 * line a user sees.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { connectClient } from "./connect.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepting = listener.accept();
 * const lines: string[] = [];
 * using conn = await connectClient({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 *   log: (line) => lines.push(line),
 * });
 * using _server = await accepting;
 * assertEquals(lines.at(-1), `connected to 127.0.0.1:${listener.addr.port}`);
 * ```
 */
export async function connectClient(
  options: ConnectOptions,
): Promise<Deno.TcpConn | Deno.UnixConn | Deno.TlsConn> {
  const log = options.log ?? stderrLogNow;
  if (options.unix !== undefined) {
    const path = options.unix;
    let conn: Deno.UnixConn;
    try {
      conn = await Deno.connect({ transport: "unix", path });
    } catch (error) {
      throw describeConnectFailure(error, path);
    }
    log(`connected to ${escapeControlChars(path)}`);
    return conn;
  }
  const { hostname, port } = netTarget(options);
  const conn = await dialHost(hostname, port, {
    timeoutMs: options.timeoutMs,
    attemptDelayMs: options.attemptDelayMs,
    onResolved: (addresses) => {
      for (const address of addresses) {
        log(`address ${joinHostPort(address, port)}`);
      }
    },
    onAttempt: options.verbose
      ? (address, ms) =>
        log(`trying ${joinHostPort(address, port)} (+${ms} ms)`)
      : undefined,
    onFailure: options.verbose
      ? (address, error, ms) =>
        log(
          `failed ${joinHostPort(address, port)}: ${
            connectFailureReason(error)
          } (+${ms} ms)`,
        )
      : undefined,
  });
  log(`connected to ${formatAddr(conn.remoteAddr)}`);
  if (!options.tls) return conn;
  // TLS starts after the race: RFC 8305 races the TCP handshakes only.
  if (options.tls.insecure) {
    log(
      "warning: --insecure: the server's certificate is not verified; anyone on the path can read and change this connection",
    );
  }
  const tls = await startClientTls(conn, {
    serverName: options.tls.serverName ?? hostname,
    caCerts: options.tls.caCerts,
    insecure: options.tls.insecure,
    certificate: options.tls.certificate,
    handshakeTimeoutMs: options.timeoutMs,
  });
  log(`TLS handshake done with ${formatAddr(conn.remoteAddr)}`);
  return tls;
}

function netTarget(
  options: ConnectOptions,
): { hostname: string; port: number } {
  if (options.hostname === undefined || options.port === undefined) {
    throw new TypeError("hostname and port are needed without unix");
  }
  return { hostname: options.hostname, port: options.port };
}

/**
 * Connects as `options` say and relays `io` (default stdin and stdout) with
 * the connection until the server closes (TCP, Unix), or until stdin has
 * ended and the server has been quiet for `timeoutMs` (UDP).
 *
 * @example Talking to an echo server
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { runConnect } from "./connect.ts";
 * import { serveEcho } from "../servers/echo.ts";
 *
 * await using server = serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * const request = new TextEncoder().encode("ping\n");
 * let done = false;
 * const input = {
 *   read(p: Uint8Array): Promise<number | null> {
 *     if (done) return Promise.resolve(null);
 *     done = true;
 *     p.set(request);
 *     return Promise.resolve(request.byteLength);
 *   },
 * };
 * let reply = "";
 * const output = {
 *   write(p: Uint8Array): Promise<number> {
 *     reply += new TextDecoder().decode(p);
 *     return Promise.resolve(p.byteLength);
 *   },
 * };
 * await runConnect({ hostname: "127.0.0.1", port, log: () => {} }, { input, output });
 * assertEquals(reply, "ping\n");
 * ```
 */
export async function runConnect(
  options: ConnectOptions,
  io: RelayOptions = {},
): Promise<RelayResult> {
  // The log's `connected to` before what the server sent, on one pipe too.
  io = { ...io, output: io.output ?? stdoutAfterLog({ firstOnly: true }) };
  if (options.udp) return await runDatagrams(options, io);
  if (options.webSocket) {
    return await runWebSocket(options.webSocket, options, io);
  }
  using conn = await connectClient(options);
  // A reset while relaying names the peer, as a failure to connect does.
  const peer = options.unix ?? formatAddr(conn.remoteAddr);
  return await relay(conn, { peer, ...io });
}

/**
 * Opens the WebSocket and joins stdin and stdout to it; a close by the
 * server with a code other than normal (1000) or none (1005) is an error.
 */
async function runWebSocket(
  endpoint: WebSocketEndpoint,
  options: ConnectOptions,
  io: RelayOptions,
): Promise<RelayResult> {
  const log = options.log ?? stderrLogNow;
  const socket = await dialWebSocket(endpoint, {
    caCerts: options.tls?.caCerts,
    timeoutMs: options.timeoutMs,
  });
  const where = formatEndpoint(endpoint);
  log(`connected to ${where}`);
  const input = io.input ?? Deno.stdin;
  const output = io.output ?? Deno.stdout;
  const result = await joinWebSocket(
    {
      read: (buffer) => input.read(buffer),
      write: (bytes) => output.write(bytes),
    },
    socket,
    {
      framing: options.text ? "lines" : "binary",
      lingerMs: options.timeoutMs ?? DEFAULT_UDP_QUIET_MS,
      streamName: "stdin",
      socketName: "server",
    },
  );
  if (
    result.closeCode !== undefined && result.closeCode !== 1000 &&
    result.closeCode !== 1005
  ) {
    throw new ConnectError(`${where}: ${result.end}`, "other", where);
  }
  return {
    bytesSent: result.bytesToSocket,
    bytesReceived: result.bytesToStream,
    inputEnded: result.end.startsWith("stdin"),
  };
}

async function runDatagrams(
  options: ConnectOptions,
  io: RelayOptions,
): Promise<RelayResult> {
  const log = options.log ?? stderrLogNow;
  const { hostname, port } = netTarget(options);
  // Datagrams have no handshake to race: the resolver's first address
  // (its RFC 6724 choice) is the peer, as for `nc -u`.
  const addresses = await resolveHost(hostname);
  for (const address of addresses) {
    log(`address ${joinHostPort(address, port)}`);
  }
  const address = addresses[0];
  const v6 = address.includes(":");
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: v6 ? "::" : "0.0.0.0",
    port: 0,
  });
  const peer: Deno.NetAddr = { transport: "udp", hostname: address, port };
  log(`connected to ${formatAddr(peer)}`);
  const result = await relayDatagrams(socket, peer, {
    peer: formatAddr(peer),
    ...io,
    quietMs: options.timeoutMs ?? DEFAULT_UDP_QUIET_MS,
  });
  // Linux does not tell an unconnected UDP socket (all Deno has) about the
  // ICMP "port unreachable" of a closed port, so a closed port cannot be
  // told from a server that never answers (discard): not an error, but
  // not silence either.
  if (result.bytesSent > 0 && result.bytesReceived === 0) {
    log(
      `no reply from ${
        formatAddr(peer)
      } (over UDP a closed port and a silent server look alike)`,
    );
  }
  return result;
}

/** UDP: how long after stdin ends to wait for more replies, by default. */
const DEFAULT_UDP_QUIET_MS = 1000;

/** The longest Happy Eyeballs delay `--attempt-delay` takes. */
const MAX_ATTEMPT_DELAY_MS = 10_000;

const FLAGS = {
  unix: flag.custom(
    "PATH",
    "connect to a Unix stream socket instead",
    socketPath,
  ),
  udp: flag.boolean(
    "UDP: each chunk of stdin is one datagram, replies\ngo to stdout (needs --unstable-net)",
  ),
  timeout: flag.custom(
    "S",
    `TCP: give up connecting after S seconds (default:\nnever); UDP: after stdin ends, exit once no reply\nhas come for S seconds (default ${
      DEFAULT_UDP_QUIET_MS / 1000
    })`,
    positiveSecondsFlag,
  ),
  "attempt-delay": flag.custom(
    "S",
    `Happy Eyeballs delay before the next address is\ntried {default}`,
    attemptDelay,
    {
      shown: `${DEFAULT_ATTEMPT_DELAY_MS / 1000}; ${
        MIN_ATTEMPT_DELAY_MS / 1000
      } to ${MAX_ATTEMPT_DELAY_MS / 1000}`,
    },
  ),
  verbose: flag.boolean("also print each connection attempt and failure"),
  tls: flag.boolean("speak TLS (verifies the server's certificate)"),
  ca: flag.string(
    "FILE",
    `TLS: trust the PEM CA certificates in FILE instead\nof the default roots (needs --allow-read=FILE; a\nregular file of at most ${
      formatBytes(MAX_SMALL_FILE_BYTES)
    })`,
  ),
  servername: flag.custom(
    "NAME",
    "TLS: the name to verify and send as SNI (default:\nNAME as given)",
    serverName,
  ),
  insecure: flag.boolean("TLS: do not verify the server at all (warns)"),
  cert: flag.string(
    "FILE",
    "TLS: present the PEM client certificate in FILE when the\nserver asks (with --key; needs --allow-read=FILE)",
  ),
  key: flag.string("FILE", "TLS: the PEM private key of --cert"),
  text: flag.boolean(
    "WebSocket: a text message per line of stdin, each\nmessage printed as a line (default: binary messages)",
  ),
};

const USAGE = `usage: connect.ts [options] NAME PORT
       connect.ts [options] --unix PATH
       connect.ts [options] ws://HOST[:PORT]/PATH (or wss://)

Connects to NAME (a host name or IP address) on PORT, trying its addresses
in Happy Eyeballs order (RFC 8305), then relays stdin to the connection and
the connection to stdout, like nc. Addresses and "connected to ADDRESS" are
printed on stderr. When stdin ends, the connection is half-closed and the
output is printed until the server closes. A WebSocket URL: stdin's chunks
as binary messages (--text: lines as text messages); when stdin ends, the
close frame goes once no message has come for --timeout seconds (default
${
  DEFAULT_UDP_QUIET_MS / 1000
}); wss:// verifies the server (--ca adds CA certificates,
--servername names it).

${flagsHelp(FLAGS)}

Permissions: --allow-net=ADDRESS:PORT for an IP address (and
--allow-read=FILE for --ca, --cert and --key FILE); for a name also
--allow-net=NAME (to resolve it) and each of its ADDRESS:PORT; for --unix
PATH, --allow-net=unix:PATH --allow-read=PATH --allow-write=PATH; for --udp,
--unstable-net and --allow-net=0.0.0.0:0 (or [::]:0 for IPv6) too; for
ws://HOST:PORT, --allow-net=HOST:PORT.`;

function socketPath(text: string, name: string): string {
  if (text === "" || text.includes("\0")) {
    throw new UsageError(`invalid socket path '${text}' for ${name}`);
  }
  return text;
}

function attemptDelay(text: string, name: string): number {
  const ms = secondsFlag(name, text);
  if (ms < MIN_ATTEMPT_DELAY_MS || ms > MAX_ATTEMPT_DELAY_MS) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected ${
        MIN_ATTEMPT_DELAY_MS / 1000
      } to ${MAX_ATTEMPT_DELAY_MS / 1000} seconds`,
    );
  }
  return ms;
}

function serverName(text: string, name: string): string {
  if (!/^[^\s/]+$/.test(text)) {
    throw new UsageError(`invalid value '${text}' for ${name}`);
  }
  return text;
}

/** `connect.ts ws://...`: the URL and the flags a WebSocket takes. */
function webSocketOptions(
  positionals: string[],
  values: ReturnType<typeof parseCommandLine<typeof FLAGS>>["values"],
  options: ConnectOptions,
): ConnectOptions {
  if (positionals.length > 1) {
    throw new UsageError("a ws:// or wss:// URL takes no PORT (see --help)");
  }
  for (
    const name of ["unix", "udp", "tls", "insecure", "cert", "key"] as const
  ) {
    if (values[name]) {
      throw new UsageError(`--${name} cannot be used with a WebSocket URL`);
    }
  }
  let endpoint: Endpoint;
  try {
    endpoint = parseEndpoint(positionals[0]);
  } catch (error) {
    if (!(error instanceof EndpointError)) throw error;
    throw new UsageError(error.message);
  }
  if (endpoint.transport !== "ws" && endpoint.transport !== "wss") {
    throw new UsageError(`not a WebSocket URL: ${positionals[0]}`);
  }
  if (values.servername !== undefined) {
    // Deno's WebSocket client verifies the URL's host and takes no other
    // name (see dialWebSocket).
    throw new UsageError(
      "--servername cannot be used with a WebSocket URL: write the name in it",
    );
  }
  if (endpoint.transport === "ws" && values.ca !== undefined) {
    throw new UsageError("--ca needs a wss:// URL");
  }
  options.webSocket = endpoint;
  options.text = values.text;
  // --ca is read with the other TLS files, once all is checked.
  if (values.ca !== undefined) options.tls = {};
  return options;
}

/**
 * Turns the command line into {@linkcode ConnectOptions}, and the CA file
 * `--ca` names (read by {@linkcode readTlsFileOptions}, once all is
 * checked).
 */
function optionsFromArgs(
  args: string[],
): {
  options: ConnectOptions;
  caFile?: string;
  certFiles?: [cert: string, key: string];
} {
  const { values, positionals } = parseCommandLine(args, {
    usage: USAGE,
    flags: FLAGS,
    positionals: ["NAME", "PORT"],
    min: 0,
  });
  const options: ConnectOptions = {
    verbose: values.verbose,
    timeoutMs: values.timeout,
    attemptDelayMs: values["attempt-delay"],
  };
  if (/^wss?:\/\//i.test(positionals[0] ?? "")) {
    return {
      options: webSocketOptions(positionals, values, options),
      caFile: values.ca,
    };
  }
  if (values.text) throw new UsageError("--text needs a ws:// or wss:// URL");
  if (!values.tls) {
    for (
      const flag of ["ca", "servername", "insecure", "cert", "key"] as const
    ) {
      if (values[flag]) throw new UsageError(`--${flag} needs --tls`);
    }
  } else {
    if (values.udp || values.unix !== undefined) {
      throw new UsageError(
        `--tls cannot be used with --${values.udp ? "udp" : "unix"}`,
      );
    }
    if (values.insecure && values.ca !== undefined) {
      throw new UsageError("--insecure and --ca cannot be used together");
    }
    if ((values.cert === undefined) !== (values.key === undefined)) {
      throw new UsageError("--cert and --key go together");
    }
    options.tls = {
      serverName: values.servername,
      insecure: values.insecure,
    };
  }
  if (values.unix !== undefined) {
    if (values.udp) {
      throw new UsageError("--unix and --udp cannot be used together");
    }
    if (positionals.length > 0) {
      throw new UsageError(`--unix PATH takes no NAME or PORT (see --help)`);
    }
    options.unix = values.unix;
    return { options, caFile: values.ca, certFiles: certFiles(values) };
  }
  if (positionals.length < 2) {
    throw new UsageError(
      positionals.length === 0
        ? "missing NAME and PORT (see --help)"
        : "missing PORT (see --help)",
    );
  }
  // An impossible host name is a runtime failure (exit 1), as for the other
  // clients: `dialHost` checks it.
  const [hostname, portText] = positionals;
  options.hostname = hostname;
  const port = Number(portText);
  if (!/^[0-9]{1,5}$/.test(portText) || port < 1 || port > 65535) {
    throw new UsageError(
      `invalid port '${portText}': expected a number from 1 to 65535`,
    );
  }
  options.port = port;
  options.udp = values.udp;
  return { options, caFile: values.ca, certFiles: certFiles(values) };
}

/** `--cert` and `--key`, when given (they go together: checked before). */
function certFiles(
  values: { cert?: string; key?: string },
): [cert: string, key: string] | undefined {
  return values.cert !== undefined && values.key !== undefined
    ? [values.cert, values.key]
    : undefined;
}

/**
 * The files `--ca`, `--cert` and `--key` name, read once the command line
 * is known to be right (a missing or unreadable file is a runtime failure,
 * exit 1), and after the target's permission is noted: the hint for a
 * file it may not read is then a whole command that also connects.
 */
function readTlsFileOptions(
  options: ConnectOptions,
  ca?: string,
  certificate?: [cert: string, key: string],
): void {
  if ((ca === undefined && certificate === undefined) || !options.tls) return;
  if (options.hostname !== undefined && options.port !== undefined) {
    notePermission(
      "--allow-net",
      joinHostPort(options.hostname, options.port),
    );
  }
  if (ca !== undefined) options.tls.caCerts = [readCaFile(ca)];
  if (certificate) options.tls.certificate = readTlsFiles(...certificate);
}

if (import.meta.main) {
  await runMain(async () => {
    const { options, caFile, certFiles } = optionsFromArgs(Deno.args);
    readTlsFileOptions(options, caFile, certFiles);
    await runConnect(options);
  });
}
