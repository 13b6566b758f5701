/**
 * A program per connection, inetd's real job: for each client, runs
 * PROGRAM with the connection on its stdin and stdout, as tcpserver,
 * `ncat -e`, socat's `EXEC` and an inetd `nowait` line do; the seed's
 * concurrent echo server with its `fork()` turned into any program.
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:8000 --allow-run=cat servers/exec.ts -- cat &
 * listening on 0.0.0.0:8000
 * $ echo hi | socat - TCP:127.0.0.1:8000
 * hi
 * ...
 * $ deno install -g -f -n sock-exec --config=deno.json --allow-net=0.0.0.0:8000 --allow-run=cat servers/exec.ts
 * ...
 * ```
 *
 * The same service with the tools this replaces:
 *
 * | tool | command |
 * | --- | --- |
 * | tcpserver | `tcpserver -c 64 -H -R 0.0.0.0 8000 cat` |
 * | ncat | `ncat -l -k -m 64 0.0.0.0 8000 -e /bin/cat` |
 * | socat | `socat TCP-LISTEN:8000,fork,reuseaddr,max-children=64 EXEC:cat` |
 * | inetd.conf | `8000 stream tcp nowait root /bin/cat cat` (`servers/inetd.ts --conf` runs it too) |
 *
 * A program given by path takes `--allow-read` for it too
 * (`--allow-run=/usr/bin/date --allow-read=/usr/bin/date`, then
 * `-- /usr/bin/date -u`), so that a missing or non-executable one is one
 * `error:` line at start (exit 1), not a failure per client. Over TLS the
 * program sees plain bytes (`--tls --cert cert.pem --key key.pem`, with
 * `--allow-read=cert.pem,key.pem`); on a Unix socket, `--unix PATH` with
 * `--allow-net=unix:PATH --allow-read=PATH --allow-write=PATH`.
 *
 * Client certificates (mutual TLS, stunnel's `verify = 2`): with
 * `--client-ca ca.pem` (and `--allow-read` for it) every client must show
 * a certificate that chains to `ca.pem`; one without is refused in the
 * handshake (certificate_required), one of another CA right after it, one
 * log line each, before any program starts. `--client-cert optional` lets
 * a client without one in. The `accepted` line names the subject, and the
 * program learns the session as Apache's mod_ssl and ucspi-ssl's
 * `sslserver` tell theirs:
 *
 * | variable | value |
 * |---|---|
 * | `SSL_PROTOCOL` | `TLSv1.3` or `TLSv1.2` |
 * | `SSL_CIPHER` | OpenSSL's name: `TLS_AES_256_GCM_SHA384`, `ECDHE-ECDSA-AES256-GCM-SHA384` |
 * | `SSL_SERVER_S_DN` | our certificate's subject |
 * | `SSL_CLIENT_VERIFY` | `SUCCESS` (a verified certificate), `NONE` (none: `--client-cert optional`, or no `--client-ca`) |
 * | `SSL_CLIENT_S_DN`, `SSL_CLIENT_I_DN` | its subject and issuer, as stunnel writes them (its log, its `SSL_CLIENT_DN`): `C=DE, O="Example, Inc.", CN=alice` |
 * | `SSL_CLIENT_M_SERIAL` | its serial, upper-case hex in whole bytes (`openssl x509 -serial`) |
 * | `SSL_CLIENT_V_END` | when it expires: `Dec  9 18:12:54 2026 GMT` |
 * | `SSL_CLIENT_CERT` | the certificate, PEM |
 *
 * The tools write a DN three ways: stunnel as here, mod_ssl the other way
 * round (RFC 2253: `CN=alice,O=Example\, Inc.,C=DE`), ucspi-ssl as
 * `/C=DE/O=Example, Inc./CN=alice` (and its serial in decimal). `--allow`
 * and `--deny` stay address rules; to limit by certificate, give
 * `--client-subject REGEX` (a subject that does not match is refused, one
 * log line) or let the program decide from `SSL_CLIENT_S_DN`. SIGHUP reads
 * `--cert`, `--key` and `--client-ca` again: new handshakes get them,
 * connections in flight and their programs go on (renew by writing the new
 * file beside the old, renaming it into place, then `kill -HUP`).
 *
 * The program is run directly (no shell), its arguments exactly as given.
 * Its environment is the server's (or, with `--clear-env`, empty: not even
 * `PATH`), plus each `--env NAME=VALUE`, plus the connection's, named as
 * ucspi-tcp's tcpserver names them (set last, as tcpserver does):
 *
 * | variable | value |
 * |---|---|
 * | `PROTO` | `TCP`; `TCP6` for an IPv6 client; `UNIX` with `--unix` |
 * | `TCPLOCALIP`, `TCPLOCALPORT` | the server's address and port for this connection; with `--accept-proxy`, the address the client reached on the proxy (the header's destination) |
 * | `TCPREMOTEIP`, `TCPREMOTEPORT` | the client's (an IPv4-mapped IPv6 address as IPv4); with `--accept-proxy`, the client in the PROXY header |
 * | `TCP6LOCALIP` ... `TCP6REMOTEPORT` | IPv6 clients: the same values again, as tcpserver's IPv6 build sets them |
 * | `UNIXLOCALPATH`, `UNIXLOCALPID` | `--unix`: the socket path, the server's pid (as ucspi-unix) |
 *
 * No name lookups (tcpserver `-H -R` with no `-l`): `TCPLOCALHOST`,
 * `TCPREMOTEHOST` and `TCPREMOTEINFO` are not set (add one with `--env`).
 * Behind haproxy (`send-proxy`) with `--accept-proxy`, the program sees
 * what tcpserver listening where haproxy does would set: the client and
 * the address it connected to, not haproxy's connection (a `LOCAL` header,
 * haproxy's health check, leaves the connection's own); `--allow`,
 * `--deny`, `--per-source` and `--rate` judge that client too.
 *
 * Life cycle: the client's EOF closes the program's stdin (half-close);
 * the program closing stdout half-closes the connection; the program
 * exiting ends the connection once its output is sent. A client that goes
 * away (a reset, `--idle-timeout`, `--keepalive` finding it dead, the
 * server's shutdown once `--grace` is over) gets its program SIGTERM, then
 * SIGKILL after `--kill-after` seconds; the server reaps every program and
 * exits only after the last one. A reset is noticed within 1 to 2 s
 * whatever the program does, even while the server waits for it to read
 * (the client's unread socket is then checked each second with a write of
 * zero bytes, which fails once the connection is reset). A client that
 * closes without a reset (a FIN, nothing left unread) cannot be told from
 * one that half-closed and still reads: its program's stdin is closed, and
 * a program that then neither reads nor writes runs until it ends (its
 * next write meets the client's reset); bound that with `--idle-timeout`.
 * What the program writes on stderr goes to
 * the log, one `PEER NAME[PID]: ` line per line (control characters
 * escaped, lines cut every 1 KiB; at most `--stderr-rate` lines a second
 * per program, 100 by default, the rest counted once a second as `N
 * stderr lines dropped (over 100 lines/s)`), or with `--stderr-to-client`
 * to the client.
 *
 * Limits, on by default: at most 64 programs at once (`--max-connections`;
 * tcpserver's `-c` defaults to 40), at most 4 of them for one address (an
 * IPv6 /64 counting as one: `--per-source`, a sixteenth of
 * `--max-connections`, so that it takes 16 addresses to fill the server,
 * as for the TCP servers), at most 50 new connections a second
 * from one address (`--rate`; xinetd's `cps` is 50 a second for a whole
 * service), the excess closed at once with a log line that is itself
 * rate-limited; a program that cannot be started (`EAGAIN`, `EMFILE`)
 * refuses that client, logged, and the server goes on. Every common server
 * flag works: `--allow`/`--deny`, `--idle-timeout`, `--tls`, `--unix`,
 * `--keepalive`, `--workers`.
 *
 * Where the tools differ: `ncat -e` (7.93) ends the connection at the
 * client's EOF, dropping what the program still owes, and stalls when both
 * directions are full at once; tcpserver leaves a program running after its
 * client has reset until the program next reads or writes. This does
 * neither.
 *
 * Not done: signals go to the program, not to processes it starts (which
 * are its own to end); a program's output that a background process of it
 * holds open after it exited is cut once none came for `--kill-after`
 * seconds; no `UNIXREMOTEEUID`-style peer credentials; with `--workers`,
 * each thread has its own `--rate` table.
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:8000,127.0.0.1:9100 --allow-run=cat \
 *     servers/exec.ts --stats 127.0.0.1:9100 -- cat &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:8000
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_programs_running'
 * sockets_programs_running{service="exec"} 0
 * ```
 *
 * @module
 */

