/**
 * The command-line conventions every script keeps: strict flags through
 * `parseArgs` from `node:util`, `--help` on stdout with exit 0, one `error:`
 * line and exit 2 for a usage error, one `error:` line and exit 1 for a
 * runtime failure, never a stack trace for an expected failure.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { AccessList, CidrError } from "./access.ts";
import { EndpointError } from "./endpoint.ts";
import { flushStderrLog, stderrLog } from "./log.ts";
import type { KeepAliveConfig } from "./keepalive.ts";
import {
  DEFAULT_PER_SOURCE,
  listeningLine,
  type Server,
  type ServerOptions,
} from "./server.ts";
import { readTlsFiles } from "./tls.ts";
import { workerCount, workerInit } from "./workers.ts";

/**
 * The command line is wrong: the script prints `error: MESSAGE` and exits 2.
 *
 * @example
 * ```ts
 * import { UsageError } from "./cli.ts";
 *
 * const error = new UsageError("missing ADDRESS");
 * if (error.name !== "UsageError") throw new Error("wrong name");
 * ```
 */
export class UsageError extends Error {
  /** Builds the error; `message` says what was expected. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * `--help` was given: {@linkcode runMain} prints `usage` and exits 0.
 *
 * @example
 * ```ts
 * import { HelpRequested, parseCommandLine } from "./cli.ts";
 *
 * try {
 *   parseCommandLine(["--help"], { usage: "usage: x", options: {} });
 *   throw new Error("no help");
 * } catch (error) {
 *   if (!(error instanceof HelpRequested) || error.usage !== "usage: x") throw error;
 * }
 * ```
 */
export class HelpRequested extends Error {
  /** The text to print. */
  readonly usage: string;

  /** Builds the request for `usage`. */
  constructor(usage: string) {
    super("help requested");
    this.name = "HelpRequested";
    this.usage = usage;
  }
}

/** What a script's command line accepts. */
export interface CommandSpec<O extends ParseArgsOptionsConfig> {
  /** The full `--help` text. */
  usage: string;
  /** Flags, as `parseArgs` takes them; `help` is added. */
  options: O;
  /** Fewest positional arguments. Default 0. */
  minPositionals?: number;
  /** Most positional arguments. Default 0. */
  maxPositionals?: number;
}

/**
 * Parses `args` strictly. Throws {@linkcode HelpRequested} for `--help` and
 * {@linkcode UsageError} with a one-line message for anything wrong.
 *
 * @example
 * ```ts
 * import { parseCommandLine } from "./cli.ts";
 *
 * const { values, positionals } = parseCommandLine(["--port", "7", "host"], {
 *   usage: "usage: x [--port P] HOST",
 *   options: { port: { type: "string" } },
 *   minPositionals: 1,
 *   maxPositionals: 1,
 * });
 * if (values.port !== "7" || positionals[0] !== "host") throw new Error("bad parse");
 * ```
 */
export function parseCommandLine<O extends ParseArgsOptionsConfig>(
  args: string[],
  spec: CommandSpec<O>,
): {
  values: ReturnType<typeof parseArgs<{ options: O; strict: true }>>["values"];
  positionals: string[];
} {
  const options = { ...spec.options, help: { type: "boolean" as const } };
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options,
      strict: true,
      allowPositionals: true,
      allowNegative: false,
    });
  } catch (error) {
    throw new UsageError(describeParseError(error as Error));
  }
  if ((parsed.values as { help?: boolean }).help) {
    throw new HelpRequested(spec.usage);
  }
  const { positionals } = parsed;
  const min = spec.minPositionals ?? 0;
  const max = spec.maxPositionals ?? 0;
  if (positionals.length > max) {
    throw new UsageError(
      `unexpected argument '${positionals[max]}' (see --help)`,
    );
  }
  if (positionals.length < min) {
    throw new UsageError(`missing argument (see --help)`);
  }
  // deno-lint-ignore no-explicit-any
  return { values: parsed.values as any, positionals };
}

function describeParseError(error: Error): string {
  const code = (error as { code?: string }).code;
  const flag = /'(-[^' ]+)/.exec(error.message)?.[1] ?? "";
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option '${flag}' (see --help)`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (/argument missing/.test(error.message)) {
        return `option '${flag}' needs a value`;
      }
      if (/ambiguous/.test(error.message)) {
        return `option '${flag}' needs a value (write ${flag}=-X for one starting with '-')`;
      }
      return `option '${flag}' takes no value`;
    default:
      return error.message.split("\n")[0];
  }
}

/**
 * Parses an integer flag value in `[min, max]`, or throws
 * {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { integerFlag } from "./cli.ts";
 *
 * if (integerFlag("--retries", "3", 0, 100) !== 3) throw new Error("bad value");
 * ```
 */
