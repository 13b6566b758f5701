/**
 * The servers' side of the command line: the flags every server takes, in
 * one table ({@linkcode serverFlags}) with their help lines and defaults
 * (pick some with {@linkcode pickFlags} from `cli.ts`);
 * {@linkcode serverOptionsFromFlags} to turn them into
 * {@linkcode ServerOptions}; {@linkcode runServers} to run servers as a
 * script does (one `listening on` line each, graceful stop on SIGINT and
 * SIGTERM).
 *
 * @module
 */

import { AccessList, CidrError } from "./access.ts";
import {
  type Flag,
  flag,
  type FlagTable,
  type FlagValues,
  integerFlag,
  parseCommandLine,
  positiveSecondsFlag,
  UsageError,
} from "./cli.ts";
import { type Endpoint, parseEndpoint, type Transport } from "./endpoint.ts";
import { KEEPALIVE_LIMITS, type KeepAliveConfig } from "./keepalive.ts";
import { stderrLog } from "./log.ts";
import { runMain } from "./main.ts";
import {
  DEFAULT_MAX_PROXY_HEADER_BYTES,
  DEFAULT_PROXY_HEADER_TIMEOUT_MS,
} from "./proxy_protocol.ts";
import { listeningLine } from "./server.ts";
import { dumpStatsOnSignal } from "./stats_dump.ts";
import {
  DEFAULT_GRACE_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_PER_SOURCE,
  DEFAULT_UDP_RATE,
  type Server,
  type ServerOptions,
} from "./server_options.ts";
import { MAX_SMALL_FILE_BYTES } from "./files.ts";
import { formatBytes } from "./units.ts";
import { LOOP_ROUNDS, LOOP_THINK_MS } from "./datagram_guard.ts";
import {
  INETD_BASE,
  SIMPLE_SERVICE_PORTS,
  TOOLKIT_UDP_PORTS,
} from "./simple.ts";
import { readCaFile, readTlsFiles, type TlsServerFiles } from "./tls.ts";
import { TLS_ENGINE_CHOICES, type TlsEngineChoice } from "./tls_engine.ts";
import { DEFAULT_UNIX_SOCKET_MODE } from "./unix.ts";
import { workerCount, workerPlace } from "./workers.ts";

/**
 * Parses a keepalive flag value: `on` (keepalive with the system's timing),
 * `off` (`undefined`), or `IDLE[,INTERVAL[,COUNT]]` (whole seconds, then a
 * number of probes; an absent part keeps the system's value). Throws
 * {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { keepAliveFlag } from "./server_cli.ts";
 *
 * assertEquals(keepAliveFlag("--keepalive", "1,1,3"), { idle: 1, interval: 1, count: 3 });
 * assertEquals(keepAliveFlag("--keepalive", "off"), undefined);
 * ```
 */
export function keepAliveFlag(
  name: string,
  text: string,
): KeepAliveConfig | undefined {
  if (text === "off") return undefined;
  if (text === "on") return {};
  const parts = text.split(",");
  if (parts.length > 3 || parts.some((part) => part === "")) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected on, off or IDLE[,INTERVAL[,COUNT]]`,
    );
  }
  const [idle, interval, count] = parts;
  const config: KeepAliveConfig = {};
  for (
    const [key, part] of [["idle", idle], ["interval", interval], [
      "count",
      count,
    ]] as const
  ) {
    if (part === undefined) continue;
    const { min, max } = KEEPALIVE_LIMITS[key];
    config[key] = integerFlag(`${name} ${key}`, part, min, max);
  }
  return config;
}

/** A server flag: a {@linkcode Flag} and the transports it means something for. */
export type ServerFlag<T, D extends boolean> = Flag<T, D> & {
  /** Given with another transport, the flag is a usage error. */
  readonly transports: readonly Transport[];
};

const ALL: readonly Transport[] = ["tcp", "udp", "unix", "unixpacket"];
const TCP: readonly Transport[] = ["tcp"];
const UDP: readonly Transport[] = ["udp"];
const IP: readonly Transport[] = ["tcp", "udp"];
const STREAM: readonly Transport[] = ["tcp", "unix"];
const DATAGRAM: readonly Transport[] = ["udp", "unixpacket"];
const UNIX: readonly Transport[] = ["unix", "unixpacket"];

function on<T, D extends boolean>(
  transports: readonly Transport[],
  spec: Flag<T, D>,
): ServerFlag<T, D> {
  return { ...spec, transports };
}

/** `0.0.0.0; :: for IPv6`, unless the default already names IPv6. */
function ipv6Hint(hostname: string): string {
  return hostname.includes(":") ? hostname : `${hostname}; :: for IPv6`;
}

function socketPath(text: string, name: string): string {
  if (text === "" || text.includes("\0")) {
    throw new UsageError(`invalid socket path '${text}' for ${name}`);
  }
  return text;
}

/** `--stats ADDR`: a TCP address or a Unix socket path. */
function statsAddress(text: string, name: string): Endpoint {
  let endpoint: Endpoint | undefined;
  try {
    endpoint = parseEndpoint(text);
  } catch {
    // Said below.
  }
  if (
    !endpoint ||
    (endpoint.transport !== "tcp" && endpoint.transport !== "unix")
  ) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected HOST:PORT or unix:PATH`,
    );
  }
  return endpoint;
}