import {
  type AccessPolicy,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_PER_SOURCE,
  escapeControlChars,
  type Flag,
  flag,
  flagsHelp,
  FloodLog,
  formatAddr,
  type Log,
  parseCommandLine,
  parseIPv6,
  runMain,
  runServers,
  serve,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  type Service,
  type ShutdownOptions,
  stderrLog,
  unmapIPv4,
  UsageError,
} from "../mod.ts";
import { ProgramMetrics } from "../lib/server_metrics.ts";
import {
  checkLinesPerSecond,
  checkProgram,
  DEFAULT_KILL_AFTER_MS,
  DEFAULT_STDERR_LINES_PER_SECOND,
  outcomeLine,
  type ProgramSpec,
  runProgram,
  SpawnError,
  stderrLogTo,
} from "../lib/spawn.ts";
import { noteListenPermissions } from "../lib/bind.ts";

/** The port exec.ts listens on unless told otherwise. */
export const EXEC_PORT = 8000;
/** Programs at once unless `maxConnections` says otherwise. */
export const DEFAULT_EXEC_MAX_CONNECTIONS = 64;
/** New connections a second from one address unless `ratePerSecond` says otherwise. */
export const DEFAULT_EXEC_RATE = 50;
/**
 * How many sources (addresses, IPv6 /64s) it takes at least to fill a
 * server at its default per-source limit: 16, as for the TCP servers
 * (`DEFAULT_PER_SOURCE` is that share of `DEFAULT_MAX_CONNECTIONS`).
 */
