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
 * Wed Nov 25 14:59:19 UTC 2026
 * $ deno task daytime-client 127.0.0.1
 * Wed Nov 25 14:59:19 2026
 * ```
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --unstable-net --allow-net servers/inetd.ts --only echo \
 *     --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:10007 (echo/tcp)
 * listening on 0.0.0.0:10007 (echo/udp)
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="echo",transport="tcp"} 0
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
 * `--conf FILE` runs a classic `inetd.conf` instead, one service a line,
 * as inetd reads it: `SERVICE SOCKET-TYPE PROTOCOL WAIT USER SERVER
 * ARGS...`, SERVICE being `[ADDRESS:]NAME-OR-PORT` (ADDRESS `*`, IPv4 or
 * `[IPv6]`; a NAME is looked up in `/etc/services`) and ARGS starting
 * with the program's name (`argv[0]`); `#` comments. With no address,
 * `tcp` and `udp` listen on 0.0.0.0, `tcp6` and `udp6` on `::` (which on
 * Linux takes IPv4 too: Deno cannot make a socket IPv6-only, so a `tcp`
 * and a `tcp6` line cannot share a port; the `tcp6` one serves both). `internal` runs the
 * six services above over `stream tcp` and `dgram udp`, found by the
 * service's name (`echo stream tcp nowait root internal`), or, at a port
 * number, named after it (`10007 stream tcp nowait root internal echo`).
 * A program runs for each connection of a `stream tcp nowait` (or `tcp6`)
 * line as `exec.ts` runs it: tcpserver's variables, half-close, at most
 * 64 at once (4 for one address) and 50 new connections a second from one
 * address, a client's reset noticed within 2 s whatever the program does,
 * the same log lines, labelled `SERVICE/PROTOCOL`:
 *
 * ```sh
 * $ printf '%s\n' "8000 stream tcp nowait $(id -un) /bin/cat cat" \
 *     "10013 stream tcp nowait $(id -un) internal daytime" > inetd.conf
 * $ deno run --unstable-net --allow-net --allow-read=inetd.conf,/etc/services,/bin/cat --allow-run=/bin/cat --allow-sys=uid,gid,userInfo servers/inetd.ts --conf inetd.conf &
 * listening on 0.0.0.0:8000 (8000/tcp)
 * listening on 0.0.0.0:10013 (10013/tcp)
 * $ echo hi | socat - TCP:127.0.0.1:8000
 * hi
 * ...
 * $ socat - TCP:127.0.0.1:10013
 * Wed Nov 25 14:59:19 2026
 * ...
 * ```
 *
 * Permissions: `--allow-read` of the file, of `/etc/services` (read only
 * for lines that name their service) and of each program (so that one
 * missing or not executable is an `error:` line at start, not a failure
 * per client); `--allow-run` of each program; `--allow-sys=uid,gid,userInfo`
 * to know the user running the server (asked only for program lines);
 * the net as above (`--allow-net=0.0.0.0:8000,0.0.0.0:10013` is enough
 * when no line is `dgram`).
 *
 * What cannot be honoured stops the start with one `error: FILE:LINE: ...`
 * line (exit 1): `wait` stream services and `dgram` programs (inetd gives
 * the program the socket itself; Deno cannot hand a socket to a child
 * process), a user other than the server's (no setuid here: write that
 * user, or run the server as the line's; `internal` lines run in the
 * server, whatever their user), a group, an `argv[0]` other than the
 * program's name or path (Deno cannot set it), `nowait.N`, `tcpmux`, RPC,
 * an unknown socket type, protocol or service name, a program that does
 * not exist or cannot run, two lines on one socket. `--base`, `--only`,
 * `--except`, `--tcp-only`, `--udp-only` and `--hostname` do not go with
 * `--conf` (exit 2): the file says where.
 *
 * SIGHUP (`kill -HUP` of the server's pid) reads the file again, as inetd
 * does: the lines added start (`listening on ...`), the lines removed stop
 * listening (`stopped listening on ...`; their connections in flight go
 * on until they end, as inetd's children do; SIGTERM then gives them
 * `--grace` seconds, as it gives every connection), the unchanged ones keep
 * their socket; then `reloaded FILE: A added, R removed, U unchanged`. A
 * line that takes over a removed line's port binds it once the old socket
 * is closed. An added line whose address is in use (a program started
 * just before the reload holds a copy of the old socket until its exec
 * has closed it) is tried again for up to a second (`FILE:LINE: ...;
 * trying again for up to 1 s`), then is one `error: FILE:LINE: ...; not
 * listening (the next reload tries again)` line, and counted: `reloaded
 * FILE: 0 added, 0 removed, 2 unchanged, 1 failed`. A wrong file is one `error: FILE:LINE: ...; keeping the running
 * configuration` log line, and what ran goes on running.
 *
 * `--tls --cert FILE --key FILE` (with `--allow-read` for both) serves the
 * TCP services, and `--conf`'s tcp lines, over TLS; UDP stays plain.
 * `--client-ca FILE` asks clients for certificates as every server does
 * (a program sees `SSL_CLIENT_S_DN`...). The same SIGHUP reads the TLS
 * files again (new handshakes get them; a pair that does not work is one
 * `error:` line and the old one stays), with `--conf` after the file.
 *
 * @module
 */

import {
  combineServers,
  flag,
  flagsHelp,
  INETD_BASE,
  ListenError,
  parseCommandLine,
  pickFlags,
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
  udpGuardHelp,
  UsageError,
} from "../mod.ts";
import { notePermission } from "../lib/main.ts";
import type {
  InetdProtocol,
  InetdService,
  InternalServiceName,
} from "../lib/inetd_conf.ts";
import {
  RELOAD_BIND_RETRY_MS,
  runInetdConf,
  type StartInetdLine,
} from "../lib/inetd_server.ts";
import { serveExec } from "./exec.ts";

export type {
  InetdProtocol,
  InetdService,
  InternalServiceName,
  StartInetdLine,
};
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
          ...withTlsOnTcp(common, transport),
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

/**
 * How `--conf` runs each line of the file: an `internal` service as
 * {@linkcode serveInetd} runs it, a program as `serveExec` from `exec.ts`
 * does (the same environment, limits and log lines); `options` are those
 * every line shares.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseInetdConf } from "../lib/inetd_conf.ts";
 * import { inetdLineStarter } from "./inetd.ts";
 *
 * const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = probe.addr as Deno.NetAddr;
 * probe.close();
 * const services = parseInetdConf(`127.0.0.1:${port} stream tcp nowait root internal time\n`);
 * await using server = inetdLineStarter({ log: () => {} })(services[0], services);
 * assertEquals((server.addr as Deno.NetAddr).port, port);
 * ```
 */
export function inetdLineStarter(
  options: Omit<InetdOptions, "base" | "services" | "transports"> = {},
): StartInetdLine {
  const { quotations, ...common } = options;
  return (service: InetdService, all: readonly InetdService[]) => {
    const where = {
      ...withTlsOnTcp(common, service.transport),
      hostname: service.hostname,
      port: service.port,
      transport: service.transport,
      label: service.label,
    };
    if (service.internal === undefined) {
      return serveExec({
        ...where,
        program: service.program!,
        args: service.args,
      });
    }
    // Never answer another internal UDP service of the file (CVE-1999-0103).
    const udpPorts = all.filter((s) => s.internal && s.transport === "udp")
      .map((s) => s.port);
    return serve(serviceFor(service.internal, quotations), {
      dropSourcePorts: simpleLoopPorts([0, INETD_BASE], udpPorts),
      ...where,
    });
  };
}

/**
 * `--tls` and its flags are for the TCP sockets: the UDP ones of the same
 * inetd get the options without them.
 */
function withTlsOnTcp<T extends ServerOptions>(
  options: T,
  transport: "tcp" | "udp",
): T {
  if (transport === "tcp" || !options.tls) return options;
  const {
    tls: _tls,
    readTlsFiles: _read,
    clientCert: _mode,
    clientSubject: _subject,
    ...plain
  } = options;
  return plain as T;
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
    "stats",
    "stats-allow",
    "hostname",
    "max-connections",
    "idle-timeout",
    "grace",
    "allow-low-ports",
    "udp-rate",
    "allow",
    "deny",
    "accept-proxy",
    "proxy-timeout",
    "tls",
    "cert",
    "key",
    "client-ca",
    "client-cert",
    "client-subject",
    "tls-engine",
  ),
};

