/**
 * TCP, Unix and UDP forwarder, from the seed's "Connecting to a remote
 * host", on both sides: `forward.ts LISTEN TARGET` accepts clients on
 * LISTEN and gives each one its own connection to TARGET (resolved and
 * dialled for that client, by Happy Eyeballs), then copies bytes both ways
 * until both sides are done. What socat's `TCP-LISTEN:...,fork TCP:...`
 * and haproxy's `mode tcp` are most used for. With a backend on 15000:
 *
 * ```sh
 * $ socat TCP-LISTEN:15000,bind=127.0.0.1,reuseaddr,fork EXEC:cat &
 * $ deno run --allow-net=0.0.0.0:8080,127.0.0.1:15000 servers/forward.ts \
 *     tcp://0.0.0.0:8080 tcp://127.0.0.1:15000 &
 * listening on 0.0.0.0:8080
 * $ echo hi | socat - TCP:127.0.0.1:8080
 * hi
 * ...
 * $ deno install -g -f -n sock-forward --config=deno.json --allow-net=0.0.0.0:8080,127.0.0.1:15000 servers/forward.ts
 * ...
 * ```
 *
 * The permissions are exactly the listen address and the target; a target
 * by name needs only NAME:PORT (`--allow-net=0.0.0.0:8080,backend.example:80`
 * for `tcp://backend.example:80`: Deno then resolves it and races its
 * addresses itself). What each socat or haproxy line becomes (arguments of
 * `servers/forward.ts`; permissions as above, plus `--allow-read` and
 * `--allow-write` of a Unix socket path, `--allow-read` of TLS files):
 *
 * | socat / haproxy | forward.ts |
 * | --- | --- |
 * | `socat TCP-LISTEN:8080,fork,reuseaddr TCP:127.0.0.1:15000` | `tcp://0.0.0.0:8080 tcp://127.0.0.1:15000` |
 * | `socat TCP-LISTEN:2375,bind=127.0.0.1,fork UNIX-CONNECT:/var/run/docker.sock` | `tcp://127.0.0.1:2375 unix:/var/run/docker.sock` |
 * | `socat UNIX-LISTEN:/tmp/db.sock,fork TCP:127.0.0.1:5432` | `unix:/tmp/db.sock tcp://127.0.0.1:5432` |
 * | `socat UDP-LISTEN:5353,fork UDP:127.0.0.1:53` | `udp://0.0.0.0:5353 udp://127.0.0.1:53` (`--unstable-net --allow-net`: answers go to whoever asked) |
 * | `socat OPENSSL-LISTEN:8443,fork,cert=cert.pem,key=key.pem,verify=0 TCP:127.0.0.1:8080`; haproxy `bind :8443 ssl crt site.pem` | `--tls --cert cert.pem --key key.pem tcp://0.0.0.0:8443 tcp://127.0.0.1:8080` |
 * | `socat TCP-LISTEN:8080,fork OPENSSL:example.com:443` | `--to-tls tcp://127.0.0.1:8080 tcp://example.com:443` |
 * | haproxy `server s 127.0.0.1:8080 send-proxy-v2` | `--send-proxy v2 tcp://0.0.0.0:80 tcp://127.0.0.1:8080` |
 * | haproxy `bind :80 accept-proxy` | `--accept-proxy tcp://0.0.0.0:80 tcp://127.0.0.1:8080` |
 *
 * (UDP for clients on this host only: `--allow-net=127.0.0.1,0.0.0.0:0` and
 * `udp://127.0.0.1:5353`: the session sockets bind `0.0.0.0:0`.)
 *
 * Both directions are byte-exact and end on their own: a client that shuts
 * down its writing still gets the target's whole answer, and the reverse.
 * A side that does not read stops the other being read (one buffer per
 * direction, no queue). A target that refuses, is not found or does not
 * answer within `--connect-timeout` closes that client, with one log line;
 * the server carries on. Each connection logs one line when accepted and
 * one when it ends: the client, bytes each way, the target address used,
 * how long it lasted and why it ended, e.g. `closed 127.0.0.1:41234 (5
 * bytes in, 5 bytes out) to 127.0.0.1:15000, 0.004 s, client closed first`.
 *
 * UDP: each client address gets a session (a socket of its own towards
 * TARGET, so answers go back to the client that asked) that ends once idle
 * for `--udp-session-timeout`; `--max-connections` bounds the sessions;
 * no datagram from a source port below 1024 is forwarded
 * (`--allow-low-ports`) and answers to one client address are limited by
 * `--udp-rate`, as every UDP server here does.
 *
 * ## PROXY protocol
 *
 * A forwarder hides the client's address from the target: the target sees
 * the forwarder's. haproxy's PROXY protocol (`doc/proxy-protocol.txt` in
 * haproxy's sources) puts a header in front of the connection that carries
 * it. `--send-proxy v1` writes the text header (`PROXY TCP4 192.0.2.1
 * 198.51.100.7 51234 80\r\n`), `--send-proxy v2` the binary one, before
 * anything else (before TLS with `--to-tls`), as haproxy's `send-proxy` and
 * `send-proxy-v2`. `--accept-proxy`, which every stream server here takes
 * (the server core reads the header: the README's "PROXY protocol"),
 * requires one (either version) from each client, within `--proxy-timeout`
 * (5 s) and at most 4 KiB, before TLS with `--tls`: a missing or bad header
 * closes the connection with a log line, and from then on the log lines,
 * `--allow`/`--deny` and `--per-source` use the client address it carries
 * (a header that carries none, v1 `UNKNOWN` or v2 `LOCAL`, leaves the
 * connection's own), e.g. `closed 127.0.0.1:41234 (5 bytes in, 5 bytes
 * out) for 203.0.113.7:5555 (PROXY v1) to 127.0.0.1:15000, 0.004 s, client
 * closed first`. Chained, a forwarder with `--accept-proxy --send-proxy`
 * passes the original client on (and the address it reached). Accept
 * headers only from your own proxies: anyone who can send one picks the
 * address you will believe, so listen where only they can reach.
 *
 * @module
 */