function hostnameValue(text: string, name: string): string {
  if (text === "" || /[\s\/\[\]]/.test(text)) {
    throw new UsageError(`invalid value '${text}' for ${name}`);
  }
  return text;
}

function modeValue(text: string, name: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected octal permission bits such as 0600 or 0660`,
    );
  }
  return parseInt(text, 8);
}

function tlsEngineValue(text: string, name: string): TlsEngineChoice {
  const choice = TLS_ENGINE_CHOICES.find((choice) => choice === text);
  if (choice) return choice;
  throw new UsageError(
    `invalid value '${text}' for ${name}: expected ${
      TLS_ENGINE_CHOICES.join(", ")
    }`,
  );
}

function clientCertMode(text: string, name: string): "required" | "optional" {
  if (text !== "required" && text !== "optional") {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected required or optional`,
    );
  }
  return text;
}

function subjectPattern(text: string, name: string): RegExp {
  try {
    return new RegExp(text);
  } catch (error) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: ${(error as Error).message}`,
    );
  }
}

function workersValue(text: string): number {
  try {
    return workerCount(text);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** The table {@linkcode serverFlags} returns: a flag, its value's type. */
export type ServerFlags = {
  /** `--hostname H` */
  readonly hostname: ServerFlag<string, false>;
  /** `--port P` */
  readonly port: ServerFlag<number, false>;
  /** `--udp` */
  readonly udp: ServerFlag<boolean, true>;
  /** `--unix PATH` */
  readonly unix: ServerFlag<string, false>;
  /** `--unixpacket PATH` */
  readonly unixpacket: ServerFlag<string, false>;
  /** `--mode OCTAL`: the permission bits */
  readonly mode: ServerFlag<number, false>;
  /** `--max-connections N` */
  readonly "max-connections": ServerFlag<number, false>;
  /** `--per-source N` */
  readonly "per-source": ServerFlag<number, false>;
  /** `--idle-timeout S`, in milliseconds */
  readonly "idle-timeout": ServerFlag<number, false>;
  /** `--grace S`, in milliseconds */
  readonly grace: ServerFlag<number, false>;
  /** `--allow-low-ports` */
  readonly "allow-low-ports": ServerFlag<boolean, true>;
  /** `--udp-rate N` */
  readonly "udp-rate": ServerFlag<number, false>;
  /** `--allow CIDR`, repeatable */
  readonly allow: ServerFlag<string[], false>;
  /** `--deny CIDR`, repeatable */
  readonly deny: ServerFlag<string[], false>;
  /** `--tls` */
  readonly tls: ServerFlag<boolean, true>;
  /** `--cert FILE` */
  readonly cert: ServerFlag<string, false>;
  /** `--key FILE` */
  readonly key: ServerFlag<string, false>;
  /** `--client-ca FILE` */
  readonly "client-ca": ServerFlag<string, false>;
  /** `--client-cert required|optional` */
  readonly "client-cert": ServerFlag<"required" | "optional", false>;
  /** `--client-subject REGEX` */
  readonly "client-subject": ServerFlag<RegExp, false>;
  /** `--accept-proxy` */
  readonly "accept-proxy": ServerFlag<boolean, true>;
  /** `--proxy-timeout S`, in milliseconds */
  readonly "proxy-timeout": ServerFlag<number, false>;
  /** `--keepalive K`; `off` is `undefined` */
  readonly keepalive: ServerFlag<KeepAliveConfig | undefined, false>;
  /** `--stats ADDR` */
  readonly stats: ServerFlag<Endpoint, false>;
  /** `--stats-allow CIDR`, repeatable */
  readonly "stats-allow": ServerFlag<string[], false>;
  /** `--workers N|auto` */
  readonly workers: ServerFlag<number, false>;
  /** `--tls-engine auto|native|node` */
  readonly "tls-engine": ServerFlag<TlsEngineChoice, false>;
};

/**
 * The flags of {@linkcode serverFlags} that do not depend on the server:
 * all but `--hostname` and `--port`, in the order `--help` shows them.
 */
const SHARED_SERVER_FLAGS = {
  udp: on(
    ALL,
    flag.boolean("serve UDP instead of TCP (needs --unstable-net)"),
  ),
  unix: on(
    ALL,
    flag.custom(
      "PATH",
      "serve a Unix stream socket at PATH; on exit the file is\nremoved only if it is still this server's socket",
      socketPath,
    ),
  ),
  unixpacket: on(
    ALL,
    flag.custom(
      "PATH",
      "serve a Unix datagram socket at PATH (needs --unstable-net)",
      socketPath,
    ),
  ),
  mode: on(
    UNIX,
    flag.custom(
      "OCTAL",
      "the mode of the Unix socket file it creates {default}",
      modeValue,
      {
        shown: `0${DEFAULT_UNIX_SOCKET_MODE.toString(8)}: owner only`,
      },
    ),
  ),
  "max-connections": on(
    STREAM,
    flag.integer(
      "N",
      "most clients at once; more are closed at once",
      { min: 1, max: 1_000_000, shown: String(DEFAULT_MAX_CONNECTIONS) },
    ),
  ),
  "per-source": on(
    TCP,
    flag.integer(
      "N",
      "TCP (--unix: with --accept-proxy): most clients at once from\none address, an IPv6 /64 counting as one; more are closed at\nonce {default}",
      {
        min: 0,
        max: 1_000_000,
        shown: `${DEFAULT_PER_SOURCE}; 0: no limit`,
      },
    ),
  ),
  "idle-timeout": on(
    STREAM,
    flag.seconds("S", "close a connection idle for S seconds", {
      shown: "0: never",
    }),
  ),
  grace: on(
    ALL,
    flag.seconds(
      "S",
      "on SIGINT/SIGTERM, wait up to S seconds for clients {default},\nthen close the rest",
      { shown: String(DEFAULT_GRACE_MS / 1000) },
    ),
  ),
  "allow-low-ports": on(
    UDP,
    flag.boolean(
      "UDP: answer source ports below 1024 (off: loop protection)",
    ),
  ),
  "udp-rate": on(
    DATAGRAM,
    flag.integer(
      "N",
      "UDP: replies per second to one source address, whatever\nits port (an IPv6 /64 counts as one) {default}; 0 still\nkeeps the loop guard (see below)",
      {
        min: 0,
        max: 1_000_000,
        shown: `${DEFAULT_UDP_RATE}; 0: no limit`,
      },
    ),
  ),
  allow: on(
    IP,
    flag.list(
      "CIDR",
      "serve only peers in CIDR (repeatable; 10.0.0.0/8, ::1, fd00::/8);\nan IPv4-mapped IPv6 peer matches IPv4 blocks; a Unix socket's\npeers have none, but the clients named by PROXY headers do\n(a client without an address is then refused)",
    ),
  ),
  deny: on(
    IP,
    flag.list(
      "CIDR",
      "refuse peers in CIDR (repeatable; checked before --allow)",
    ),
  ),
  tls: on(
    TCP,
    flag.boolean(
      "TCP: serve TLS, with --cert and --key; SIGHUP reads them\n(and --client-ca) again for the handshakes to come",
    ),
  ),
  cert: on(
    TCP,
    flag.string(
      "FILE",
      "TLS: PEM certificate chain (needs --allow-read=FILE)",
    ),
  ),
  key: on(
    TCP,
    flag.string(
      "FILE",
      `TLS: PEM private key (needs --allow-read=FILE;\na regular file of at most ${
        formatBytes(MAX_SMALL_FILE_BYTES)
      })`,
    ),
  ),
  "client-ca": on(
    TCP,
    flag.string(
      "FILE",
      "TLS: ask each client for a certificate and refuse one\nthat does not chain to the PEM CAs in FILE (needs\n--allow-read=FILE); the log names its subject, and\nexec.ts's program gets it as SSL_CLIENT_S_DN",
    ),
  ),
  "client-cert": on(
    TCP,
    flag.custom(
      "MODE",
      "--client-ca: required (refuse a client without one) or\noptional (let it in: SSL_CLIENT_VERIFY=NONE) {default}",
      clientCertMode,
      { shown: "required" },
    ),
  ),
  "client-subject": on(
    TCP,
    flag.custom(
      "REGEX",
      "--client-ca: refuse a certificate whose subject, as\nstunnel writes it (C=DE, O=Example, CN=alice), does not\nmatch REGEX (--allow and --deny match addresses only)",
      subjectPattern,
    ),
  ),
  "accept-proxy": on(
    STREAM,
    flag.boolean(
      `read a PROXY protocol header (v1 or v2, at most ${
        formatBytes(DEFAULT_MAX_PROXY_HEADER_BYTES)
      }) from\neach client first, as haproxy's send-proxy writes; logs,\naccess lists and per-source limits then use the client\naddress it carries (listen where only your proxies reach)`,
    ),
  ),
  "proxy-timeout": on(
    STREAM,
    flag.custom(
      "S",
      "--accept-proxy: close a client whose header has not\ncome within S seconds {default}",
      positiveSecondsFlag,
      { shown: String(DEFAULT_PROXY_HEADER_TIMEOUT_MS / 1000) },
    ),
  ),
  keepalive: on(
    TCP,
    flag.custom(
      "K",
      "TCP keepalive: on (system timing), or IDLE[,INTERVAL[,COUNT]]\nin seconds and probes, e.g. 60,10,5 (needs --allow-ffi); a peer\nthat stops answering is logged dead and closed {default}",
      (text, name) => keepAliveFlag(name, text),
      { shown: "off" },
    ),
  ),
  stats: on(
    ALL,
    flag.custom(
      "ADDR",
      "serve stats at ADDR (HOST:PORT, or unix:PATH): Prometheus\n/metrics, /stats.json and a live page at /; needs\n--allow-net=HOST:PORT (unix: --allow-net=unix:PATH\n--allow-read=PATH --allow-write=PATH); with --allow-ffi\nfor libc, open descriptors too; SIGUSR2 logs the same\n(never SIGUSR1: Deno opens its debugger on it) {default}",
      statsAddress,
      { shown: "off" },
    ),
  ),
  "stats-allow": on(
    ALL,
    flag.list(
      "CIDR",
      "--stats: who may read them (repeatable); without it,\nloopback clients only",
    ),
  ),
  workers: on(
    TCP,
    flag.custom(
      "N",
      "TCP: serve on N threads sharing the port {default};\nauto: one per CPU (SO_REUSEPORT, Linux; needs --allow-read=SCRIPT)",
      workersValue,
      { shown: "1" },
    ),
  ),
  "tls-engine": on(
    TCP,
    flag.custom(
      "E",
      "--tls: auto proves the runtime's TLS engine before the first\nconnection and falls back to node:tls (one log line) when it\nfails; native insists on it (a failed proof exits 1); node\nalways uses node:tls {default}",
      tlsEngineValue,
      { shown: "auto" },
    ),
  ),
} as const;