const RETRY_S = RELOAD_BIND_RETRY_MS / 1000;
const USAGE = `usage: inetd.ts [options]

Runs echo, discard, daytime, qotd, chargen and time on TCP and UDP at once,
each at BASE + its well-known port (echo 7, discard 9, daytime 13, qotd 17,
chargen 19, time 37).

${flagsHelp(FLAGS)}

${udpGuardHelp()}

Permissions: --unstable-net --allow-net (UDP replies go to any sender),
plus --allow-read=FILE with --qotd-file.

--conf FILE: the services of an inetd.conf (SERVICE SOCKET-TYPE PROTOCOL
WAIT USER SERVER ARGS...): internal ones, and programs on stream tcp nowait
lines, run as exec.ts runs its one. Its permissions add --allow-read=FILE,
/etc/services and each program, --allow-run=PROGRAM,...
and --allow-sys=uid,gid,userInfo:

  deno run --unstable-net --allow-net --allow-read=inetd.conf,/etc/services,/bin/cat --allow-run=/bin/cat --allow-sys=uid,gid,userInfo servers/inetd.ts --conf inetd.conf

SIGHUP reads the file again: added lines start, removed ones stop
listening, unchanged ones keep their socket; a wrong file is logged and
the running services go on. An added line whose address is in use is
tried again for up to ${RETRY_S} s, then logged and counted as failed (not
listening; the next SIGHUP tries again).

--tls serves the TCP services (and --conf's tcp lines) over TLS, UDP
staying plain; SIGHUP reads --cert, --key and --client-ca again too (with
--conf, the same SIGHUP reads both).`;

/** Flags that `--conf` replaces: the file says where and what. */
const NOT_WITH_CONF = [
  "base",
  "only",
  "except",
  "tcp-only",
  "udp-only",
  "hostname",
] as const;

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
    });
    // What every run needs, named by any permission hint before binding.
    notePermission("--unstable-net");
    notePermission("--allow-net");
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
      const { transport: _, ...options } = serverOptionsFromFlags(server, [
        "tcp",
        "udp",
      ]);
      const quotations = qotdFile === undefined
        ? undefined
        : await loadQuotations(qotdFile);
      await runInetdConf(conf, {
        start: inetdLineStarter({ ...options, quotations }),
      });
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
