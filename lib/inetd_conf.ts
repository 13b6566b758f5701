/**
 * The classic `inetd.conf` format, read as what this toolkit can honour:
 * {@linkcode parseInetdConf} turns the file's text into
 * {@linkcode InetdService}s, or throws one {@linkcode InetdConfError}
 * naming the file and line of the first thing it cannot do (a `wait`
 * stream service, a `dgram` program, another user, `tcpmux`...), so that
 * a configuration is run whole or not at all. {@linkcode parseServices}
 * reads `/etc/services` for the lines that name their port;
 * {@linkcode loadInetdConf} does all of it for a file, and checks its
 * programs.
 *
 * @module
 */

import { userInfo } from "node:os";
import { parseIPv4, parseIPv6 } from "./address.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { readSmallTextFile } from "./files.ts";
import { permissionHint } from "./main.ts";
import { SIMPLE_SERVICE_PORTS } from "./simple.ts";
import { checkProgram, ProgramError } from "./spawn.ts";

// For users of this module (the `./inetd-conf` export): the table its
// internal service names come from.
export { SIMPLE_SERVICE_PORTS } from "./simple.ts";

/** The name of an internal (simple) service. */
export type InternalServiceName = keyof typeof SIMPLE_SERVICE_PORTS;

/** A protocol an `inetd.conf` line may name. */
export type InetdProtocol = "tcp" | "tcp4" | "tcp6" | "udp" | "udp4" | "udp6";

/** One `/etc/services` entry: `daytime 13/tcp`. */
export interface ServiceEntry {
  /** The service's own name (not an alias): `chargen` for `ttytst`. */
  name: string;
  /** Its port. */
  port: number;
}

/** `/etc/services` by `NAME/PROTOCOL`, aliases included: `quote/tcp`. */
export type ServicesTable = ReadonlyMap<string, ServiceEntry>;

/**
 * Parses `/etc/services`: `NAME PORT/PROTOCOL [ALIASES...]`, `#` comments.
 * Malformed lines are skipped, as `getservbyname` skips them.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseServices } from "./inetd_conf.ts";
 *
 * const table = parseServices("qotd\t\t17/tcp\t\tquote\n# comment\n");
 * assertEquals(table.get("quote/tcp"), { name: "qotd", port: 17 });
 * assertEquals(table.get("qotd/udp"), undefined);
 * ```
 */