const SOURCES_TO_FILL = DEFAULT_MAX_CONNECTIONS / DEFAULT_PER_SOURCE;
/**
 * Programs at once from one source unless `perSource` says otherwise: a
 * sixteenth of `maxConnections` (at least 1), so that one address cannot
 * take every slot; 4 with the default 64. (The TCP servers' 256 is above
 * exec's 64: one address would have filled it.)
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { DEFAULT_EXEC_MAX_CONNECTIONS, defaultExecPerSource } from "./exec.ts";
 *
 * assertEquals(defaultExecPerSource(DEFAULT_EXEC_MAX_CONNECTIONS), 4);
 * assertEquals(defaultExecPerSource(8), 1);
 * ```
 */
export function defaultExecPerSource(maxConnections: number): number {
  return Math.max(1, Math.floor(maxConnections / SOURCES_TO_FILL));
}

/** Options for {@linkcode serveExec}: the server's, and what to run. */
export interface ExecOptions extends ServerOptions, ProgramSpec {
  /**
   * TCP (or a Unix socket with `acceptProxy`, for the clients the
   * headers name): at most this many new connections a second from one
   * address (an IPv4 address, IPv4-mapped ones included, or an IPv6
   * /64), in bursts of as many; the excess is closed at once, before any
   * program starts.
   * 0: no limit. Default {@linkcode DEFAULT_EXEC_RATE}.
   */
  ratePerSecond?: number;
}

/**
 * The address a rate counts under: IPv4 (mapped ones as IPv4), or the /64
 * of an IPv6 address, as one host may use a whole /64.
 */
function sourceOf(addr: Deno.Addr): string | undefined {
  if (!("hostname" in addr)) return undefined;
  const host = unmapIPv4(addr.hostname);
  const groups = host.includes(":") ? parseIPv6(host) : null;
  if (!groups) return host;
  return `${
    Array.from(groups.subarray(0, 4), (g) => g.toString(16)).join(":")
  }::/64`;
}

/**
 * `ratePerSecond` as an access policy, so that the server refuses the
 * excess in its accept loop, before the `accepted` line and before TLS:
 * a token bucket per source, the table bounded (cleared past 65536
 * sources: at worst one more burst per source in a spoofing flood).
 */
