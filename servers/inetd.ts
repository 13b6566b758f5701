/**
 * The six RFC simple services at once, as inetd's internal services are:
 * echo, discard, daytime, qotd, chargen and time, each on TCP and UDP at
 * `--base` + its well-known port (default base 10000: echo 10007, discard
 * 10009, daytime 10013, qotd 10017, chargen 10019, time 10037), so no root
 * is needed. One life cycle: every socket is bound before the first
 * `listening on` line, and one SIGINT or SIGTERM stops them all (exit 0).
 * It mirrors no single seed example: it runs the seed's echo and daytime
 * servers and their RFC siblings together (the seed: the classic C socket
 * examples page this toolkit ports).
 *
 * ```sh
 * $ deno run --unstable-net --allow-net servers/inetd.ts &
 * listening on 0.0.0.0:10007 (echo/tcp)
 * listening on 0.0.0.0:10007 (echo/udp)
 * listening on 0.0.0.0:10009 (discard/tcp)
 * listening on 0.0.0.0:10009 (discard/udp)
 * listening on 0.0.0.0:10013 (daytime/tcp)
 * listening on 0.0.0.0:10013 (daytime/udp)
 * listening on 0.0.0.0:10017 (qotd/tcp)
 * listening on 0.0.0.0:10017 (qotd/udp)
 * listening on 0.0.0.0:10019 (chargen/tcp)
 * listening on 0.0.0.0:10019 (chargen/udp)
 * listening on 0.0.0.0:10037 (time/tcp)
 * listening on 0.0.0.0:10037 (time/udp)
 * $ echo hi | socat - TCP:127.0.0.1:10007
 * hi
 * echo/tcp: accepted 127.0.0.1:60502
 * echo/tcp: closed 127.0.0.1:60502 (3 bytes in, 3 bytes out)
 * $ echo | socat - UDP:127.0.0.1:10013,sourceport=40000
 * Wed Nov 25 14:59:19 2026
 * $ rdate -p -o 10037 127.0.0.1
 * Wed Nov 25 14:59:19 2026
 * $ deno task daytime-client 127.0.0.1
 * Wed Nov 25 14:59:19 2026
 * ```
 *
 * `--only echo,time` and `--except chargen` choose services, `--tcp-only`
 * and `--udp-only` transports; `--qotd-file FILE` serves your quotations
 * (add `--allow-read=FILE`). UDP replies go to whoever sent, hence the
 * host-wide net permission. At the well-known ports, as root:
 *
 * ```sh
 * $ deno run --unstable-net --allow-net servers/inetd.ts --base 0 --only time &   # as root
 * listening on 0.0.0.0:37 (time/tcp)
 * listening on 0.0.0.0:37 (time/udp)
 * $ deno run --unstable-net --allow-net servers/inetd.ts --base 0
 * error: permission denied listening on 0.0.0.0:7: ports below 1024 need root or CAP_NET_BIND_SERVICE; as a user: deno run --unstable-net --allow-net servers/inetd.ts --base 10000
 * $ deno install -g -f -n sock-inetd --config=deno.json --unstable-net --allow-net servers/inetd.ts
 * ...
 * $ sock-inetd --help
 * usage: inetd.ts [options]
 * ...
 * ```
 *
 * The UDP sides never answer a source port below 1024 (`--allow-low-ports`
 * to change that) nor any simple service's port, here or at the well-known
 * ports, even with `--allow-low-ports` (CVE-1999-0103: two services
 * answering each other forever), and limit replies per source
 * (`--udp-rate`), counting what they drop in the log.
 *
 * @module
 */

import { userInfo } from "node:os";
import {
  checkProgram,
  combineServers,
  flag,
  flagsHelp,
  formatAddr,
  INETD_BASE,
  ListenError,
  type Log,
  parseCommandLine,
  pickFlags,
  ProgramError,
  readSmallTextFile,
  rerunCommand,
  runMain,
  runServers,
  serve,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  type Service,
  SIMPLE_SERVICE_PORTS,
  simpleLoopPorts,
  stderrLog,
  UsageError,
} from "../mod.ts";
import {
  InetdConfError,
  type InetdService,
  parseInetdConf,
  parseServices,
} from "../lib/inetd_conf.ts";
import { describeError } from "../lib/main.ts";
import { listeningLine } from "../lib/server.ts";
import { serveExec } from "./exec.ts";
import { chargenService } from "./chargen.ts";
import { daytimeService } from "./daytime.ts";
import { discardService } from "./discard.ts";
import { echoService } from "./echo.ts";
import { loadQuotations, qotdService } from "./qotd.ts";
import { timeService } from "./time.ts";