export function integerFlag(
  name: string,
  text: string,
  min: number,
  max: number,
): number {
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected a whole number from ${min} to ${max}`,
    );
  }
  return Number(text);
}

/**
 * Parses a duration in seconds (fractions allowed, as `0.25`) into
 * milliseconds, or throws {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { secondsFlag } from "./cli.ts";
 *
 * if (secondsFlag("--timeout", "1.5") !== 1500) throw new Error("bad value");
 * ```
 */
export function secondsFlag(name: string, text: string): number {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || Number(text) > 86_400 * 365) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected a number of seconds`,
    );
  }
  return Math.round(Number(text) * 1000);
}

/**
 * Parses a keepalive flag value: `on` (keepalive with the system's timing),
 * `off` (`undefined`), or `IDLE[,INTERVAL[,COUNT]]` (whole seconds, then a
 * number of probes; an absent part keeps the system's value). Throws
 * {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { keepAliveFlag } from "./cli.ts";
 *
 * const config = keepAliveFlag("--keepalive", "1,1,3");
 * if (config?.idle !== 1 || config.interval !== 1 || config.count !== 3) {
 *   throw new Error(JSON.stringify(config));
 * }
 * if (keepAliveFlag("--keepalive", "off") !== undefined) throw new Error("on");
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
  const config: KeepAliveConfig = {
    idle: integerFlag(`${name} idle`, idle, 1, 32767),
  };
  if (interval !== undefined) {
    config.interval = integerFlag(`${name} interval`, interval, 1, 32767);
  }
  if (count !== undefined) {
    config.count = integerFlag(`${name} count`, count, 1, 127);
  }
  return config;
}

/**
 * Turns an expected failure into the one line a user sees (without the
 * `error: ` prefix): what happened and, where it helps, what to do.
 *
 * @example
 * ```ts
 * import { describeError } from "./cli.ts";
 *
 * const line = describeError(new Deno.errors.ConnectionRefused("refused"));
 * if (!line.includes("refused")) throw new Error(line);
 * ```
 */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const first = (error.message || error.name).split("\n")[0];
  return first.replace(/^error: /, "");
}

/**
 * Runs a script's body and turns its outcome into an exit code: the number
 * it returns (default 0); {@linkcode HelpRequested} prints usage and exits
 * 0; {@linkcode UsageError} or a bad endpoint prints `error: ...` and exits
 * 2; any other failure prints `error: ...` and exits 1.
 *
 * @example
 * ```ts ignore
 * import { runMain } from "./cli.ts";
 *
 * await runMain(async () => {
 *   console.log("hello");
 * });
 * ```
 */
export async function runMain(
  body: () => Promise<number | void>,
): Promise<never> {
  let code: number;
  try {
    code = (await body()) ?? 0;
  } catch (error) {
    await flushStderrLog();
    if (error instanceof HelpRequested) {
      await writeText(Deno.stdout, error.usage.trimEnd() + "\n");
      Deno.exit(0);
    }
    const usage = error instanceof UsageError ||
      error instanceof EndpointError;
    console.error(`error: ${describeError(error)}`);
    Deno.exit(usage ? 2 : 1);
  }
  await flushStderrLog();
  Deno.exit(code);
}

async function writeText(
  file: { write(p: Uint8Array): Promise<number> },
  text: string,
): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let offset = 0; offset < bytes.byteLength;) {
    offset += await file.write(bytes.subarray(offset));
  }
}

/**
 * Runs servers as a script does: waits until all are bound, logs one
 * `listening on` line each (labelled when there are several), shuts all
 * down gracefully on SIGINT or SIGTERM, and resolves once all are
 * finished.
 *
 * @example
 * ```ts ignore
 * import { runServers } from "./cli.ts";
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
  if (workerInit) {
    // A worker of a `--workers` group: the main thread logs and handles
    // signals; shutdown comes as a message (lib/workers.ts).
    await Promise.all(servers.map(({ server }) => server.finished));
    return;
  }
  const labelled = servers.length > 1;
  for (const { server, label } of servers) {
    log(listeningLine(server.addr, labelled ? label : undefined));
  }
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  try {
    await Promise.all(servers.map(({ server }) => server.finished));
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
  }
}