import {
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_UDP_RATE,
  type Endpoint,
  EndpointError,
  flag,
  flagsHelp,
  formatBytes,
  MAX_SMALL_FILE_BYTES,
  parseCommandLine,
  parseEndpoint,
  positiveSecondsFlag,
  readCaFile,
  runMain,
  runServers,
  serve,
  type Server,
  serverFlags,
  type ServerFlagValues,
  type ServerOptions,
  serverOptionsFromFlags,
  type Transport,
  UsageError,
} from "../mod.ts";
import { workerPlace } from "../lib/workers.ts";
import {
  forwardConnection,
  type ForwardPlan,
  type ForwardTlsOptions,
} from "../lib/forward.ts";
import {
  SPLICE_BUFFER_BYTES,
  SPLICE_IDLE_BUFFER_BYTES,
} from "../lib/splice.ts";
import {
  DEFAULT_UDP_SESSION_TIMEOUT_MS,
  DEFAULT_UDP_SESSIONS,
  MAX_DATAGRAM_BYTES,
  serveDatagramForward,
} from "../lib/udp_forward.ts";

export type { ForwardTlsOptions };

/** How long dialling TARGET (resolving included) may take, by default, in ms. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** Options for {@linkcode serveForward}: where to listen, as any server's, and more. */
export interface ForwardOptions extends ServerOptions {
  /**
   * Where each client goes: `tcp://HOST:PORT` (`[v6]` too) or `unix:PATH`
   * for a `tcp` or `unix` listener, `udp://HOST:PORT` for a `udp` one.
   */
  target: Endpoint | string;
  /**
   * Give up dialling the target (resolving and, with `targetTls`, the TLS
   * handshake included) after this long. Default 10000 ms.
   */
  connectTimeoutMs?: number;
  /** Speak TLS to the target (a `tcp://` one). */
  targetTls?: ForwardTlsOptions;
  /**
   * Write a PROXY protocol header of this version to the target first,
   * for the client (with `acceptProxy`, the one the client's own header
   * names).
   */
  sendProxy?: 1 | 2;
  /** UDP: a session idle this long ends. Default 30000 ms. */
  udpSessionTimeoutMs?: number;
}