/**
 * The server flags of a TCP-only server (the seed's hello and accept
 * servers): where to listen, the limits, the access lists, TLS and the
 * PROXY header; no other transport, no workers, no keepalive. Give them
 * to `pickFlags` with {@linkcode serverFlags}' table.
 *
 * @example
 * ```ts
 * import { assert } from "@std/assert";
 * import { pickFlags } from "./cli.ts";
 * import { serverFlags, TCP_SERVER_FLAG_NAMES } from "./server_cli.ts";
 *
 * const flags = pickFlags(serverFlags({ port: 3500 }), ...TCP_SERVER_FLAG_NAMES);
 * assert("accept-proxy" in flags && !("udp" in flags));
 * ```
 */
export const TCP_SERVER_FLAG_NAMES = [
  "hostname",
  "port",
  "stats",
  "stats-allow",
  "max-connections",
  "idle-timeout",
  "grace",
  "allow",
  "deny",
  "tls",
  "cert",
  "key",
  "client-ca",
  "client-cert",
  "client-subject",
  "accept-proxy",
  "proxy-timeout",
  "tls-engine",
] as const;

/**
 * The flags every server takes, with `port` and `hostname` as the server's
 * own defaults; each flag's help line and default come from here (the
 * defaults from the constants the server applies). A server that takes
 * only some picks them with `pickFlags`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseCommandLine } from "./cli.ts";
 * import { serverFlags, serverOptionsFromFlags } from "./server_cli.ts";
 *
 * const flags = serverFlags({ port: 7 });
 * const { values } = parseCommandLine(["--port", "0", "--udp"], { usage: "", flags });
 * const options = serverOptionsFromFlags(values);
 * assertEquals([options.transport, options.port], ["udp", 0]);
 * ```
 */
