/**
 * The stats endpoint (`--stats ADDR`): an HTTP server, on `Deno.serve`,
 * that shows the process's metrics (`metrics.ts`, `server_metrics.ts`):
 *
 * - `GET /metrics`: Prometheus's text exposition format, to scrape;
 * - `GET /stats.json`: the same figures as JSON;
 * - `GET /`: a page that polls `/stats.json` and draws the rates
 *   (`stats_page.ts`, one self-contained file).
 *
 * It has an access list of its own (`--stats-allow`; loopback only
 * without one) and is never on by default. Every server of a process
 * that names the same address shares one endpoint (inetd's services),
 * which stops once the last of them has.
 *
 * @module
 */

import type { AccessPolicy } from "./access.ts";
import { bind } from "./bind.ts";
import { type Endpoint, formatAddr, formatEndpoint } from "./endpoint.ts";
import { type Log, stderrLog } from "./log.ts";
import {
  type MetricsRegistry,
  processMetrics,
  toPrometheusText,
} from "./metrics.ts";
import type { Server, ShutdownOptions } from "./server_options.ts";
import { STATS_PAGE } from "./stats_page.ts";
// Registers the process's own figures (memory, descriptors).
import "./server_metrics.ts";

/** Where and for whom the stats endpoint serves. */
export interface StatsOptions {
  /** A TCP address (`tcp://127.0.0.1:9100`) or a Unix socket (`unix:PATH`). */
  listen: Endpoint;
  /**
   * Who may read the stats over TCP. Default: loopback clients only
   * (127.0.0.0/8, ::1); a Unix socket's file mode is its access control.
   */
  access?: AccessPolicy;
  /** The figures. Default: the process's ({@linkcode processMetrics}). */
  registry?: MetricsRegistry;
  /** Where its `stats on` line goes. Default stderr. */
  log?: Log;
}

/** The content type of Prometheus's text format. */
export const PROMETHEUS_CONTENT_TYPE =
  "text/plain; version=0.0.4; charset=utf-8";

/** The page's rules: its own inline script and style, and fetches home. */
const PAGE_POLICY =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

function isLoopback(addr: Deno.Addr): boolean {
  if (!("hostname" in addr)) return true;
  const host = addr.hostname.toLowerCase();
  return host === "::1" || host.startsWith("127.") ||
    host.startsWith("::ffff:127.");
}

/**
 * Answers one request to the stats endpoint: `/metrics`, `/stats.json`,
 * `/`; 403 for a client `access` refuses, 404 and 405 otherwise.
 *
 * @example
 * ```ts
 * import { assertEquals, assertStringIncludes } from "@std/assert";
 * import { MetricsRegistry } from "./metrics.ts";
 * import { statsResponse } from "./stats_server.ts";
 *
 * const registry = new MetricsRegistry();
 * registry.counter("demo_total", "Demo.").value = 3;
 * const client = { transport: "tcp", hostname: "127.0.0.1", port: 5000 } as const;
 * const response = statsResponse(new Request("http://x/metrics"), client, { registry });
 * assertStringIncludes(await response.text(), "demo_total 3\n");
 * const far = { ...client, hostname: "192.0.2.1" };
 * assertEquals(statsResponse(new Request("http://x/metrics"), far, { registry }).status, 403);
 * ```
 */
export function statsResponse(
  request: Request,
  client: Deno.Addr,
  options: Pick<StatsOptions, "access" | "registry"> = {},
): Response {
  const allowed = options.access
    ? !("hostname" in client) || options.access.allows(client)
    : isLoopback(client);
  if (!allowed) return text(403, "forbidden\n");
  if (request.method !== "GET" && request.method !== "HEAD") {
    return text(405, "method not allowed\n", { allow: "GET, HEAD" });
  }
  const registry = options.registry ?? processMetrics;
  switch (new URL(request.url).pathname) {
    case "/metrics":
      return text(200, toPrometheusText(registry.snapshot()), {
        "content-type": PROMETHEUS_CONTENT_TYPE,
      });
    case "/stats.json":
      return text(
        200,
        JSON.stringify({ time: Date.now(), metrics: registry.snapshot() }),
        { "content-type": "application/json" },
      );
    case "/":
      return text(200, STATS_PAGE, {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": PAGE_POLICY,
      });
    default:
      return text(404, "not found: try /, /metrics or /stats.json\n");
  }
}