/** The name of a simple service. */
export type SimpleServiceName = keyof typeof SIMPLE_SERVICE_PORTS;

/** Every simple service, in the order inetd starts them. */
export const SIMPLE_SERVICES: readonly SimpleServiceName[] = Object.freeze([
  "echo",
  "discard",
  "daytime",
  "qotd",
  "chargen",
  "time",
]);

/** Options for {@linkcode serveInetd}. */
export interface InetdOptions extends Omit<ServerOptions, "port" | "path"> {
  /** Each service listens at `base` + its well-known port. Default 10000. */
  base?: number;
  /** The services to run; default all six. */
  services?: readonly SimpleServiceName[];
  /** The transports to serve each on; default both. */
  transports?: readonly ("tcp" | "udp")[];
  /** Encoded quotations for qotd (see `parseQuotations` in `qotd.ts`). */
  quotations?: readonly Uint8Array[];
}

/** One socket of an inetd: which service, on which transport. */
export interface InetdSocket {
  /** The service's name (`echo`). */
  service: SimpleServiceName;
  /** `tcp` or `udp`. */
  transport: "tcp" | "udp";
  /** `echo/tcp`, as the log labels it. */
  label: string;
  /** The server on that socket. */
  server: Server;
}

/** A running inetd: all its sockets, stopped together. */
export interface Inetd extends Server {
  /** Every socket, in start order. */
  readonly sockets: readonly InetdSocket[];
}

function serviceFor(
  name: SimpleServiceName,
  quotations?: readonly Uint8Array[],
): Service {
  switch (name) {
    case "echo":
      return echoService({ defaultPort: SIMPLE_SERVICE_PORTS.echo });
    case "discard":
      return discardService();
    case "daytime":
      return daytimeService();
    case "qotd":
      return qotdService(quotations);
    case "chargen":
      return chargenService();
    case "time":
      return timeService();
  }
}

/**
 * Starts the simple services on TCP and UDP at `base` + their well-known
 * ports, all bound before it returns (if one cannot bind, those already
 * bound are closed and the {@linkcode ListenError} is thrown). One
 * `shutdown()` stops them all.
 *
 * @example Daytime over TCP on a port that was just free
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serveInetd } from "./inetd.ts";
 *
 * const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = probe.addr as Deno.NetAddr;
 * probe.close();
 * await using inetd = serveInetd({
 *   hostname: "127.0.0.1",
 *   base: port - 13,
 *   services: ["daytime"],
 *   transports: ["tcp"],
 *   log: () => {},
 * });
 * assertEquals(inetd.sockets.map((socket) => socket.label), ["daytime/tcp"]);
 * ```
 */
export function serveInetd(options: InetdOptions = {}): Inetd {
  const {
    base = INETD_BASE,
    services = SIMPLE_SERVICES,
    transports = ["tcp", "udp"],
    quotations,
    ...common
  } = options;
  const sockets: InetdSocket[] = [];
  try {
    for (const name of services) {
      const service = serviceFor(name, quotations);
      const port = base + SIMPLE_SERVICE_PORTS[name];
      for (const transport of transports) {
        const label = `${name}/${transport}`;
        const server = serve(service, {
          dropSourcePorts: simpleLoopPorts([0, INETD_BASE, base]),
          ...common,
          transport,
          port,
          label,
        });
        sockets.push({ service: name, transport, label, server });
      }
    }
  } catch (error) {
    for (const { server } of sockets) server.shutdown();
    // The shared wording suggests --port, which inetd does not have.
    if (
      error instanceof ListenError &&
      error.cause instanceof Deno.errors.AddrInUse
    ) {
      throw new ListenError(
        `address ${error.address} is already in use (pick another base with --base)`,
        error.address,
        error.cause,
      );
    }
    if (
      error instanceof ListenError &&
      error.cause instanceof Deno.errors.PermissionDenied
    ) {
      const hint = rerunCommand(["--unstable-net", "--allow-net"], {
        base: String(INETD_BASE),
      });
      throw new ListenError(
        `permission denied listening on ${error.address}: ports below 1024 need root or CAP_NET_BIND_SERVICE; ${
          hint ? `as a user: ${hint}` : `as a user, give --base ${INETD_BASE}`
        }`,
        error.address,
        error.cause,
      );
    }
    throw error;
  }
  const combined = combineServers(sockets.map((s) => s.server));
  return Object.assign(combined, { sockets });
}