function targetOf(options: ForwardOptions): Endpoint {
  return typeof options.target === "string"
    ? parseEndpoint(options.target)
    : options.target;
}

/**
 * Starts a forwarder: listens where `options` say (TCP by default, a Unix
 * socket, or UDP) and forwards each client to `options.target` (see the
 * module doc). Binding TCP and UDP happens before it returns.
 *
 * @example A forwarder in front of an echo server
 * ```ts
 * import { serveForward } from "./forward.ts";
 * import { serveEcho } from "./echo.ts";
 *
 * await using echo = serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * await using forwarder = serveForward({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   target: `tcp://127.0.0.1:${(echo.addr as Deno.NetAddr).port}`,
 *   log: () => {},
 * });
 * const { port } = forwarder.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("ping"));
 * await conn.closeWrite();
 * const reply = await new Response(conn.readable).text();
 * if (reply !== "ping") throw new Error(reply);
 * ```
 */
export function serveForward(options: ForwardOptions): Server {
  const target = targetOf(options);
  const transport = options.transport ?? "tcp";
  if (transport === "udp") {
    if (target.transport !== "udp") {
      throw new TypeError("a udp:// listener forwards to a udp:// target");
    }
    return serveDatagramForward({
      hostname: options.hostname,
      port: options.port,
      target,
      sessionTimeoutMs: options.udpSessionTimeoutMs,
      maxSessions: options.maxConnections,
      access: options.access,
      allowLowPorts: options.allowLowPorts,
      udpRatePerSecond: options.udpRatePerSecond,
      log: options.log,
      label: options.label,
      signal: options.signal,
    });
  }
  if (transport === "unixpacket") {
    throw new TypeError("forwarding Unix datagram sockets is not supported");
  }
  if (target.transport !== "tcp" && target.transport !== "unix") {
    throw new TypeError(
      `a ${transport} listener forwards to a tcp:// or unix: target`,
    );
  }
  const plan: ForwardPlan = {
    target,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    targetTls: options.targetTls,
    sendProxy: options.sendProxy,
    keepAlive: target.transport === "tcp" ? options.keepAlive : undefined,
  };
  return serve({
    name: "forward",
    defaultPort: 0,
    stream: (conn, context) => forwardConnection(conn, context, plan),
  }, options);
}

const {
  hostname: _hostname,
  port: _port,
  udp: _udp,
  unix: _unix,
  unixpacket: _unixpacket,
  ...COMMON_FLAGS
} = serverFlags({ port: 0 });

function serverName(text: string, name: string): string {
  if (!/^[^\s/]+$/.test(text)) {
    throw new UsageError(`invalid value '${text}' for ${name}`);
  }
  return text;
}

function proxyVersion(text: string, name: string): 1 | 2 {
  if (text === "v1" || text === "1") return 1;
  if (text === "v2" || text === "2") return 2;
  throw new UsageError(
    `invalid value '${text}' for ${name}: expected v1 or v2`,
  );
}

