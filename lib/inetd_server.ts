/**
 * Keeping the services of an `inetd.conf` running across reloads, as inetd
 * does on SIGHUP: {@linkcode serveInetdConf} starts a server per line
 * (what runs there is its `start` function's business: `servers/inetd.ts`
 * gives the internal services and programs), and its `reload()` starts
 * the new lines, stops the removed ones and leaves the unchanged ones
 * bound. {@linkcode runInetdConf} is the script's life around it: the
 * file loaded, `listening on` lines, SIGHUP, SIGINT and SIGTERM.
 *
 * @module
 */

import { formatAddr } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import {
  InetdConfError,
  type InetdService,
  loadInetdConf,
} from "./inetd_conf.ts";
import { type Log, stderrLog } from "./log.ts";
import { describeError } from "./main.ts";
import { listeningLine } from "./server.ts";
import { reloadTlsFiles } from "./server_cli.ts";
import type { Server } from "./server_options.ts";
import { dumpStats } from "./stats_dump.ts";

/**
 * How long a reload goes on trying to bind a line whose address is in
 * use, in ms, waiting 5 ms then twice as long each time. A removed line's
 * socket is closed before the new lines start, but its port may stay
 * taken a moment longer: a program started for a connection just before
 * holds a copy of the listening socket from its fork until its exec has
 * closed it (the server goes on as soon as the exec begins; on a busy
 * machine the rest can take milliseconds), and another process may be
 * letting the port go.
 */
export const RELOAD_BIND_RETRY_MS = 1000;
const RELOAD_BIND_FIRST_WAIT_MS = 5;

/**
 * Starts the server for one line; `all` is every line of the file being
 * started or reloaded (an internal UDP service must not answer the
 * others). Throws when it cannot bind.
 */
export type StartInetdLine = (
  service: InetdService,
  all: readonly InetdService[],
) => Server;

/** Options for {@linkcode serveInetdConf}. */
export interface InetdConfServerOptions {
  /** Starts each line's server. */
  start: StartInetdLine;
  /** The file's name, for error and log lines. Default `inetd.conf`. */
  file?: string;
  /** Where the reload lines go. Default {@linkcode stderrLog}. */
  log?: Log;
}

/** One running line of an `inetd.conf`. */
export interface InetdConfSocket {
  /** The line as parsed (its latest version, after reloads). */
  service: InetdService;
  /** The server on its socket. */
  server: Server;
}

/** A running `inetd.conf`: its sockets, and a way to change them. */
export interface InetdConfServer extends Server {
  /** The services running now. */
  readonly sockets: readonly InetdConfSocket[];
  /**
   * Runs `services` instead: the removed lines stop listening (their
   * connections in flight go on until they end, as inetd's children do;
   * a shutdown then gives them the grace period), the
   * new ones start once those sockets are closed (so a port can move from
   * one line to another), the unchanged ones are left alone (not
   * rebound). A new line whose address is in use is tried again for
   * {@linkcode RELOAD_BIND_RETRY_MS}. Logs one line per change (`stopped
   * listening on ...`, `listening on ...`, an `error:` line for a new one
   * that cannot start, the others starting all the same), then `reloaded
   * FILE: A added, R removed, U unchanged`, with `, F failed` when lines
   * could not start: they are not listening, and the next reload tries
   * them again.
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

/** Whether `error`, or an error it was caused by, is an address in use. */
function isAddrInUse(error: unknown): boolean {
  for (let e = error; e instanceof Error; e = e.cause) {
    if (e instanceof Deno.errors.AddrInUse) return true;
  }
  return false;
}

/**
 * Why `service` found its port taken, when a line on the other IP version
 * holds it: an IPv6 socket on `::` takes IPv4 too here (inetd sets
 * IPV6_V6ONLY; Deno cannot).
 */
function dualStackHint(
  service: InetdService,
  all: readonly InetdService[],
  error: Error,
): string {
  const anyAddress = ["0.0.0.0", "::"];
  const other = all.find((s) =>
    s !== service && s.transport === service.transport &&
    s.port === service.port && anyAddress.includes(s.hostname) &&
    anyAddress.includes(service.hostname) && s.hostname !== service.hostname
  );
  if (!other || !(error.cause instanceof Deno.errors.AddrInUse)) return "";
  return ` (by line ${other.line}: on this host a socket on [::] takes IPv4 too, and Deno cannot make it IPv6-only; the ${service.transport}6 line alone serves both)`;
}

/**
 * Starts a server per line of an `inetd.conf`, all bound before it
 * returns; if one cannot bind, those already bound are closed and an
 * {@linkcode InetdConfError} naming its line is thrown. `shutdown()` stops
 * every server, those a reload removed included.
 *
 * @example A line's server that answers `hi`, then a reload that removes it
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseInetdConf } from "./inetd_conf.ts";
 * import { serveInetdConf } from "./inetd_server.ts";
 * import { serve } from "./server.ts";
 *
 * const services = parseInetdConf("127.0.0.1:7 stream tcp nowait root internal echo\n");
 * const hi = {
 *   name: "hi",
 *   defaultPort: 0,
 *   async stream(conn: Deno.Conn) {
 *     await conn.write(new TextEncoder().encode("hi"));
 *   },
 * };
 * await using inetd = serveInetdConf(services, {
 *   start: (line) => serve(hi, { hostname: line.hostname, port: 0, log: () => {} }),
 *   log: () => {},
 * });
 * assertEquals(inetd.sockets.length, 1);
 * await inetd.reload([]);
 * assertEquals(inetd.sockets.length, 0);
 * ```
 */
export function serveInetdConf(
  services: readonly InetdService[],
  options: InetdConfServerOptions,
): InetdConfServer {
  const { log = stderrLog } = options;
  const file = escapeControlChars(options.file ?? "inetd.conf");
  /** Removed by a reload, their connections still going on. */
  const retiring = new Set<Server>();
  let closing = false;
  let resolveSocketClosed!: () => void;
  const socketClosed = new Promise<void>((resolve) =>
    resolveSocketClosed = resolve
  );
  let lastAddr: Deno.Addr = { transport: "tcp", hostname: "0.0.0.0", port: 0 };
  const start: StartInetdLine = (service, all) =>
    startLineOf(file, options.start, service, all);
  const running = startEveryLine(services, start);
  const sockets = () => [...running.values()];
  const ready = Promise.all(sockets().map(({ server }) => server.ready))
    .then(() => {});

  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);
  const shutdown = async () => {
    if (!closing) {
      closing = true;
      const stopped = shutdownEveryLine(running, retiring);
      stopped.socketClosed.then(resolveSocketClosed);
      await stopped.finished;
      resolveFinished();
    }
    return finished;
  };