export function serverFlags(
  defaults: { port: number; hostname?: string },
): ServerFlags {
  return {
    hostname: on(
      IP,
      flag.custom("H", "address to bind", hostnameValue, {
        shown: ipv6Hint(defaults.hostname ?? "0.0.0.0"),
      }),
    ),
    port: on(
      IP,
      flag.integer("P", "port", {
        min: 0,
        max: 65535,
        shown: `${defaults.port}; 0 picks a free one`,
      }),
    ),
    ...SHARED_SERVER_FLAGS,
  };
}

/** Parsed values of some of {@linkcode serverFlags}. */
export type ServerFlagValues = Partial<FlagValues<ServerFlags>>;

const TRANSPORT_NAMES: Record<Transport, string> = {
  tcp: "TCP",
  udp: "--udp",
  unix: "--unix",
  unixpacket: "--unixpacket",
};

/**
 * Turns parsed server flags into {@linkcode ServerOptions}; throws
 * {@linkcode UsageError} for a clash of transports or a flag that means
 * nothing for the transport served (`--udp-rate` over TCP,
 * `--idle-timeout` with `--udp`). `serving` names the transports when the
 * script serves several at once (inetd). With `--tls` it reads the
 * `--cert` and `--key` files (a missing or unreadable one throws
 * `TlsFileError`: a runtime failure, exit 1).
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { UsageError } from "./cli.ts";
 * import { serverOptionsFromFlags } from "./server_cli.ts";
 *
 * const options = serverOptionsFromFlags({ unix: "/tmp/echo.sock", "idle-timeout": 30_000 });
 * assertEquals([options.transport, options.idleTimeoutMs], ["unix", 30_000]);
 * assertThrows(() => serverOptionsFromFlags({ "udp-rate": 5 }), UsageError, "--udp-rate");
 * ```
 */