const FLAGS = {
  "connect-timeout": flag.custom(
    "S",
    "give up dialling TARGET (resolving and TLS included)\nafter S seconds {default}",
    positiveSecondsFlag,
    { shown: String(DEFAULT_CONNECT_TIMEOUT_MS / 1000) },
  ),
  "to-tls": flag.boolean(
    "speak TLS to TARGET (verifies its certificate)",
  ),
  ca: flag.string(
    "FILE",
    `--to-tls: trust the PEM CA certificates in FILE\ninstead of the default roots (needs --allow-read=FILE;\na regular file of at most ${
      formatBytes(MAX_SMALL_FILE_BYTES)
    })`,
  ),
  servername: flag.custom(
    "NAME",
    "--to-tls: the name to verify and send as SNI (default:\nTARGET's host)",
    serverName,
  ),
  insecure: flag.boolean("--to-tls: do not verify TARGET at all (warns)"),
  "send-proxy": flag.custom(
    "V",
    "write a PROXY protocol header (v1 or v2) to TARGET\nfirst, carrying the client's address",
    proxyVersion,
  ),
  "udp-session-timeout": flag.custom(
    "S",
    "UDP: end a client's session idle for S seconds {default}",
    positiveSecondsFlag,
    { shown: String(DEFAULT_UDP_SESSION_TIMEOUT_MS / 1000) },
  ),
  ...COMMON_FLAGS,
  // The same flags, in the words of LISTEN's schemes.
  mode: {
    ...COMMON_FLAGS.mode,
    help: "unix: LISTEN: the socket file's mode {default}",
  },
  "max-connections": {
    ...COMMON_FLAGS["max-connections"],
    help:
      `most clients at once; more are closed at once {default};\nudp://: most sessions (default ${DEFAULT_UDP_SESSIONS})`,
  },
  "allow-low-ports": {
    ...COMMON_FLAGS["allow-low-ports"],
    help:
      "udp://: forward datagrams from source ports below 1024\ntoo (off: loop protection)",
  },
  "udp-rate": {
    ...COMMON_FLAGS["udp-rate"],
    help: "udp://: answers per second to one client address\n{default}",
  },
};

const USAGE = `usage: forward.ts [options] LISTEN TARGET

Accepts clients on LISTEN and forwards each one to TARGET over a connection
of its own, bytes both ways until both sides are done (each half-closed on
its own). LISTEN and TARGET: tcp://HOST:PORT (IPv6 as [::1]), unix:PATH
(a Unix stream socket), or udp://HOST:PORT (UDP to UDP: a session per
client address). A bare HOST:PORT is TCP.

  forward.ts tcp://0.0.0.0:8080 tcp://backend:80
  forward.ts tcp://127.0.0.1:2375 unix:/var/run/docker.sock
  forward.ts udp://0.0.0.0:5353 udp://127.0.0.1:53

${flagsHelp(FLAGS)}

Limits: at most --max-connections clients (default ${DEFAULT_MAX_CONNECTIONS}), each with
one connection to TARGET and one buffer per direction (${SPLICE_IDLE_BUFFER_BYTES} bytes each while
idle, ${SPLICE_BUFFER_BYTES / 1024} KiB once busy: at most ${
  (2 * SPLICE_BUFFER_BYTES) / 1024
} KiB a pair, plus the kernel's socket
buffers, and with --tls up to 64 KiB of decrypted bytes more); a side that
does not read is not read for (no queue grows). UDP: at most
--max-connections sessions (default ${DEFAULT_UDP_SESSIONS}), each with a socket and a
${
  MAX_DATAGRAM_BYTES / 1024
} KiB receive buffer; no datagram from a source port below 1024 is
forwarded (--allow-low-ports), answers are limited by --udp-rate (default
${DEFAULT_UDP_RATE}/s per client address).

Permissions: --allow-net=LISTEN_HOST:PORT,TARGET_HOST:PORT (a target by name:
NAME:PORT). unix:PATH, to listen or to connect: --allow-net=unix:PATH
--allow-read=PATH --allow-write=PATH. UDP: --unstable-net --allow-net
(answers go to any client). --tls: --allow-read=CERT,KEY; --ca FILE:
--allow-read=FILE.`;

/** The transports LISTEN can be, as server flags name them. */
function listenValues(
  listen: Endpoint,
  values: ServerFlagValues,
): ServerFlagValues {
  switch (listen.transport) {
    // Every transport LISTEN can be is a key, given or not: the flags'
    // messages then name only those (as they do for a script's own flags).
    case "tcp":
      return {
        ...values,
        udp: false,
        unix: undefined,
        hostname: listen.hostname,
        port: listen.port,
      };
    case "udp":
      return {
        ...values,
        udp: true,
        unix: undefined,
        hostname: listen.hostname,
        port: listen.port,
      };
    default:
      return { ...values, udp: false, unix: listen.path };
  }
}