/**
 * The flags every server takes, for {@linkcode parseCommandLine}; spread
 * them into a script's own options. {@linkcode serverOptionsFromFlags} turns
 * the parsed values into {@linkcode ServerOptions}.
 *
 * @example
 * ```ts
 * import { parseCommandLine, SERVER_FLAGS, serverOptionsFromFlags } from "./cli.ts";
 *
 * const { values } = parseCommandLine(["--port", "0", "--udp"], {
 *   usage: "",
 *   options: { ...SERVER_FLAGS },
 * });
 * const options = serverOptionsFromFlags(values);
 * if (options.transport !== "udp" || options.port !== 0) throw new Error("bad options");
 * ```
 */
export const SERVER_FLAGS = {
  hostname: { type: "string" },
  port: { type: "string" },
  udp: { type: "boolean" },
  unix: { type: "string" },
  unixpacket: { type: "string" },
  mode: { type: "string" },
  "max-connections": { type: "string" },
  "per-source": { type: "string" },
  "idle-timeout": { type: "string" },
  grace: { type: "string" },
  "allow-low-ports": { type: "boolean" },
  "udp-rate": { type: "string" },
  allow: { type: "string", multiple: true },
  deny: { type: "string", multiple: true },
  tls: { type: "boolean" },
  cert: { type: "string" },
  key: { type: "string" },
  keepalive: { type: "string" },
  workers: { type: "string" },
} as const;

/** Parsed values of {@linkcode SERVER_FLAGS}. */
export interface ServerFlagValues {
  /** `--hostname H` */
  hostname?: string;
  /** `--port P` */
  port?: string;
  /** `--udp` */
  udp?: boolean;
  /** `--unix PATH` */
  unix?: string;
  /** `--unixpacket PATH` */
  unixpacket?: string;
  /** `--mode OCTAL` (socket file mode for `--unix`, `--unixpacket`) */
  mode?: string;
  /** `--max-connections N` */
  "max-connections"?: string;
  /** `--per-source N` */
  "per-source"?: string;
  /** `--idle-timeout SECONDS` */
  "idle-timeout"?: string;
  /** `--grace SECONDS` */
  grace?: string;
  /** `--allow-low-ports` */
  "allow-low-ports"?: boolean;
  /** `--udp-rate N` */
  "udp-rate"?: string;
  /** `--allow CIDR`, repeatable */
  allow?: string[];
  /** `--deny CIDR`, repeatable */
  deny?: string[];
  /** `--tls` */
  tls?: boolean;
  /** `--cert FILE` */
  cert?: string;
  /** `--key FILE` */
  key?: string;
  /** `--keepalive on|off|IDLE[,INTERVAL[,COUNT]]` */
  keepalive?: string;
  /** `--workers N|auto` */
  workers?: string;
}

/**
 * The `--help` lines for {@linkcode SERVER_FLAGS}, with `defaultPort` and
 * `defaultHostname` filled in.
 *
 * @example
 * ```ts
 * import { serverFlagsHelp } from "./cli.ts";
 *
 * if (!serverFlagsHelp(7).includes("--port P")) throw new Error("no --port");
 * ```
 */
export function serverFlagsHelp(
  defaultPort: number,
  defaultHostname = "0.0.0.0",
): string {
  return `  --hostname H           address to bind (default ${defaultHostname}; :: for IPv6)
  --port P               port (default ${defaultPort}; 0 picks a free one)
  --udp                  serve UDP instead of TCP (needs --unstable-net)
  --unix PATH            serve a Unix stream socket at PATH
  --unixpacket PATH      serve a Unix datagram socket at PATH (needs --unstable-net)
  --mode OCTAL           --unix/--unixpacket: socket file mode (default 0600: owner only)
  --max-connections N    most clients at once; more are closed at once (default 4096)
  --per-source N         TCP: most clients at once from one address, an IPv6 /64 counting
                         as one; more are closed at once (default ${DEFAULT_PER_SOURCE}; 0: no limit)
  --idle-timeout S       close a connection idle for S seconds (default 0: never)
  --grace S              on SIGINT/SIGTERM, wait up to S seconds for clients (default
                         10), then close the rest
  --allow-low-ports      UDP: answer source ports below 1024 (off: loop protection)
  --udp-rate N           UDP: replies per second to one source (default 100; 0: no limit)
  --allow CIDR           serve only peers in CIDR (repeatable; 10.0.0.0/8, ::1, fd00::/8);
                         an IPv4-mapped IPv6 peer matches IPv4 blocks
  --deny CIDR            refuse peers in CIDR (repeatable; checked before --allow)
  --tls                  TCP: serve TLS, with --cert and --key
  --cert FILE            TLS: PEM certificate chain (needs --allow-read=FILE)
  --key FILE             TLS: PEM private key (needs --allow-read=FILE)
  --keepalive K          TCP keepalive: on (system timing), or IDLE[,INTERVAL[,COUNT]]
                         in seconds and probes, e.g. 60,10,5 (needs --allow-ffi); a peer
                         that stops answering is logged dead and closed (default off)
  --workers N            TCP: serve on N threads sharing the port (SO_REUSEPORT, Linux);
                         auto: one per CPU (needs --allow-read=SCRIPT; default 1)
  --help                 print this help and exit`;
}