export function serverOptionsFromFlags(
  values: ServerFlagValues,
  serving?: readonly Transport[],
): ServerOptions {
  const transports = [
    values.udp && "--udp",
    values.unix !== undefined && "--unix",
    values.unixpacket !== undefined && "--unixpacket",
  ].filter(Boolean);
  if (transports.length > 1) {
    throw new UsageError(`${transports.join(" and ")} cannot be used together`);
  }
  const options: ServerOptions = { transport: "tcp" };
  if (values.udp) options.transport = "udp";
  for (const kind of ["unix", "unixpacket"] as const) {
    const path = values[kind];
    if (path === undefined) continue;
    if (values.hostname !== undefined || values.port !== undefined) {
      throw new UsageError(`--${kind} takes no --hostname or --port`);
    }
    options.transport = kind;
    options.path = path;
  }
  checkFlagsApply(values, serving ?? [options.transport!]);
  const set = <K extends keyof ServerOptions>(
    key: K,
    value: ServerOptions[K] | undefined,
  ) => {
    if (value !== undefined) options[key] = value;
  };
  set("mode", values.mode);
  set("hostname", values.hostname);
  set("port", values.port);
  set("maxConnections", values["max-connections"]);
  set("perSource", values["per-source"]);
  set("idleTimeoutMs", values["idle-timeout"]);
  set("gracePeriodMs", values.grace);
  set("keepAlive", values.keepalive);
  if (values["accept-proxy"]) options.acceptProxy = true;
  if (values["proxy-timeout"] !== undefined) {
    if (!values["accept-proxy"]) {
      throw new UsageError("--proxy-timeout needs --accept-proxy");
    }
    options.proxyHeaderTimeoutMs = values["proxy-timeout"];
  }
  set("workers", values.workers);
  if (values["allow-low-ports"]) options.allowLowPorts = true;
  set("udpRatePerSecond", values["udp-rate"]);
  statsFromFlags(values, options);
  accessFromFlags(values, options);
  tlsFromFlags(values, options);
  tlsEngineFromFlags(values, options);
  return options;
}