function text(
  status: number,
  body: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(body, {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "cache-control": "no-store",
      ...headers,
    },
  });
}

/** A running stats endpoint: where it listens, and how to stop it. */
export interface StatsServer extends AsyncDisposable {
  /** The bound address (for port 0, the real port). */
  readonly addr: Deno.Addr;
  /** Resolves once it has stopped. */
  readonly finished: Promise<void>;
  /** Stops it; resolves like `finished`. */
  shutdown(): Promise<void>;
}

/**
 * Serves the stats at `options.listen`, logging `stats on http://ADDR/`
 * (or `stats on PATH`) once bound. Throws `ListenError` when it cannot
 * bind.
 *
 * @example
 * ```ts
 * import { serveStats } from "./stats_server.ts";
 *
 * await using stats = serveStats({
 *   listen: { transport: "tcp", hostname: "127.0.0.1", port: 0 },
 *   log: () => {},
 * });
 * const { port } = stats.addr as Deno.NetAddr;
 * const response = await fetch(`http://127.0.0.1:${port}/metrics`);
 * await response.text();
 * ```
 */
export function serveStats(options: StatsOptions): StatsServer {
  const log = options.log ?? stderrLog;
  const { listen } = options;
  const handler = (request: Request, info: Deno.ServeHandlerInfo<Deno.Addr>) =>
    statsResponse(request, info.remoteAddr, options);
  const onListen = (addr: Deno.Addr) =>
    log(
      "path" in addr
        ? `stats on ${addr.path}`
        : `stats on http://${formatAddr(addr)}/`,
    );
  let server: Deno.HttpServer<Deno.Addr>;
  if (listen.transport === "unix") {
    server = bind(
      () => Deno.serve({ path: listen.path, onListen, handler }),
      listen.path,
    );
  } else if (listen.transport === "tcp") {
    server = bind(
      () =>
        Deno.serve({
          hostname: listen.hostname,
          port: listen.port,
          onListen,
          handler,
        }),
      listen.hostname,
      listen.port,
    );
  } else {
    throw new TypeError(
      `the stats are served over tcp:// or unix:, not ${
        formatEndpoint(listen)
      }`,
    );
  }
  const shutdown = () => server.shutdown().then(() => server.finished);
  return {
    addr: server.addr,
    finished: server.finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

/** The endpoints shared by this process's servers, by address. */
const shared = new Map<string, { stats: StatsServer; users: number }>();

/**
 * `server`, with the stats endpoint `options` name served while it runs:
 * servers of one process that name the same address share one endpoint,
 * which stops once the last of them has (`finished` waits for it). Without
 * `options`, `server` itself.
 *
 * @example
 * ```ts
 * import { serveEcho } from "../servers/echo.ts";
 * import { withStats } from "./stats_server.ts";
 *
 * await using server = withStats(
 *   serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} }),
 *   { listen: { transport: "tcp", hostname: "127.0.0.1", port: 0 }, log: () => {} },
 * );
 * ```
 */
export function withStats(server: Server, options?: StatsOptions): Server {
  if (!options) return server;
  const key = formatEndpoint(options.listen);
  let entry = shared.get(key);
  if (!entry) {
    try {
      entry = { stats: serveStats(options), users: 0 };
    } catch (error) {
      server.shutdown();
      throw error;
    }
    // Port 0 binds a new port each time: share only a named one.
    if (!("port" in options.listen) || options.listen.port !== 0) {
      shared.set(key, entry);
    }
  }
  const held = entry;
  held.users++;
  const finished = server.finished.then(() => {
    if (--held.users > 0) return;
    if (shared.get(key) === held) shared.delete(key);
    return held.stats.shutdown();
  });
  const shutdown = (options?: ShutdownOptions) =>
    server.shutdown(options).then(() => finished);
  return {
    get addr() {
      return server.addr;
    },
    ready: server.ready,
    socketClosed: server.socketClosed,
    finished,
    shutdown,
    ...(server.reloadTls && { reloadTls: () => server.reloadTls!() }),
    [Symbol.asyncDispose]: shutdown,
  };
}