/** The transports forward.ts forwards: LISTEN's and TARGET's schemes. */
const FORWARDED: readonly Transport[] = ["tcp", "udp", "unix"];

function endpointArgument(text: string, what: string): Endpoint {
  try {
    return parseEndpoint(text, FORWARDED);
  } catch (error) {
    if (!(error instanceof EndpointError)) throw error;
    throw new UsageError(`${what}: ${error.message}`);
  }
}

/**
 * `serverOptionsFromFlags`, its messages naming LISTEN's schemes rather
 * than the flags other servers take (`--udp`, `--unix`).
 */
function serverOptionsFrom(values: ServerFlagValues): ServerOptions {
  try {
    return serverOptionsFromFlags(values);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    throw new UsageError(
      error.message.replace(/--udp(?![\w-])/g, "udp://")
        .replace(/--unixpacket(?![\w-])/g, "unixpacket:")
        .replace(/--unix(?![\w-])/g, "unix:"),
    );
  }
}

/** Turns the command line into {@linkcode ForwardOptions}. */
function optionsFromArgs(args: string[]): ForwardOptions {
  const { values, positionals } = parseCommandLine(args, {
    usage: USAGE,
    flags: FLAGS,
    positionals: ["LISTEN", "TARGET"],
  });
  const listen = endpointArgument(positionals[0], "LISTEN");
  const target = endpointArgument(positionals[1], "TARGET");
  const udp = listen.transport === "udp";
  if (udp !== (target.transport === "udp")) {
    throw new UsageError(
      "LISTEN and TARGET must both be udp://, or neither (UDP is forwarded to UDP only)",
    );
  }
  const streamOnly = [
    "to-tls",
    "send-proxy",
    "accept-proxy",
    "proxy-timeout",
  ] as const;
  for (const name of streamOnly) {
    if (udp && values[name]) {
      throw new UsageError(`--${name} applies to stream (tcp://, unix:) only`);
    }
  }
  if (!udp && values["udp-session-timeout"] !== undefined) {
    throw new UsageError("--udp-session-timeout applies to udp:// only");
  }
  if (!values["to-tls"]) {
    for (const name of ["ca", "servername", "insecure"] as const) {
      if (values[name]) throw new UsageError(`--${name} needs --to-tls`);
    }
  } else {
    if (target.transport !== "tcp") {
      throw new UsageError("--to-tls needs a tcp:// TARGET");
    }
    if (values.insecure && values.ca !== undefined) {
      throw new UsageError("--insecure and --ca cannot be used together");
    }
  }
  // UDP: --max-connections bounds sessions (the server flags give it to
  // stream servers only).
  const { "max-connections": maxConnections, ...common } = values;
  const options: ForwardOptions = {
    ...serverOptionsFrom(listenValues(listen, udp ? common : values)),
    target,
    connectTimeoutMs: values["connect-timeout"],
    sendProxy: values["send-proxy"],
    udpSessionTimeoutMs: values["udp-session-timeout"],
  };
  if (udp && maxConnections !== undefined) {
    options.maxConnections = maxConnections;
  }
  if (values["to-tls"]) {
    options.targetTls = {
      serverName: values.servername,
      insecure: values.insecure,
      // A missing or unreadable file is a runtime failure (exit 1).
      caCerts: values.ca === undefined ? undefined : [readCaFile(values.ca)],
    };
  }
  return options;
}

if (import.meta.main) {
  await runMain(async () => {
    const options = optionsFromArgs(Deno.args);
    if (options.targetTls?.insecure && !workerPlace()) {
      console.error(
        "warning: --insecure: TARGET's certificate is not verified; anyone on the path to it can read and change the forwarded connections",
      );
    }
    await runServers([{ server: serveForward(options) }]);
  });
}