/**
 * The flags that judge a client by its IP address: with `--accept-proxy`
 * they apply to a Unix socket too, whose clients then have the addresses
 * their headers carry.
 */
const JUDGE_ADDRESSES: ReadonlySet<string> = new Set([
  "allow",
  "deny",
  "per-source",
]);

/**
 * The transports a script offers, read from its parsed flags: TCP, and
 * each of `--udp`, `--unix` and `--unixpacket` that its flag table has
 * (`parseCommandLine` gives every flag of the table a key, given or not).
 * Messages name only these: a script never suggests a flag it lacks.
 */
function offeredTransports(values: ServerFlagValues): Transport[] {
  return [
    "tcp",
    ...(["udp", "unix", "unixpacket"] as const).filter((t) =>
      Object.hasOwn(values, t)
    ),
  ];
}

/** Refuses a given flag that means nothing for any transport in `serving`. */
function checkFlagsApply(
  values: ServerFlagValues,
  serving: readonly Transport[],
): void {
  const table = serverFlags({ port: 0 });
  const headerAddresses = values["accept-proxy"] === true &&
    serving.includes("unix");
  const offered = offeredTransports(values);
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || value === false) continue;
    if (Array.isArray(value) && value.length === 0) continue;
    const spec = table[name as keyof ServerFlags];
    if (!spec || spec.transports.some((t) => serving.includes(t))) continue;
    if (headerAddresses && JUDGE_ADDRESSES.has(name)) continue;
    const where = serving.map((t) => TRANSPORT_NAMES[t]).join(" or ");
    const ours = spec.transports.filter((t) => offered.includes(t));
    const names = (ours.length > 0 ? ours : spec.transports).map((t) =>
      TRANSPORT_NAMES[t]
    );
    if (name === "mode") {
      throw new UsageError(`--mode needs ${names.join(" or ")}`);
    }
    const applies = names.join(" and ");
    if (name === "allow" || name === "deny") {
      throw new UsageError(
        `--allow and --deny match IP addresses; a ${where} peer has none (use the socket file's permissions${
          serving.includes("unix")
            ? ", or --accept-proxy to judge the client in a proxy's header"
            : ""
        })`,
      );
    }
    if (name === "tls") {
      throw new UsageError(
        `--tls cannot be used with ${where}: TLS is served over TCP only`,
      );
    }
    throw new UsageError(`--${name} applies to ${applies} only`);
  }
}

function accessFromFlags(values: ServerFlagValues, options: ServerOptions) {
  const allow = values.allow ?? [];
  const deny = values.deny ?? [];
  if (allow.length === 0 && deny.length === 0) return;
  for (const [flag, list] of [["--allow", allow], ["--deny", deny]] as const) {
    for (const text of list) {
      try {
        new AccessList({ allow: [text] });
      } catch (error) {
        if (!(error instanceof CidrError)) throw error;
        throw new UsageError(
          `invalid value '${text}' for ${flag}: ${error.reason}`,
        );
      }
    }
  }
  options.access = new AccessList({ allow, deny });
}