/** The user running this process, for `inetd.conf`'s user field. */
function currentUser(): string {
  try {
    return userInfo().username;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    throw new Error(
      "cannot tell which user runs this server, to compare with the line's user: grant --allow-sys=uid,gid,userInfo",
    );
  }
}

/**
 * Reads and checks an `inetd.conf` (see `parseInetdConf` in
 * `lib/inetd_conf.ts`): `/etc/services` is read only if a line names its
 * service, the user only if a line runs a program, and each program is
 * checked as `exec.ts` checks its one. Throws `InetdConfError` (naming
 * the file and line) or `FileReadError` (the file itself).
 *
 * @example
 * ```ts ignore
 * import { loadInetdConf } from "./inetd.ts";
 *
 * const services = loadInetdConf("/etc/inetd.conf");
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
      throw new InetdConfError(path, service.line, error.message);
    }
  }
  return services;
}

/** Options for {@linkcode serveInetdConf}: those every service shares. */
export interface InetdConfOptions
  extends Omit<ServerOptions, "port" | "path" | "hostname" | "transport"> {
  /** The file's name, for error and log lines. Default `inetd.conf`. */
  file?: string;
  /** Encoded quotations for an internal qotd. */
  quotations?: readonly Uint8Array[];
}

/** One running line of an `inetd.conf`. */
export interface InetdConfSocket {
  /** The line as parsed. */
  service: InetdService;
  /** The server on its socket. */
  server: Server;
}

/** A running `inetd.conf`: its sockets, and a way to change them. */
export interface InetdConfServer extends Server {
  /** The services running now, in the file's order when started. */
  readonly sockets: readonly InetdConfSocket[];
  /**
   * Runs `services` instead: starts the new lines, stops the removed ones
   * (they stop listening; their connections in flight go on, within the
   * grace period), leaves the unchanged ones alone (not rebound); one log
   * line per change, then a summary.
   */
  reload(services: readonly InetdService[]): Promise<void>;
}

/** What makes two lines the same service: where, and what runs there. */
function serviceKey(s: InetdService): string {
  return JSON.stringify([
    s.transport,
    s.hostname,
    s.port,
    s.internal ?? null,
    s.program ?? null,
    s.args,
  ]);
}

/**
 * Runs the services of an `inetd.conf` (see {@linkcode loadInetdConf}):
 * `internal` ones as {@linkcode serveInetd} runs them, programs as
 * `serveExec` from `exec.ts` does (the same environment, limits and log
 * lines). All are bound before it returns; if one cannot bind, those
 * already bound are closed and the error, naming the line, is thrown.
 *
 * @example An internal daytime on a port that was just free
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseInetdConf } from "../lib/inetd_conf.ts";
 * import { serveInetdConf } from "./inetd.ts";
 *
 * const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = probe.addr as Deno.NetAddr;
 * probe.close();
 * const services = parseInetdConf(
 *   `127.0.0.1:${port} stream tcp nowait root internal daytime\n`,
 * );
 * await using inetd = serveInetdConf(services, { log: () => {} });
 * assertEquals(inetd.sockets.map((s) => s.service.label), [`${port}/tcp`]);
 * ```
 */
