/**
 * Active health checks for a {@linkcode TargetPool}, as haproxy's `check
 * inter` and `tcp-check send`/`expect`: every `intervalMs` each target is
 * probed (connected to; with `send`, a line is written; with `expect`, the
 * answer must contain that text within the check's time), and the pool
 * counts the results: `fall` failures in a row mark a target down, `rise`
 * successes bring it back. Without an interval (passive health only) a
 * target the clients' connects marked down is still probed, every
 * {@linkcode DOWN_PROBE_INTERVAL_MS}, so it can come back.
 *
 * @module
 */

import { describeConnectFailure } from "./connect_error.ts";
import { formatSeconds } from "./units.ts";
import { closeQuietly, writeAll } from "./io.ts";
import type { SpliceConn } from "./splice.ts";
import { failureReason, type PoolTarget, type TargetPool } from "./targets.ts";

/** How often a down target is probed when no `--check-interval` is given, in ms. */
export const DOWN_PROBE_INTERVAL_MS = 2000;

/** The most of an answer a check reads looking for `expect`. */
export const MAX_CHECK_ANSWER_BYTES = 4096;

/** One probe of a target: resolves when it is healthy, rejects with why not. */
export type Probe = (target: PoolTarget, signal: AbortSignal) => Promise<void>;

/** Options for {@linkcode startHealthChecks}. */
export interface HealthCheckOptions {
  /** Probe every target this often, in ms; absent: only down targets, every {@linkcode DOWN_PROBE_INTERVAL_MS}. */
  intervalMs?: number;
  /** A probe that takes longer fails, in ms. */
  timeoutMs: number;
  /** What a probe does. */
  probe: Probe;
}

/** The running checks: `stop()` ends them (a server's shutdown). */
export interface HealthChecks {
  /** Stops probing; probes under way are abandoned. */
  stop(): void;
}

/** A probe that gave up: `no answer within 1 s`. */
class ProbeTimeout extends Error {
  constructor(timeoutMs: number) {
    super(`no answer within ${formatSeconds(timeoutMs)}`);
    this.name = "ProbeTimeout";
  }
}

/**
 * Starts probing `pool`'s targets as `options` say, reporting each result
 * to the pool (which logs every change of state). Returns the handle that
 * stops it.
 *
 * @example A target nobody listens on goes down after `fall` checks
 * ```ts
 * import { TargetPool } from "./targets.ts";
 * import { startHealthChecks, streamProbe } from "./health.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const port = listener.addr.port;
 * listener.close();
 * const lines: string[] = [];
 * const pool = new TargetPool(
 *   [{ endpoint: { transport: "tcp", hostname: "127.0.0.1", port } }],
 *   { fall: 2, log: (line) => lines.push(line) },
 * );
 * const checks = startHealthChecks(pool, {
 *   intervalMs: 20,
 *   timeoutMs: 1000,
 *   probe: streamProbe((target) => Deno.connect(target.endpoint as Deno.ConnectOptions)),
 * });
 * while (pool.targets[0].up) await new Promise((r) => setTimeout(r, 10));
 * checks.stop();
 * if (!lines[0].startsWith(`target 127.0.0.1:${port} down: connection refused (2 checks)`)) {
 *   throw new Error(lines[0]);
 * }
 * ```
 */
export function startHealthChecks(
  pool: TargetPool,
  options: HealthCheckOptions,
): HealthChecks {
  const running = new Set<PoolTarget>();
  const stopping = new AbortController();
  const check = async (target: PoolTarget) => {
    running.add(target);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), options.timeoutMs);
    const abort = () => controller.abort();
    stopping.signal.addEventListener("abort", abort);
    try {
      await options.probe(target, controller.signal);
      if (!stopping.signal.aborted) pool.succeeded(target, "check");
    } catch (error) {
      if (stopping.signal.aborted) return;
      pool.failed(
        target,
        controller.signal.aborted
          ? new ProbeTimeout(options.timeoutMs).message
          : failureReason(error),
        "check",
      );
    } finally {
      clearTimeout(timer);
      stopping.signal.removeEventListener("abort", abort);
      running.delete(target);
    }
  };
  const tick = () => {
    for (const target of pool.targets) {
      if (target.removed || running.has(target)) continue;
      if (options.intervalMs === undefined && target.up) continue;
      check(target);
    }
  };
  const timer = setInterval(
    tick,
    options.intervalMs ?? DOWN_PROBE_INTERVAL_MS,
  );
  // The server's listener keeps the process alive, not its checks.
  Deno.unrefTimer(timer);
  if (options.intervalMs !== undefined) tick();
  return {
    stop() {
      clearInterval(timer);
      stopping.abort();
    },
  };
}