class ConnectionRate implements AccessPolicy {
  readonly perSecond: number;
  readonly #inner?: AccessPolicy;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  /** The peer and source the last call refused for its rate, if it did. */
  refused?: { peer: string; source: string };

  /** Whether the last call refused for the rate (the stats' `rate`). */
  get overRate(): boolean {
    return this.refused !== undefined;
  }

  constructor(perSecond: number, inner?: AccessPolicy) {
    this.perSecond = perSecond;
    this.#inner = inner;
  }

  allows(addr: Deno.Addr): boolean {
    this.refused = undefined;
    if (this.#inner && !this.#inner.allows(addr)) return false;
    const source = sourceOf(addr);
    if (source === undefined) return true;
    const now = performance.now();
    let bucket = this.#buckets.get(source);
    if (!bucket) {
      if (this.#buckets.size >= 65536) this.#buckets.clear();
      bucket = { tokens: this.perSecond, at: now };
      this.#buckets.set(source, bucket);
    } else {
      bucket.tokens = Math.min(
        this.perSecond,
        bucket.tokens + (now - bucket.at) * this.perSecond / 1000,
      );
      bucket.at = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens--;
      return true;
    }
    this.refused = { peer: formatAddr(addr), source };
    return false;
  }

  /**
   * The server logs what an access policy refuses as `refused PEER: not
   * allowed` (rate-limited: a line a second, the rest counted); this says
   * why instead, for the refusal just made.
   */
  explain(line: string): string {
    const refused = this.refused;
    this.refused = undefined;
    if (!refused || !line.includes(refused.peer)) return line;
    // `refused PEER: not allowed`, or with `--accept-proxy` the closing
    // line of the connection whose header named PEER.
    const end = [
      ": not allowed",
      ": not allowed (the address in its PROXY header)",
    ].find((end) => line.endsWith(end));
    if (end === undefined) return line;
    return `${
      line.slice(0, -end.length)
    }: over ${this.perSecond} new connections/s from ${refused.source} (--rate)`;
  }
}

/** The program's name for log lines: its last path component. */
function programName(program: string): string {
  return escapeControlChars(program.slice(program.lastIndexOf("/") + 1));
}

/**
 * The exec service for {@linkcode serve}: runs `spec.program` for each
 * stream connection (see `runProgram`). `running` holds each program's
 * run until it is reaped; aborting `stop` ends every program.
 *
 * @example
 * ```ts
 * import { execService } from "./exec.ts";
 *
 * const service = execService({ program: "cat" });
 * if (service.name !== "exec") throw new Error(service.name);
 * ```
 */
export function execService(
  spec: ProgramSpec,
  options: {
    log?: Log;
    label?: string;
    running?: Set<Promise<unknown>>;
    stop?: AbortSignal;
  } = {},
): Service {
  const log = options.log ?? stderrLog;
  const prefix = options.label ? `${options.label}: ` : "";
  const name = programName(spec.program);
  const refused = new FloodLog(log, `${prefix}refused`);
  // The stats' service: inetd's `NAME/tcp` is `NAME`.
  const programs = new ProgramMetrics({
    service: options.label?.replace(/\/(tcp|unix)$/, "") ?? "exec",
  });
  const killAfterMs = spec.killAfterMs ?? DEFAULT_KILL_AFTER_MS;
  return {
    name: "exec",
    defaultPort: EXEC_PORT,
    // The program's pidfd and the server's ends of its three pipes.
    descriptorsPerConnection: 4,
    async stream(conn, context) {
      const run = runProgram(
        conn,
        context,
        spec,
        stderrLogTo((line) => log(prefix + line), context.peer, name),
        options.stop,
        programs,
      );
      options.running?.add(run);
      try {
        const outcome = await run;
        const line = outcomeLine(context.peer, name, outcome, killAfterMs);
        if (line) log(prefix + line);
      } catch (error) {
        if (!(error instanceof SpawnError)) throw error;
        refused.event(`${context.peer}: ${escapeControlChars(error.message)}`);
      } finally {
        options.running?.delete(run);
      }
    },
  };
}

/**
 * Starts a server that runs `options.program` for each client (default
 * TCP on 0.0.0.0:8000, at most {@linkcode DEFAULT_EXEC_MAX_CONNECTIONS} at
 * once, at most {@linkcode defaultExecPerSource} of them from one source).
 * Checks first that the program can run (throws `ProgramError`) and that
 * `stderrLinesPerSecond` is a limit (throws `RangeError`);
 * `finished` resolves only once every program has been reaped.
 *
 * @example `cat` as an echo server on a free port
 * ```ts ignore
 * import { serveExec } from "./exec.ts";
 *
 * await using server = serveExec({ program: "cat", hostname: "127.0.0.1", port: 0 });
 * ```
 */
export function serveExec(options: ExecOptions): Server {
  const {
    program,
    args,
    env,
    clearEnv,
    stderrToClient,
    stderrLinesPerSecond,
    killAfterMs,
    ratePerSecond = DEFAULT_EXEC_RATE,
    ...serverOptions
  } = options;
  // The hint for a program it may not run gives the listen permission too.
  noteListenPermissions({ defaultPort: EXEC_PORT }, serverOptions);
  checkProgram(program, env);
  if (stderrLinesPerSecond !== undefined) {
    checkLinesPerSecond(stderrLinesPerSecond);
  }
  const log = options.log ?? stderrLog;
  const running = new Set<Promise<unknown>>();
  const stop = new AbortController();
  // A Unix socket's peers have no address to count, unless their PROXY
  // headers give them one.
  const addressed = (serverOptions.transport ?? "tcp") === "tcp" ||
    serverOptions.acceptProxy === true;
  const rate = ratePerSecond > 0 && addressed
    ? new ConnectionRate(ratePerSecond, serverOptions.access)
    : undefined;
  const maxConnections = serverOptions.maxConnections ??
    DEFAULT_EXEC_MAX_CONNECTIONS;
  const server = serve(
    execService(
      {
        program,
        args,
        env,
        clearEnv,
        stderrToClient,
        stderrLinesPerSecond,
        killAfterMs,
      },
      { log, label: options.label, running, stop: stop.signal },
    ),
    {
      ...serverOptions,
      maxConnections,
      perSource: serverOptions.perSource ??
        defaultExecPerSource(maxConnections),
      ...(rate && {
        access: rate,
        log: (line: string) => log(rate.explain(line)),
      }),
    },
  );
  // The server stops waiting for handlers a moment after closing their
  // connections; a program told SIGTERM may take up to killAfterMs more,
  // and must be reaped before the process exits (else it is orphaned).
  // Closing its connection ends a program; should one still run, it is
  // ended here all the same.
  const finished = server.finished.then(async () => {
    if (running.size > 0) stop.abort();
    while (running.size > 0) await Promise.allSettled([...running]);
  });
  const shutdown = (options?: ShutdownOptions) =>
    server.shutdown(options).then(() => finished);
  return {
    addr: server.addr,
    ready: server.ready,
    finished,
    socketClosed: server.socketClosed,
    shutdown,
    reloadTls: () => server.reloadTls?.() ?? Promise.resolve(false),
    [Symbol.asyncDispose]: shutdown,
  };
}

/** `--env NAME=VALUE`: a name without `=` or NUL, any value. */
function envAssignment(text: string, name: string): [string, string] {
  const at = text.indexOf("=");
  if (at <= 0 || text.includes("\0")) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected NAME=VALUE`,
    );
  }
  return [text.slice(0, at), text.slice(at + 1)];
}

const {
  udp: _udp,
  unixpacket: _unixpacket,
  "udp-rate": _udpRate,
  "allow-low-ports": _allowLowPorts,
  ...SERVER_FLAGS
} = serverFlags({ port: EXEC_PORT });

const FLAGS = {
  env: {
    arg: "NAME=VALUE",
    help: "add NAME=VALUE to the program's environment (repeatable)",
    multiple: true,
    parse: (text: string, name: string) => [envAssignment(text, name)],
  } as Flag<[string, string][], false>,
  "clear-env": flag.boolean(
    "start the program's environment empty: only --env and the\nconnection's variables (not even PATH)",
  ),
  "stderr-to-client": flag.boolean(
    "send the program's stderr to the client, not to the log",
  ),
  "stderr-rate": flag.integer(
    "N",
    "log at most N lines a second of each program's stderr; the\nrest are counted, once a second {default}",
    {
      min: 0,
      max: 1_000_000,
      shown: `${DEFAULT_STDERR_LINES_PER_SECOND}; 0: no limit`,
    },
  ),
  "kill-after": flag.seconds(
    "S",
    "once its client is gone, SIGTERM the program, then SIGKILL\nafter S seconds {default}",
    { default: DEFAULT_KILL_AFTER_MS },
  ),
  rate: flag.integer(
    "N",
    "TCP (--unix: with --accept-proxy): at most N new connections\na second from one address; more are closed at once\n{default}",
    { min: 0, max: 1_000_000, shown: `${DEFAULT_EXEC_RATE}; 0: no limit` },
  ),
  ...SERVER_FLAGS,
  "max-connections": {
    ...SERVER_FLAGS["max-connections"],
    shownDefault: String(DEFAULT_EXEC_MAX_CONNECTIONS),
  },
  "per-source": {
    ...SERVER_FLAGS["per-source"],
    help:
      "TCP: most programs at once for one address, an IPv6 /64\ncounting as one; more are closed at once {default}",
    shownDefault: `${
      defaultExecPerSource(DEFAULT_EXEC_MAX_CONNECTIONS)
    }, 1/${SOURCES_TO_FILL} of\n--max-connections; 0: no limit`,
  },
};

const USAGE = `usage: exec.ts [options] -- PROGRAM [ARGS...]

Runs PROGRAM for each client with the connection on its stdin and stdout,
as tcpserver, ncat -e and socat EXEC do (no shell; ARGS as given):

  deno run --allow-net=0.0.0.0:${EXEC_PORT} --allow-run=cat servers/exec.ts -- cat

${flagsHelp(FLAGS)}

Environment: the server's (none with --clear-env), then each --env, then
the connection's, as tcpserver names them: PROTO=TCP, TCPLOCALIP,
TCPLOCALPORT, TCPREMOTEIP, TCPREMOTEPORT (IPv4-mapped shown as IPv4); an
IPv6 client: PROTO=TCP6 and each again as TCP6LOCALIP... TCP6REMOTEPORT;
--unix: PROTO=UNIX, UNIXLOCALPATH, UNIXLOCALPID. No name lookups. With
--accept-proxy: the client and the address it reached, from the header.

Life cycle: the client's EOF closes the program's stdin; the program
closing stdout half-closes the connection; its exit ends the connection
once its output is sent. A client that goes (reset, --idle-timeout,
shutdown) gets its program SIGTERM, then SIGKILL after --kill-after; a
reset is noticed within 2 s even while the program reads nothing. A client
that closes without a reset looks like one that half-closed: a program
that then neither reads nor writes runs until it ends (see --idle-timeout).

Permissions: --allow-net=HOST:PORT (for --unix PATH: --allow-net=unix:PATH
--allow-read=PATH --allow-write=PATH) and --allow-run=PROGRAM; a PROGRAM
given by path also --allow-read=PROGRAM (checked at start); for --tls,
--allow-read=CERT,KEY (and the --client-ca FILE).`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
      positionals: ["PROGRAM", "ARGS"],
      min: 1,
      max: Infinity,
    });
    const { env, rate, ...server } = values;
    const options: ExecOptions = {
      ...serverOptionsFromFlags(server),
      program: positionals[0],
      args: positionals.slice(1),
      env: Object.fromEntries(env ?? []),
      clearEnv: values["clear-env"],
      stderrToClient: values["stderr-to-client"],
      stderrLinesPerSecond: values["stderr-rate"],
      killAfterMs: values["kill-after"],
    };
    if (options.stderrToClient && options.stderrLinesPerSecond !== undefined) {
      throw new UsageError(
        "--stderr-rate limits what is logged; with --stderr-to-client nothing is",
      );
    }
    if (rate !== undefined) {
      if (options.transport === "unix" && !options.acceptProxy) {
        throw new UsageError(
          "--rate applies to TCP, or --unix with --accept-proxy, only",
        );
      }
      options.ratePerSecond = rate;
    }
    await runServers([{ server: serveExec(options) }]);
  });
}