export function serveInetdConf(
  services: readonly InetdService[],
  options: InetdConfOptions = {},
): InetdConfServer {
  const { file = "inetd.conf", quotations, ...common } = options;
  const log: Log = options.log ?? stderrLog;
  const running = new Map<string, InetdConfSocket>();
  const retiring = new Set<Promise<void>>();
  let closing = false;
  let lastAddr: Deno.Addr = { transport: "tcp", hostname: "0.0.0.0", port: 0 };

  const start = (service: InetdService, all: readonly InetdService[]) => {
    const where = {
      ...common,
      log,
      hostname: service.hostname,
      port: service.port,
      transport: service.transport,
      label: service.label,
    };
    try {
      if (service.internal === undefined) {
        return serveExec({
          ...where,
          program: service.program!,
          args: service.args,
        });
      }
      // Never answer another internal UDP service of this file (CVE-1999-0103).
      const udpPorts = all.filter((s) => s.internal && s.transport === "udp")
        .map((s) => s.port);
      return serve(serviceFor(service.internal, quotations), {
        dropSourcePorts: simpleLoopPorts([0, INETD_BASE], udpPorts),
        ...where,
      });
    } catch (error) {
      if (!(error instanceof Error)) throw error;
      // bind.ts's hints name --port, which a file line does not have.
      const reason = describeError(error)
        .replace(/ \(pick another port with --port\)$/, "")
        .replace(/; as a user.*$/, "");
      throw new InetdConfError(
        file,
        service.line,
        `${service.label}: ${reason}`,
      );
    }
  };

  for (const service of services) {
    try {
      const server = start(service, services);
      running.set(serviceKey(service), { service, server });
    } catch (error) {
      for (const { server } of running.values()) server.shutdown();
      throw error;
    }
  }
  const sockets = () => [...running.values()];
  const ready = Promise.all(sockets().map(({ server }) => server.ready))
    .then(() => {});

  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);
  const shutdown = async () => {
    if (!closing) {
      closing = true;
      const all = sockets().map(({ server }) => server.shutdown());
      running.clear();
      await Promise.all([...all, ...retiring]);
      resolveFinished();
    }
    return finished;
  };

  const reload = async (next: readonly InetdService[]) => {
    if (closing) return;
    const keys = new Map(next.map((s) => [serviceKey(s), s]));
    let removed = 0, added = 0;
    for (const [key, { service, server }] of running) {
      if (keys.has(key)) continue;
      running.delete(key);
      removed++;
      log(`stopped listening on ${formatAddr(server.addr)} (${service.label})`);
      const done = server.shutdown();
      retiring.add(done);
      done.finally(() => retiring.delete(done));
    }
    // Their listeners close a task from now: a line that moved to another
    // program keeps its port.
    if (removed > 0) await new Promise((resolve) => setTimeout(resolve, 0));
    for (const [key, service] of keys) {
      const kept = running.get(key);
      if (kept) {
        kept.service = service;
        continue;
      }
      try {
        const server = start(service, next);
        await server.ready;
        running.set(key, { service, server });
        added++;
        log(listeningLine(server.addr, service.label));
      } catch (error) {
        log(`error: ${describeError(error)}`);
      }
    }
    log(
      `reloaded ${file}: ${added} added, ${removed} removed, ${
        running.size - added
      } unchanged`,
    );
  };

  return {
    get addr() {
      const first = running.values().next().value;
      if (first) lastAddr = first.server.addr;
      return lastAddr;
    },
    get sockets() {
      return sockets();
    },
    ready,
    finished,
    shutdown,
    reload,
    [Symbol.asyncDispose]: shutdown,
  };
}

function serviceList(text: string, name: string): SimpleServiceName[] {
  const names = text.split(",").map((name) => name.trim()).filter(Boolean);
  const seen = new Set<string>();
  for (const service of names) {
    if (!(SIMPLE_SERVICES as readonly string[]).includes(service)) {
      throw new UsageError(
        `unknown service '${service}' for ${name}: expected some of ${
          SIMPLE_SERVICES.join(",")
        }`,
      );
    }
    if (seen.has(service)) {
      throw new UsageError(`service '${service}' named twice in ${name}`);
    }
    seen.add(service);
  }
  if (names.length === 0) {
    throw new UsageError(`${name} needs at least one service`);
  }
  return names as SimpleServiceName[];
}

const MAX_BASE = 65535 - Math.max(...Object.values(SIMPLE_SERVICE_PORTS));

const FLAGS = {
  base: flag.integer("B", "base port", {
    min: 0,
    max: MAX_BASE,
    shown: `${INETD_BASE}; 0 for the well-known ports, as root`,
  }),
  only: flag.custom(
    "LIST",
    "run only these services (comma-separated)",
    serviceList,
  ),
  except: flag.custom("LIST", "run all but these services", serviceList),
  "tcp-only": flag.boolean("serve TCP only"),
  "udp-only": flag.boolean("serve UDP only"),
  conf: flag.string(
    "FILE",
    "run the services of an inetd.conf instead (SIGHUP re-reads it)",
  ),
  "qotd-file": flag.string(
    "FILE",
    "qotd serves the quotations in FILE, one per paragraph",
  ),
  ...pickFlags(
    serverFlags({ port: 0 }),
    "hostname",
    "max-connections",
    "idle-timeout",
    "grace",
    "allow-low-ports",
    "udp-rate",
    "allow",
    "deny",
  ),
};