function statsFromFlags(values: ServerFlagValues, options: ServerOptions) {
  const allow = values["stats-allow"] ?? [];
  const listen = values.stats;
  if (listen === undefined) {
    if (allow.length > 0) throw new UsageError("--stats-allow needs --stats");
    return;
  }
  if ((values.workers ?? 1) > 1) {
    // Each thread counts its own: one endpoint would show one thread.
    throw new UsageError("--stats cannot be used with --workers");
  }
  options.stats = { listen };
  if (allow.length === 0) return;
  if (listen.transport === "unix") {
    throw new UsageError(
      "--stats-allow matches IP addresses; a unix: stats socket has none (use its file's permissions)",
    );
  }
  for (const text of allow) {
    try {
      new AccessList({ allow: [text] });
    } catch (error) {
      if (!(error instanceof CidrError)) throw error;
      throw new UsageError(
        `invalid value '${text}' for --stats-allow: ${error.reason}`,
      );
    }
  }
  options.stats.access = new AccessList({ allow });
}

function tlsFromFlags(values: ServerFlagValues, options: ServerOptions) {
  if (!values.tls) {
    for (
      const flag of [
        "cert",
        "key",
        "client-ca",
        "client-cert",
        "client-subject",
      ] as const
    ) {
      if (values[flag] !== undefined) {
        throw new UsageError(`--${flag} needs --tls`);
      }
    }
    return;
  }
  if (!values.cert || !values.key) {
    throw new UsageError("--tls needs --cert FILE and --key FILE");
  }
  const clientCa = values["client-ca"];
  if (clientCa === undefined) {
    for (const flag of ["client-cert", "client-subject"] as const) {
      if (values[flag] !== undefined) {
        throw new UsageError(`--${flag} needs --client-ca FILE`);
      }
    }
  }
  const { cert, key } = values;
  const read = (): TlsServerFiles => ({
    ...readTlsFiles(cert, key),
    ...(clientCa !== undefined && { clientCa: readCaFile(clientCa) }),
  });
  options.tls = read();
  options.readTlsFiles = read;
  if (values["client-cert"]) options.clientCert = values["client-cert"];
  if (values["client-subject"]) {
    options.clientSubject = values["client-subject"];
  }
}

function tlsEngineFromFlags(values: ServerFlagValues, options: ServerOptions) {
  const choice = values["tls-engine"];
  if (choice === undefined) return;
  if (!values.tls) throw new UsageError("--tls-engine needs --tls");
  options.tlsEngine = choice;
}

/**
 * Runs servers as a script does: waits until all are bound, logs one
 * `listening on` line each (labelled when there are several), shuts all
 * down gracefully on SIGINT or SIGTERM, writes the stats to the log on
 * SIGUSR2 (`stats_dump.ts`), and resolves once all are finished.
 *
 * @example
 * ```ts ignore
 * import { runServers } from "./server_cli.ts";
 * import { serveEcho } from "../servers/echo.ts";
 *
 * await runServers([{ server: serveEcho({ port: 0 }) }]);
 * ```
 */
export async function runServers(
  servers: { server: Server; label?: string }[],
  log: (line: string) => void = stderrLog,
): Promise<void> {
  const stop = () => {
    for (const { server } of servers) server.shutdown();
  };
  try {
    await Promise.all(servers.map(({ server }) => server.ready));
  } catch (error) {
    stop();
    throw error;
  }
  if (workerPlace()) {
    // A worker of a `--workers` group: the main thread logs and handles
    // signals; shutdown comes as a message (lib/workers.ts).
    await Promise.all(servers.map(({ server }) => server.finished));
    return;
  }
  const labelled = servers.length > 1;
  for (const { server, label } of servers) {
    log(listeningLine(server.addr, labelled ? label : undefined));
  }
  const stopDumping = dumpStatsOnSignal(log);
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  let reloading = Promise.resolve();
  const reload = () => {
    reloading = reloading.then(async () => {
      const all = servers.map(({ server }) => server);
      if (!(await reloadTlsFiles(all, log))) {
        log("SIGHUP: nothing to reload (no --tls)");
      }
    });
  };
  Deno.addSignalListener("SIGHUP", reload);
  try {
    await Promise.all(servers.map(({ server }) => server.finished));
  } finally {
    stopDumping();
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
    Deno.removeSignalListener("SIGHUP", reload);
  }
}