export function parseServices(text: string): ServicesTable {
  const table = new Map<string, ServiceEntry>();
  for (const raw of text.split("\n")) {
    const words = raw.replace(/#.*/, "").trim().split(/\s+/);
    const match = /^(\d{1,5})\/(\w+)$/.exec(words[1] ?? "");
    if (!match || Number(match[1]) > 65535) continue;
    const entry = { name: words[0], port: Number(match[1]) };
    for (const name of [words[0], ...words.slice(2)]) {
      const key = `${name}/${match[2]}`;
      if (!table.has(key)) table.set(key, entry);
    }
  }
  return table;
}

/** One service of an `inetd.conf`, as it will be run. */
export interface InetdService {
  /** The line it is on (1-based). */
  line: number;
  /** `SERVICE/PROTOCOL` as written, without the address (`echo/tcp`, `8000/tcp6`), for the log. */
  label: string;
  /** Where to listen: the line's address, else `0.0.0.0` (`::` for `tcp6`, `udp6`). */
  hostname: string;
  /** The port: the line's number, or its name's in `/etc/services`. */
  port: number;
  /** The protocol as written. */
  protocol: InetdProtocol;
  /** `tcp` for a `stream` line, `udp` for a `dgram` one. */
  transport: "tcp" | "udp";
  /** The user it runs as (always the server's own user here). */
  user: string;
  /** Set for `internal`: which simple service. */
  internal?: InternalServiceName;
  /** Set for a program: its path. */
  program?: string;
  /** The program's arguments, after its name (`argv[0]`). */
  args: string[];
}

/**
 * A line of an `inetd.conf` that cannot be honoured; the message is the
 * whole line a user sees: `inetd.conf:3: wait stream services ...`.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { InetdConfError, parseInetdConf } from "./inetd_conf.ts";
 *
 * const error = assertThrows(
 *   () => parseInetdConf("\n8000 raw tcp nowait root /bin/cat cat\n", { file: "inetd.conf" }),
 *   InetdConfError,
 * );
 * if (error.line !== 2) throw error;
 * ```
 */
export class InetdConfError extends Error {
  /** The file, as given in the options (or `inetd.conf`). */
  readonly file: string;
  /** The line at fault (1-based). */
  readonly line: number;
  /** What is wrong, without the file and line. */
  readonly reason: string;

  /** Builds the error for `line` of `file`; `cause` is what went wrong, if an error. */
  constructor(file: string, line: number, reason: string, cause?: unknown) {
    super(`${file}:${line}: ${reason}`, { cause });
    this.name = "InetdConfError";
    this.file = file;
    this.line = line;
    this.reason = reason;
  }
}

/** What {@linkcode parseInetdConf} needs from outside the text. */
export interface ParseInetdConfOptions {
  /** The file's name for error messages. Default `inetd.conf`. */
  file?: string;
  /**
   * `/etc/services`, asked for once, only when a line names its service
   * (`echo` rather than `7`). Without it such a line is an error.
   */
  services?: () => ServicesTable;
  /**
   * The name of the user running the server, asked for once, only when a
   * line runs a program: there is no setuid here, so its user must be
   * this one. Without it any user is refused.
   */
  currentUser?: () => string;
}

const PROTOCOLS: readonly string[] = [
  "tcp",
  "tcp4",
  "tcp6",
  "udp",
  "udp4",
  "udp6",
];
const INTERNAL = Object.keys(SIMPLE_SERVICE_PORTS) as InternalServiceName[];

/**
 * Parses the text of an `inetd.conf`: one service a line, `SERVICE
 * SOCKET-TYPE PROTOCOL WAIT USER SERVER ARGS...`, where SERVICE is
 * `[ADDRESS:]NAME-OR-PORT` (ADDRESS `*`, IPv4 or `[IPv6]`), ARGS start
 * with the program's name (`argv[0]`), SERVER may be `internal` (echo,
 * discard, daytime, qotd, chargen, time: by the service's name, or named
 * after `internal` for a numeric port); `#` comments and blank lines.
 * Throws {@linkcode InetdConfError} for the first line this cannot run as
 * written: what needs a socket handed to a program (`wait` stream
 * services, `dgram` programs: Deno cannot pass a socket to a child), a
 * user other than the server's (no setuid), an `argv[0]` that is not the
 * program's name (Deno cannot set it), `nowait.N`, `tcpmux`, RPC, and
 * anything unknown. Two lines on one address and port are an error too.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseInetdConf } from "./inetd_conf.ts";
 *
 * const [daytime, cat] = parseInetdConf(
 *   "# internal daytime, and cat as an echo\n" +
 *     "10013 stream tcp nowait root internal daytime\n" +
 *     "127.0.0.1:8000 stream tcp nowait root /bin/cat cat\n",
 *   { currentUser: () => "root" },
 * );
 * assertEquals([daytime.internal, daytime.hostname, daytime.port], ["daytime", "0.0.0.0", 10013]);
 * assertEquals([cat.label, cat.program, cat.args], ["8000/tcp", "/bin/cat", []]);
 * ```
 */
export function parseInetdConf(
  text: string,
  options: ParseInetdConfOptions = {},
): InetdService[] {
  const file = options.file ?? "inetd.conf";
  let services: ServicesTable | undefined;
  let user: string | undefined;
  const context = {
    service(name: string, protocol: "tcp" | "udp") {
      services ??= options.services?.();
      return services?.get(`${name}/${protocol}`);
    },
    user() {
      return user ??= options.currentUser?.();
    },
  };
  const result: InetdService[] = [];
  const sockets = new Map<string, number>();
  text.split("\n").forEach((raw, index) => {
    const line = index + 1;
    const words = raw.trim().split(/\s+/);
    if (words[0] === "" || words[0].startsWith("#")) return;
    let service: InetdService;
    try {
      service = parseLine(words, line, context);
    } catch (error) {
      // The line's fault, or an error reading /etc/services or finding the
      // user, said at the line that needed them.
      if (!(error instanceof Error)) throw error;
      throw new InetdConfError(
        file,
        line,
        error.message,
        error instanceof LineRefused ? undefined : error,
      );
    }
    const socket = `${service.transport} ${service.hostname} ${service.port}`;
    const first = sockets.get(socket);
    if (first !== undefined) {
      throw new InetdConfError(
        file,
        line,
        `${service.label}: ${service.transport} port ${service.port} is already served by line ${first}`,
      );
    }
    sockets.set(socket, line);
    result.push(service);
  });
  return result;
}

interface LineContext {
  service(name: string, protocol: "tcp" | "udp"): ServiceEntry | undefined;
  user(): string | undefined;
}

/** What is wrong with a line, before the file and line number are known. */
class LineRefused extends Error {}

/** Parses one line's words; throws {@linkcode LineRefused}. */
function parseLine(
  words: string[],
  line: number,
  context: LineContext,
): InetdService {
  if (words.length === 1 && words[0].endsWith(":")) {
    throw new LineRefused(
      `a line of only an address ('${
        words[0]
      }', the default address for the lines after it) is not supported: put the address on each line`,
    );
  }
  if (words.length < 6) {
    throw new LineRefused(
      `expected SERVICE SOCKET-TYPE PROTOCOL WAIT USER SERVER [ARGS...], got ${words.length} field(s)`,
    );
  }
  const [where, socketType, protocol, wait, owner, server, ...argv] = words;
  const transport = parseSocket(socketType, protocol);
  const { hostname, name } = splitService(where, protocol as InetdProtocol);
  if (name === "tcpmux" || name.startsWith("tcpmux/")) {
    throw new LineRefused(`tcpmux is not supported`);
  }
  const known = /^\d+$/.test(name)
    ? undefined
    : context.service(name, transport);
  const port = known?.port ?? (/^\d+$/.test(name) ? Number(name) : NaN);
  if (!(port >= 1 && port <= 65535)) {
    throw new LineRefused(
      /^\d+$/.test(name)
        ? `invalid port '${name}': expected 1 to 65535`
        : `unknown service '${name}/${transport}' (not in /etc/services)`,
    );
  }
  const waits = parseWait(wait);
  const [user, group] = owner.split(/[:.]/, 2);
  const base = {
    line,
    // For log lines: a service name is /etc/services' (or digits), but
    // that file is text from outside too.
    label: escapeControlChars(`${name}/${protocol}`),
    hostname,
    port,
    protocol: protocol as InetdProtocol,
    transport,
    user,
  } as const;
  if (server === "internal") {
    const internal = internalName(known?.name ?? name, argv[0]);
    if (socketType === "stream" && waits) {
      throw new LineRefused(`internal stream services are nowait`);
    }
    return { ...base, internal, args: [] };
  }
  checkProgramLine(socketType, waits, server);
  checkOwner(owner, user, group, context.user());
  if (argv.length > 0 && argv[0] !== server && argv[0] !== basename(server)) {
    throw new LineRefused(
      `argv[0] '${argv[0]}' is not the program's name ('${
        basename(server)
      }'): Deno cannot set a program's argv[0]`,
    );
  }
  return { ...base, program: server, args: argv.slice(1) };
}

/** The SOCKET-TYPE and PROTOCOL fields: the transport they agree on. */
function parseSocket(socketType: string, protocol: string): "tcp" | "udp" {
  if (socketType !== "stream" && socketType !== "dgram") {
    throw new LineRefused(
      `unknown or unsupported socket type '${socketType}': expected stream or dgram`,
    );
  }
  if (protocol.startsWith("rpc/")) {
    throw new LineRefused(`RPC services are not supported`);
  }
  if (!PROTOCOLS.includes(protocol)) {
    throw new LineRefused(
      `unknown protocol '${protocol}': expected ${PROTOCOLS.join(", ")}`,
    );
  }
  const transport = protocol.startsWith("tcp") ? "tcp" : "udp";
  if ((transport === "tcp") !== (socketType === "stream")) {
    throw new LineRefused(
      `socket type ${socketType} does not go with protocol ${protocol}`,
    );
  }
  return transport;
}

/** The WAIT field: whether it says `wait` (`nowait`: false). */
function parseWait(wait: string): boolean {
  const match = /^(wait|nowait)(?:\.(\d+))?$/.exec(wait);
  if (!match) {
    throw new LineRefused(`expected wait or nowait, got '${wait}'`);
  }
  if (match[2] !== undefined) {
    throw new LineRefused(
      `'${wait}': a limit of programs a minute is not supported; write ${
        match[1]
      } (each address may open 50 connections a second)`,
    );
  }
  return match[1] === "wait";
}

/** What a line that runs a program must be, as Deno can run it. */
function checkProgramLine(
  socketType: string,
  waits: boolean,
  server: string,
): void {
  if (socketType === "dgram") {
    throw new LineRefused(
      `dgram services that run a program are not supported: inetd gives the program the socket itself, and Deno cannot hand a socket to a child process (internal dgram services are)`,
    );
  }
  if (waits) {
    throw new LineRefused(
      `wait stream services are not supported: inetd gives the program the listening socket, and Deno cannot hand a socket to a child process (use nowait: a program per connection)`,
    );
  }
  if (!server.startsWith("/")) {
    throw new LineRefused(
      `the server '${server}' must be an absolute path or internal`,
    );
  }
}

/** The USER field of a program's line: the user this server runs as. */
function checkOwner(
  owner: string,
  user: string,
  group: string | undefined,
  running: string | undefined,
): void {
  if (group !== undefined) {
    throw new LineRefused(
      `'${owner}': a group cannot be set (no setgid here): give the user only`,
    );
  }
  if (running === undefined || user !== running) {
    throw new LineRefused(
      `runs as '${user}', but this server runs as ${
        running === undefined ? "another user" : `'${running}'`
      } and cannot change user (no setuid here): write ${
        running ?? "the server's user"
      }, or run the server as ${user}`,
    );
  }
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** `[ADDRESS:]SERVICE` into where to listen and the service's name or port. */
function splitService(
  where: string,
  protocol: InetdProtocol,
): { hostname: string; name: string } {
  const v6 = protocol.endsWith("6");
  const any = v6 ? "::" : "0.0.0.0";
  const at = where.lastIndexOf(":");
  if (at < 0) return { hostname: any, name: where };
  const address = where.slice(0, at);
  const name = where.slice(at + 1);
  if (address === "*") return { hostname: any, name };
  if (address.startsWith("[") && address.endsWith("]")) {
    const bare = address.slice(1, -1);
    if (parseIPv6(bare) && protocol !== "tcp4" && protocol !== "udp4") {
      return { hostname: bare, name };
    }
  } else if (parseIPv4(address) && !v6) {
    return { hostname: address, name };
  }
  throw new LineRefused(
    `invalid address '${address}' for ${protocol}: expected *, an IPv4 address or [IPv6 address]`,
  );
}

/** Which simple service an `internal` line means: by name, or named after it. */
function internalName(
  name: string,
  named: string | undefined,
): InternalServiceName {
  const pick = (INTERNAL as string[]).includes(name) ? name : named;
  if (pick !== undefined && (INTERNAL as string[]).includes(pick)) {
    return pick as InternalServiceName;
  }
  throw new LineRefused(
    `no internal service '${named ?? name}': expected ${
      INTERNAL.join(", ")
    } (for a numeric port, name it after internal: 'internal echo')`,
  );
}

/** The user running this process, for the user field of program lines. */
function currentUser(): string {
  try {
    return userInfo().username;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    throw new Error(
      `cannot tell which user runs this server, to compare with the line's user: ${
        permissionHint("--allow-sys", ["uid", "gid", "userInfo"])
      }`,
    );
  }
}

/**
 * Reads and checks the `inetd.conf` at `path` ({@linkcode parseInetdConf}):
 * `/etc/services` is read only if a line names its service, the user
 * (`--allow-sys=uid,gid,userInfo`) found only if a line runs a program,
 * and each program is checked as `exec.ts` checks its one (`checkProgram`:
 * it must exist, be executable, and be allowed to run). Throws
 * {@linkcode InetdConfError} naming the file and line, or `FileReadError`
 * for the file itself.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { loadInetdConf } from "./inetd_conf.ts";
 *
 * const path = Deno.makeTempFileSync();
 * Deno.writeTextFileSync(path, "10013 stream tcp nowait nobody internal daytime\n");
 * const [daytime] = loadInetdConf(path);
 * Deno.removeSync(path);
 * assertEquals([daytime.internal, daytime.port], ["daytime", 10013]);
 * ```
 */
export function loadInetdConf(path: string): InetdService[] {
  const services = parseInetdConf(readSmallTextFile(path, "inetd.conf"), {
    file: path,
    services: () =>
      parseServices(readSmallTextFile("/etc/services", "services file")),
    currentUser,
  });
  for (const service of services) {
    if (service.program === undefined) continue;
    try {
      checkProgram(service.program);
    } catch (error) {
      if (!(error instanceof ProgramError)) throw error;
      throw new InetdConfError(path, service.line, error.message, error);
    }
  }
  return services;
}