const USAGE = `usage: inetd.ts [options]

Runs echo, discard, daytime, qotd, chargen and time on TCP and UDP at once,
each at BASE + its well-known port (echo 7, discard 9, daytime 13, qotd 17,
chargen 19, time 37).

${flagsHelp(FLAGS)}

Permissions: --unstable-net --allow-net (UDP replies go to any sender),
plus --allow-read=FILE with --qotd-file.`;

/** Flags that `--conf` replaces: the file says where and what. */
const NOT_WITH_CONF = [
  "base",
  "only",
  "except",
  "tcp-only",
  "udp-only",
  "hostname",
] as const;

/**
 * `--conf FILE`: runs its services until SIGINT or SIGTERM; on SIGHUP,
 * reads it again and applies the changes, or, should the new file be
 * wrong, logs why and keeps what runs.
 */
async function runConf(
  file: string,
  options: InetdConfOptions,
): Promise<void> {
  const log = options.log ?? stderrLog;
  const inetd = serveInetdConf(loadInetdConf(file), { ...options, file });
  try {
    await inetd.ready;
  } catch (error) {
    await inetd.shutdown();
    throw error;
  }
  for (const { service, server } of inetd.sockets) {
    log(listeningLine(server.addr, service.label));
  }
  let reloading = Promise.resolve();
  const reload = () => {
    reloading = reloading.then(async () => {
      log(`SIGHUP: reading ${file}`);
      let services: InetdService[];
      try {
        services = loadInetdConf(file);
      } catch (error) {
        log(
          `error: ${describeError(error)}; keeping the running configuration`,
        );
        return;
      }
      await inetd.reload(services);
    });
  };
  const stop = () => inetd.shutdown();
  const signals: [Deno.Signal, () => void][] = [
    ["SIGINT", stop],
    ["SIGTERM", stop],
    ["SIGHUP", reload],
  ];
  for (const [signal, handler] of signals) {
    Deno.addSignalListener(signal, handler);
  }
  try {
    await inetd.finished;
  } finally {
    for (const [signal, handler] of signals) {
      Deno.removeSignalListener(signal, handler);
    }
  }
}

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
    });
    if (values.conf !== undefined) {
      const given = NOT_WITH_CONF.find((name) =>
        values[name] !== undefined && values[name] !== false
      );
      if (given) {
        throw new UsageError(
          `--${given} cannot be used with --conf: the file says where each service listens`,
        );
      }
      const { conf, "qotd-file": qotdFile, ...server } = values;
      const { transport: _, ...options }: InetdConfOptions & ServerOptions =
        serverOptionsFromFlags(server, ["tcp", "udp"]);
      if (qotdFile !== undefined) {
        options.quotations = await loadQuotations(qotdFile);
      }
      await runConf(conf, options);
      return;
    }
    if (values.only !== undefined && values.except !== undefined) {
      throw new UsageError("--only and --except cannot be used together");
    }
    if (values["tcp-only"] && values["udp-only"]) {
      throw new UsageError("--tcp-only and --udp-only cannot be used together");
    }
    const transports: ("tcp" | "udp")[] = values["tcp-only"]
      ? ["tcp"]
      : values["udp-only"]
      ? ["udp"]
      : ["tcp", "udp"];
    const options: InetdOptions = serverOptionsFromFlags(values, transports);
    delete options.transport;
    options.transports = transports;
    if (values.base !== undefined) options.base = values.base;
    if (values.only !== undefined) options.services = values.only;
    if (values.except !== undefined) {
      const except = values.except;
      options.services = SIMPLE_SERVICES.filter((s) => !except.includes(s));
      if (options.services.length === 0) {
        throw new UsageError("--except leaves no service to run");
      }
    }
    const services = options.services ?? SIMPLE_SERVICES;
    if (values["qotd-file"] !== undefined) {
      if (!services.includes("qotd")) {
        throw new UsageError(
          "--qotd-file does nothing without the qotd service",
        );
      }
      options.quotations = await loadQuotations(values["qotd-file"]);
    }
    const inetd = serveInetd(options);
    await runServers([...inetd.sockets]);
  });
}