/**
 * The whole of a script that serves one server: parses `Deno.args` against
 * `flags` (`--help` prints `usage`), starts the server `start` makes of
 * the values, and runs it as {@linkcode runServers} does; exits as
 * `runMain` does (0, 1 on a failure, 2 on a usage error).
 *
 * @example
 * ```ts ignore
 * import { runServerScript, serverFlags, serverOptionsFromFlags } from "./server_cli.ts";
 * import { serveEcho } from "../servers/echo.ts";
 *
 * const FLAGS = serverFlags({ port: 15000 });
 * await runServerScript("usage: echo.ts [options]", FLAGS, (values) =>
 *   serveEcho(serverOptionsFromFlags(values)));
 * ```
 */
export function runServerScript<F extends FlagTable>(
  usage: string,
  flags: F,
  start: (values: FlagValues<F>) => Server | Promise<Server>,
): Promise<never> {
  return runMain(async () => {
    const { values } = parseCommandLine(Deno.args, { usage, flags });
    await runServers([{ server: await start(values) }]);
  });
}

/**
 * What SIGHUP does to TLS: every server reads its files again (see
 * `Server.reloadTls`), one after the other, then one line: `SIGHUP: TLS
 * files reloaded`, or the `error:` line of the first that could not (it
 * and those after it keep theirs); none where nothing serves TLS.
 * Connections in flight go on either way. Resolves to whether a server
 * serves TLS (or failed to reload); never rejects.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { reloadTlsFiles } from "./server_cli.ts";
 *
 * assertEquals(await reloadTlsFiles([], console.error), false);
 * ```
 */
export async function reloadTlsFiles(
  servers: readonly Server[],
  log: (line: string) => void,
): Promise<boolean> {
  try {
    let reloaded = false;
    for (const server of servers) {
      if (await server.reloadTls?.()) reloaded = true;
    }
    if (reloaded) log("SIGHUP: TLS files reloaded");
    return reloaded;
  } catch (error) {
    log(
      `error: ${
        (error as Error).message.split("\n")[0]
      }; keeping the TLS files in use`,
    );
    return true;
  }
}

/**
 * The `--help` paragraph on what a UDP server never answers: low source
 * ports, with `servicePorts` the simple services' and this toolkit's
 * ports too (see `simpleLoopPorts`), more than `--udp-rate`, and what the
 * loop guard drops (see `LoopGuard` in `lib/datagram_guard.ts`), with its
 * figures taken from the constants it runs on.
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { udpGuardHelp } from "./server_cli.ts";
 *
 * assertStringIncludes(udpGuardHelp(), "is always answered");
 * ```
 */
export function udpGuardHelp(
  options: { servicePorts?: boolean } = {},
): string {
  const wellKnown = Object.values(SIMPLE_SERVICE_PORTS).join(", ");
  const ours = Object.values(TOOLKIT_UDP_PORTS).sort((a, b) => a - b)
    .join(", ");
  const ports = options.servicePorts ?? true
    ? ` nor to the simple services' ports (${wellKnown}, the same at inetd's base ${INETD_BASE}) or this toolkit's (${ours}), where another server would answer back;`
    : "";
  return wrapText(
    `UDP: no reply to a source port below 1024 (--allow-low-ports),${ports} at most --udp-rate replies a second to one source address; and, whatever --udp-rate, the loop guard: a source whose datagrams are our replies to it coming back within ${LOOP_THINK_MS} ms (the same bytes; to a service that ignores the request, also a simple service's reply), ${LOOP_ROUNDS} round trips more than --udp-rate allows (${DEFAULT_UDP_RATE}/s when it is lower or 0), is a loop between two servers and is not answered until it slows down. A client repeating the same datagram within --udp-rate is always answered: no datagram is dropped for its bytes alone.`,
  );
}

/** `text` in lines of at most `width` characters, broken at spaces. */
function wrapText(text: string, width = 76): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines.join("\n");
}