/**
 * A stream probe: `dial` the target; with `send`, write it and CR LF;
 * with `expect`, read until the answer contains it (at most
 * {@linkcode MAX_CHECK_ANSWER_BYTES}), else fail saying what came.
 *
 * @example A line protocol's check
 * ```ts
 * import { streamProbe } from "./health.ts";
 *
 * const probe = streamProbe(
 *   (target) => Deno.connect(target.endpoint as Deno.ConnectOptions),
 *   { send: "PING", expect: "PONG" },
 * );
 * ```
 */
export function streamProbe(
  dial: (target: PoolTarget) => Promise<SpliceConn>,
  line: { send?: string; expect?: string } = {},
): Probe {
  const encoder = new TextEncoder();
  const request = line.send === undefined
    ? undefined
    : encoder.encode(`${line.send}\r\n`);
  return async (target, signal) => {
    let conn: SpliceConn;
    try {
      conn = await dial(target);
    } catch (error) {
      throw describeConnectFailure(error, target.name);
    }
    const close = () => closeQuietly(conn);
    if (signal.aborted) {
      close();
      throw new Error("aborted");
    }
    signal.addEventListener("abort", close, { once: true });
    try {
      if (request) await writeAll(conn, request);
      if (line.expect !== undefined) {
        await expectText(conn, line.expect);
      }
    } finally {
      signal.removeEventListener("abort", close);
      close();
    }
  };
}

/** Reads `conn` until what came contains `expect`; throws saying what came. */
async function expectText(conn: SpliceConn, expect: string): Promise<void> {
  const buffer = new Uint8Array(MAX_CHECK_ANSWER_BYTES);
  let length = 0;
  const decoder = new TextDecoder();
  while (length < buffer.length) {
    const n = await conn.read(buffer.subarray(length));
    if (n === null) break;
    length += n;
    if (decoder.decode(buffer.subarray(0, length)).includes(expect)) return;
  }
  const got = decoder.decode(buffer.subarray(0, length)).trim().slice(0, 40);
  throw new Error(
    length === 0
      ? `expected '${expect}', got nothing`
      : `expected '${expect}', got '${got}'`,
  );
}

/**
 * A UDP probe: send `send` (and CR LF) to the target from a socket of its
 * own and wait for an answer (containing `expect`, if given).
 *
 * @example
 * ```ts
 * import { datagramProbe } from "./health.ts";
 *
 * const probe = datagramProbe({ send: "PING", expect: "PONG" });
 * ```
 */
export function datagramProbe(line: { send: string; expect?: string }): Probe {
  const request = new TextEncoder().encode(`${line.send}\r\n`);
  return async (target, signal) => {
    if ("path" in target.endpoint) throw new TypeError("not a UDP target");
    const { hostname, port } = target.endpoint;
    const v6 = hostname.includes(":");
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname: v6 ? "::" : "0.0.0.0",
      port: 0,
    });
    const close = () => closeQuietly(socket);
    signal.addEventListener("abort", close, { once: true });
    try {
      await socket.send(request, { transport: "udp", hostname, port });
      while (true) {
        const [data] = await socket.receive();
        const text = new TextDecoder().decode(data);
        if (line.expect === undefined || text.includes(line.expect)) return;
        throw new Error(
          `expected '${line.expect}', got '${text.trim().slice(0, 40)}'`,
        );
      }
    } finally {
      signal.removeEventListener("abort", close);
      close();
    }
  };
}
