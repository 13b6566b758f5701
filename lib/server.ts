/**
 * The server life cycle every server here shares, started by one call:
 * {@linkcode serve} binds a {@linkcode Service} on the transport its
 * options name and returns a {@linkcode Server} shaped like `Deno.serve`'s
 * (`addr`, `finished`, `shutdown()`, `[Symbol.asyncDispose]`). Where each
 * piece lives: what it takes and returns, `server_options.ts`; binding,
 * `bind.ts`; the accept loop, limits, TLS and idle timeout,
 * `stream_server.ts`; datagrams and their guards, `datagram_server.ts`;
 * `--workers` threads, `workers.ts`.
 *
 * @module
 */

import { DatagramServer } from "./datagram_server.ts";
import { descriptorShortfall } from "./descriptors.ts";
import { formatAddr } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { stderrLog } from "./log.ts";
import {
  DEFAULT_MAX_CONNECTIONS,
  type Server,
  type ServerOptions,
  type Service,
  type ShutdownOptions,
} from "./server_options.ts";
import { withStats } from "./stats_server.ts";
import { StreamServer } from "./stream_server.ts";
import { serveGroup, workerPlace } from "./workers.ts";

/**
 * Starts `service` on the transport `options` name: the one entry point the
 * servers in `servers/` build on. Binding TCP and UDP happens before it
 * returns (so `addr` holds the real port); errors throw.
 *
 * @example An in-process echo server on a free port
 * ```ts
 * import { serve } from "./server.ts";
 * import { silentLog } from "./log.ts";
 *
 * await using server = serve({
 *   name: "echo",
 *   defaultPort: 7,
 *   async stream(conn) {
 *     const buffer = new Uint8Array(1024);
 *     for (let n; (n = await conn.read(buffer)) !== null;) {
 *       await conn.write(buffer.subarray(0, n));
 *     }
 *   },
 * }, { hostname: "127.0.0.1", port: 0, log: silentLog });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("hi"));
 * const reply = new Uint8Array(2);
 * await conn.read(reply);
 * ```
 */
export function serve(service: Service, options: ServerOptions = {}): Server {
  // A worker's figures stay in its thread: `--stats` is refused with
  // `--workers` (see `serverOptionsFromFlags`).
  const stats = options.stats && !workerPlace()
    ? { log: options.log, ...options.stats }
    : undefined;
  return withStats(startServer(service, options), stats);
}

function startServer(service: Service, options: ServerOptions): Server {
  const transport = options.transport ?? "tcp";
  if (transport === "tcp" || transport === "unix") {
    if (!service.stream) {
      throw new TypeError(`${service.name} does not serve ${transport}`);
    }
    if (!workerPlace()) checkDescriptors(service, options);
    if (transport === "tcp" && (options.workers ?? 1) > 1) {
      return serveGroup(service, service.stream, options);
    }
    return new StreamServer(service, service.stream, transport, options);
  }
  if (!service.datagram) {
    throw new TypeError(`${service.name} does not serve ${transport}`);
  }
  return new DatagramServer(service, service.datagram, transport, options);
}

/**
 * Says, in one line at start, when the process's descriptor limit cannot
 * hold `maxConnections` connections of this service (see
 * `descriptors.ts`); once per process, not per worker.
 */
function checkDescriptors(service: Service, options: ServerOptions): void {
  const tls = options.tls !== undefined;
  const extra = service.descriptorsPerConnection ?? 0;
  const line = descriptorShortfall({
    maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    perConnection: 1 + (tls ? 1 : 0) + extra,
    what: [
      ...(tls ? ["TLS"] : []),
      ...(extra > 0 ? [`${service.name}'s own ${extra}`] : []),
    ].join(", ") || undefined,
  });
  if (line) {
    (options.log ?? stderrLog)(
      options.label ? `${options.label}: ${line}` : line,
    );
  }
}

/**
 * Groups servers so they stop together: one `shutdown()` stops all,
 * `finished` resolves when all have, and `addr` is the first one's.
 *
 * @example
 * ```ts
 * import { combineServers, serve } from "./server.ts";
 * import { silentLog } from "./log.ts";
 *
 * const service = { name: "discard", defaultPort: 9, async stream() {}, datagram: () => null };
 * await using servers = combineServers([
 *   serve(service, { hostname: "127.0.0.1", port: 0, log: silentLog }),
 * ]);
 * ```
 */
export function combineServers(servers: Server[]): Server {
  if (servers.length === 0) throw new TypeError("no servers to combine");
  const finished = Promise.all(servers.map((s) => s.finished)).then(() => {});
  const shutdown = (options?: ShutdownOptions) =>
    Promise.all(servers.map((s) => s.shutdown(options))).then(() => {});
  return {
    addr: servers[0].addr,
    ready: Promise.all(servers.map((s) => s.ready)).then(() => {}),
    finished,
    socketClosed: Promise.all(servers.map((s) => s.socketClosed)).then(
      () => {},
    ),
    shutdown,
    reloadTls: () =>
      Promise.all(servers.map((s) => s.reloadTls?.())).then((done) =>
        done.some(Boolean)
      ),
    [Symbol.asyncDispose]: shutdown,
  };
}

/**
 * The line a server logs once bound: `listening on 127.0.0.1:7`, with
 * `(echo/tcp)` after it when a process serves several sockets.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { listeningLine } from "./server.ts";
 *
 * assertEquals(listeningLine({ transport: "tcp", hostname: "::1", port: 7 }), "listening on [::1]:7");
 * assertEquals(
 *   listeningLine({ transport: "udp", hostname: "0.0.0.0", port: 7 }, "echo/udp"),
 *   "listening on 0.0.0.0:7 (echo/udp)",
 * );
 * ```
 */
export function listeningLine(addr: Deno.Addr, label?: string): string {
  return `listening on ${formatAddr(addr)}${
    label ? ` (${escapeControlChars(label)})` : ""
  }`;
}