/**
 * Some of {@linkcode SERVER_FLAGS}, for a server that takes only those (a
 * TCP-only server has no `--udp`); an unknown flag is then a usage error.
 *
 * @example
 * ```ts
 * import { pickServerFlags } from "./cli.ts";
 *
 * const flags = pickServerFlags("hostname", "port");
 * if (Object.keys(flags).join() !== "hostname,port") throw new Error("wrong flags");
 * ```
 */
export function pickServerFlags<K extends keyof typeof SERVER_FLAGS>(
  ...names: K[]
): Pick<typeof SERVER_FLAGS, K> {
  const picked: Partial<Pick<typeof SERVER_FLAGS, K>> = {};
  for (const name of names) picked[name] = SERVER_FLAGS[name];
  return picked as Pick<typeof SERVER_FLAGS, K>;
}

/**
 * The lines of {@linkcode serverFlagsHelp} for the flags in `names` only
 * (and `--help`), for a server built with {@linkcode pickServerFlags}.
 *
 * @example
 * ```ts
 * import { serverFlagsHelpFor } from "./cli.ts";
 *
 * const help = serverFlagsHelpFor(["port"], 3500);
 * if (!help.includes("--port P") || help.includes("--udp")) throw new Error(help);
 * ```
 */
export function serverFlagsHelpFor(
  names: readonly string[],
  defaultPort: number,
  defaultHostname = "0.0.0.0",
): string {
  const wanted = new Set([...names, "help"]);
  let keep = false;
  return serverFlagsHelp(defaultPort, defaultHostname).split("\n").filter(
    (line) => {
      const flag = /^ {2}--([a-z-]+)/.exec(line);
      if (flag) keep = wanted.has(flag[1]);
      return keep;
    },
  ).join("\n");
}

/**
 * Turns parsed {@linkcode SERVER_FLAGS} into {@linkcode ServerOptions};
 * throws {@linkcode UsageError} naming a bad value or a clash of transports.
 * With `--tls` it reads the `--cert` and `--key` files (a missing or
 * unreadable one throws `TlsFileError`: a runtime failure, exit 1).
 * `--allow`/`--deny` are refused with `--unix`/`--unixpacket`: a Unix peer
 * has no address to match.
 *
 * @example
 * ```ts
 * import { serverOptionsFromFlags } from "./cli.ts";
 *
 * const options = serverOptionsFromFlags({ unix: "/tmp/echo.sock", "idle-timeout": "30" });
 * if (options.transport !== "unix" || options.idleTimeoutMs !== 30000) {
 *   throw new Error("bad options");
 * }
 * ```
 */