  const reload = async (next: readonly InetdService[]) => {
    if (closing) return;
    const keys = new Map(next.map((s) => [serviceKey(s), s]));
    const removed = await retireRemovedLines(running, keys, retiring, log);
    const started = await startAddedLines(running, keys, {
      start: (service) =>
        startAddedLine(service, next, start, () => closing, log),
      log,
    });
    if (!started) return; // Shut down meanwhile: no reload line.
    const { added, failed } = started;
    log(
      `reloaded ${file}: ${added} added, ${removed} removed, ${
        running.size - added
      } unchanged${failed > 0 ? `, ${failed} failed` : ""}`,
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
    socketClosed,
    shutdown,
    reload,
    [Symbol.asyncDispose]: shutdown,
  };
}

/**
 * Starts `service`'s server with `start`; when it cannot, throws an
 * {@linkcode InetdConfError} naming its line in `file`, without the hints
 * that name flags a line does not have.
 */
function startLineOf(
  file: string,
  start: StartInetdLine,
  service: InetdService,
  all: readonly InetdService[],
): Server {
  try {
    return start(service, all);
  } catch (error) {
    if (!(error instanceof Error)) throw error;
    // bind.ts's hints name --port, which a line of a file does not have.
    const reason = describeError(error)
      .replace(/ \(pick another port with --port\)$/, "")
      .replace(/; as a user.*$/, "");
    throw new InetdConfError(
      file,
      service.line,
      `${service.label}: ${reason}${dualStackHint(service, all, error)}`,
      error,
    );
  }
}

/**
 * Starts every line of `services`, by {@linkcode serviceKey}; if one
 * cannot start, those started are shut down and its error thrown.
 */
function startEveryLine(
  services: readonly InetdService[],
  start: StartInetdLine,
): Map<string, InetdConfSocket> {
  const running = new Map<string, InetdConfSocket>();
  for (const service of services) {
    try {
      running.set(serviceKey(service), {
        service,
        server: start(service, services),
      });
    } catch (error) {
      for (const { server } of running.values()) server.shutdown();
      throw error;
    }
  }
  return running;
}

/**
 * Shuts down every running line and every retired one (which get the
 * grace period now, as the others do); `socketClosed` settles once all
 * their sockets are closed, `finished` once all have stopped.
 */
function shutdownEveryLine(
  running: Map<string, InetdConfSocket>,
  retiring: ReadonlySet<Server>,
): { socketClosed: Promise<unknown>; finished: Promise<unknown> } {
  const servers = [...running.values()].map(({ server }) => server);
  const socketClosed = Promise.all(
    [...servers, ...retiring].map((server) => server.socketClosed),
  );
  const stopping = servers.map((server) => server.shutdown());
  running.clear();
  const finished = Promise.all([
    ...stopping,
    ...[...retiring].map((server) => server.shutdown()),
  ]);
  return { socketClosed, finished };
}

/**
 * Stops the running lines a reload's `keys` no longer hold (one `stopped
 * listening` line each), their connections going on in `retiring`, and
 * resolves with how many once their sockets are closed for real: a line
 * that now runs something else on a removed line's port can bind it only
 * then, not when close() returns, nor a timer tick later (an accept still
 * pending holds it for as long as the event loop takes to cancel it).
 */
async function retireRemovedLines(
  running: Map<string, InetdConfSocket>,
  keys: ReadonlyMap<string, InetdService>,
  retiring: Set<Server>,
  log: Log,
): Promise<number> {
  const removedSockets: Promise<void>[] = [];
  for (const [key, { service, server }] of running) {
    if (keys.has(key)) continue;
    running.delete(key);
    log(`stopped listening on ${formatAddr(server.addr)} (${service.label})`);
    retiring.add(server);
    server.shutdown({ gracePeriodMs: Infinity }).finally(() =>
      retiring.delete(server)
    );
    removedSockets.push(server.socketClosed);
  }
  await Promise.all(removedSockets);
  return removedSockets.length;
}

/** How a reload starts the lines it adds, and where it logs. */
interface AddedLineStarter {
  /** The line's server, or `undefined` when a shutdown came meanwhile. */
  start(service: InetdService): Promise<Server | undefined>;
  log: Log;
}

/**
 * Starts, in the file's order, the lines of a reload's `keys` not running
 * yet (one `listening on` or `error:` line each) and gives the unchanged
 * ones their latest version; `undefined` when a shutdown came meanwhile.
 */
async function startAddedLines(
  running: Map<string, InetdConfSocket>,
  keys: ReadonlyMap<string, InetdService>,
  { start, log }: AddedLineStarter,
): Promise<{ added: number; failed: number } | undefined> {
  let added = 0, failed = 0;
  for (const [key, service] of keys) {
    const kept = running.get(key);
    if (kept) {
      kept.service = service;
      continue;
    }
    try {
      const server = await start(service);
      if (!server) return undefined;
      running.set(key, { service, server });
      added++;
      log(listeningLine(server.addr, service.label));
    } catch (error) {
      failed++;
      log(
        `error: ${
          describeError(error)
        }; not listening (the next reload tries again)`,
      );
    }
  }
  return { added, failed };
}

/**
 * Starts a line added by a reload, trying again while its address is in
 * use (for {@linkcode RELOAD_BIND_RETRY_MS}); `undefined` when a
 * shutdown came meanwhile (`closing`).
 */
async function startAddedLine(
  service: InetdService,
  all: readonly InetdService[],
  start: StartInetdLine,
  closing: () => boolean,
  log: Log,
): Promise<Server | undefined> {
  for (let waitMs = RELOAD_BIND_FIRST_WAIT_MS, waitedMs = 0;; waitMs *= 2) {
    if (closing()) return undefined;
    try {
      const server = start(service, all);
      await server.ready;
      if (!closing()) return server;
      server.shutdown();
      return undefined;
    } catch (error) {
      if (!isAddrInUse(error) || waitedMs >= RELOAD_BIND_RETRY_MS) {
        throw error;
      }
      if (waitedMs === 0) {
        log(
          `${describeError(error)}; trying again for up to ${
            RELOAD_BIND_RETRY_MS / 1000
          } s`,
        );
      }
    }
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    waitedMs += waitMs;
  }
}

/**
 * Runs the `inetd.conf` at `file` as a script does (see
 * `loadInetdConf`): every line bound, then one `listening on ADDRESS
 * (SERVICE/PROTOCOL)` line each; SIGINT or SIGTERM stops all (resolving
 * once all have stopped); SIGHUP reads the file again and reloads, or, if
 * the new file is wrong, logs its one `error:` line and keeps what runs;
 * then the same SIGHUP reads the TLS files again (`reloadTlsFiles`).
 *
 * @example
 * ```ts ignore
 * import { runInetdConf } from "./inetd_server.ts";
 *
 * await runInetdConf("inetd.conf", { start: (line) => startLine(line) });
 * ```
 */
export async function runInetdConf(
  file: string,
  options: InetdConfServerOptions,
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
      log(`SIGHUP: reading ${escapeControlChars(file)}`);
      let services: InetdService[] | undefined;
      try {
        services = loadInetdConf(file);
      } catch (error) {
        log(
          `error: ${describeError(error)}; keeping the running configuration`,
        );
      }
      if (services) await inetd.reload(services);
      // One SIGHUP reads the TLS files too (the lines a reload started
      // included), whatever became of the file.
      await reloadTlsFiles(inetd.sockets.map(({ server }) => server), log);
    });
  };
  const stop = () => inetd.shutdown();
  const signals: [Deno.Signal, () => void][] = [
    ["SIGINT", stop],
    ["SIGTERM", stop],
    ["SIGHUP", reload],
    ["SIGUSR2", () => dumpStats(log)],
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