export function serverOptionsFromFlags(
  values: ServerFlagValues,
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
    if (path === "" || path.includes("\0")) {
      throw new UsageError(`invalid socket path '${path}' for --${kind}`);
    }
    if (values.hostname !== undefined || values.port !== undefined) {
      throw new UsageError(`--${kind} takes no --hostname or --port`);
    }
    options.transport = kind;
    options.path = path;
  }
  if (values.mode !== undefined) {
    if (options.path === undefined) {
      throw new UsageError(`--mode needs --unix or --unixpacket`);
    }
    if (!/^0?[0-7]{3}$/.test(values.mode)) {
      throw new UsageError(
        `invalid value '${values.mode}' for --mode: expected octal permission bits such as 0600 or 0660`,
      );
    }
    options.mode = parseInt(values.mode, 8);
  }
  if (values.hostname !== undefined) {
    if (values.hostname === "" || /[\s\/\[\]]/.test(values.hostname)) {
      throw new UsageError(`invalid value '${values.hostname}' for --hostname`);
    }
    options.hostname = values.hostname;
  }
  if (values.port !== undefined) {
    options.port = integerFlag("--port", values.port, 0, 65535);
  }
  if (values["max-connections"] !== undefined) {
    options.maxConnections = integerFlag(
      "--max-connections",
      values["max-connections"],
      1,
      1_000_000,
    );
  }
  if (values["per-source"] !== undefined) {
    if (options.transport !== "tcp") {
      throw new UsageError("--per-source applies to TCP only");
    }
    options.perSource = integerFlag(
      "--per-source",
      values["per-source"],
      0,
      1_000_000,
    );
  }
  if (values["idle-timeout"] !== undefined) {
    options.idleTimeoutMs = secondsFlag(
      "--idle-timeout",
      values["idle-timeout"],
    );
  }
  if (values.grace !== undefined) {
    options.gracePeriodMs = secondsFlag("--grace", values.grace);
  }
  if (values.keepalive !== undefined) {
    if (options.transport !== "tcp") {
      throw new UsageError("--keepalive applies to TCP only");
    }
    const keepAlive = keepAliveFlag("--keepalive", values.keepalive);
    if (keepAlive) options.keepAlive = keepAlive;
  }
  if (values.workers !== undefined) {
    if (options.transport !== "tcp") {
      throw new UsageError("--workers applies to TCP only");
    }
    try {
      options.workers = workerCount(values.workers);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  if (values["allow-low-ports"]) options.allowLowPorts = true;
  if (values["udp-rate"] !== undefined) {
    options.udpRatePerSecond = integerFlag(
      "--udp-rate",
      values["udp-rate"],
      0,
      1_000_000,
    );
  }
  accessFromFlags(values, options);
  tlsFromFlags(values, options);
  return options;
}

function accessFromFlags(values: ServerFlagValues, options: ServerOptions) {
  const allow = values.allow ?? [];
  const deny = values.deny ?? [];
  if (allow.length === 0 && deny.length === 0) return;
  if (options.transport === "unix" || options.transport === "unixpacket") {
    throw new UsageError(
      `--allow and --deny match IP addresses; a --${options.transport} peer has none (use the socket file's permissions)`,
    );
  }
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

function tlsFromFlags(values: ServerFlagValues, options: ServerOptions) {
  if (!values.tls) {
    for (const flag of ["cert", "key"] as const) {
      if (values[flag] !== undefined) {
        throw new UsageError(`--${flag} needs --tls`);
      }
    }
    return;
  }
  if (options.transport !== "tcp") {
    throw new UsageError(
      `--tls cannot be used with --${options.transport}: TLS is served over TCP only`,
    );
  }
  if (!values.cert || !values.key) {
    throw new UsageError("--tls needs --cert FILE and --key FILE");
  }
  options.tls = readTlsFiles(values.cert, values.key);
}

/**
 * The common client flags `--port P` (1 to 65535) and `--timeout SECONDS`,
 * with the client's own defaults for what is absent; throws
 * {@linkcode UsageError} naming a bad value (and a zero timeout, unless
 * `zeroTimeout` says 0 means "wait forever").
 *
 * @example
 * ```ts
 * import { clientPortAndTimeout } from "./cli.ts";
 *
 * const { port, timeoutMs } = clientPortAndTimeout({ timeout: "2" }, {
 *   port: 13,
 *   timeoutMs: 10_000,
 * });
 * if (port !== 13 || timeoutMs !== 2000) throw new Error("bad values");
 * ```
 */
export function clientPortAndTimeout(
  values: { port?: string; timeout?: string },
  defaults: { port: number; timeoutMs: number; zeroTimeout?: boolean },
): { port: number; timeoutMs: number } {
  const port = values.port === undefined
    ? defaults.port
    : integerFlag("--port", values.port, 1, 65535);
  const timeoutMs = values.timeout === undefined
    ? defaults.timeoutMs
    : secondsFlag("--timeout", values.timeout);
  if (timeoutMs === 0 && !defaults.zeroTimeout) {
    throw new UsageError("--timeout must be more than 0 seconds");
  }
  return { port, timeoutMs };
}
