/**
 * `servers/forward.ts` with many targets, what it takes beyond one: the
 * options ({@linkcode ForwardBalanceOptions}), the pool built from them
 * and its health checks, tied to the server's life
 * ({@linkcode startTargetPool}), the flags and their checks
 * ({@linkcode BALANCE_FLAGS}, {@linkcode balancingFromFlags}), and the
 * SIGHUP reload of a `--targets` file ({@linkcode reloadTargetsOnHangup}).
 * The pool itself is `targets.ts`'s, the checks `health.ts`'s.
 *
 * @module
 */

import { flag, positiveSecondsFlag, UsageError } from "./cli.ts";
import { type Endpoint, formatEndpoint, parseEndpoint } from "./endpoint.ts";
import { dialForCheck, type ForwardPlan } from "./forward.ts";
import {
  datagramProbe,
  DOWN_PROBE_INTERVAL_MS,
  startHealthChecks,
  streamProbe,
} from "./health.ts";
import type { Log } from "./log.ts";
import type { Server } from "./server_options.ts";
import { watchTargets } from "./server_metrics.ts";
import {
  BALANCE_RULES,
  type BalanceRule,
  DEFAULT_FALL,
  DEFAULT_RETRIES,
  DEFAULT_RISE,
  MAX_WEIGHT,
  TargetPool,
  type TargetSpec,
} from "./targets.ts";
import { readTargetsFile } from "./targets_file.ts";
import { RETRY_UNANSWERED_MAX_BYTES } from "./unanswered_retry.ts";
import { formatBytes } from "./units.ts";

/** With many targets: the rule, and health. */
export interface ForwardBalanceOptions {
  /** How a client's target is picked. Default `roundrobin`. */
  balance?: BalanceRule;
  /**
   * Other targets a client is tried on when a connect fails.
   * @default {@linkcode DEFAULT_RETRIES}
   */
  retries?: number;
  /**
   * Failures in a row that mark a target down.
   * @default {@linkcode DEFAULT_FALL}
   */
  fall?: number;
  /**
   * Successful checks in a row that bring a target back.
   * @default {@linkcode DEFAULT_RISE}
   */
  rise?: number;
  /**
   * Check every target this often, in ms. Absent: passive health only (a
   * target marked down is still probed every
   * {@linkcode DOWN_PROBE_INTERVAL_MS} to bring it back).
   */
  checkIntervalMs?: number;
  /** A check writes this line (CR LF added). UDP checks need it. */
  checkSend?: string;
  /** A check's answer must contain this text. */
  checkExpect?: string;
  /** The file the targets were read from (the script's SIGHUP reads it again). */
  targetsFile?: string;
  /**
   * Stream targets: a request a target drops unanswered goes to the next
   * (`ForwardPlan.retryUnanswered`). Default `false`.
   */
  retryUnanswered?: boolean;
}

/**
 * Targets as given (specs, endpoints or their text) as specs, each checked
 * against the listener: `udp://` behind a UDP listener, `tcp://` or
 * `unix:` behind a stream one; a `TypeError` otherwise.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { targetSpecs } from "./balance.ts";
 *
 * assertEquals(targetSpecs(["127.0.0.1:7", { endpoint: { transport: "unix", path: "/tmp/e.sock" }, weight: 2 }], false), [
 *   { endpoint: { transport: "tcp", hostname: "127.0.0.1", port: 7 } },
 *   { endpoint: { transport: "unix", path: "/tmp/e.sock" }, weight: 2 },
 * ]);
 * ```
 */
export function targetSpecs(
  entries: readonly (TargetSpec | Endpoint | string)[],
  udp: boolean,
): TargetSpec[] {
  if (entries.length === 0) throw new TypeError("no targets");
  const specs = entries.map((entry): TargetSpec =>
    typeof entry === "string"
      ? { endpoint: parseEndpoint(entry) }
      : "endpoint" in entry
      ? entry
      : { endpoint: entry }
  );
  for (const { endpoint } of specs) {
    if ((endpoint.transport === "udp") !== udp) {
      throw new TypeError(
        `${formatEndpoint(endpoint)}: a ${
          udp ? "udp://" : "stream"
        } listener forwards to ${udp ? "udp://" : "tcp:// or unix:"} targets`,
      );
    }
  }
  return specs;
}

/** How {@linkcode startTargetPool} checks the targets and where it logs. */
export interface TargetPoolPlan {
  /** The rule and health. */
  balancing?: ForwardBalanceOptions;
  /** Stream targets: how clients dial them (checks dial alike, TLS included). UDP: absent. */
  plan?: ForwardPlan;
  /** A check gives up after the interval, or this if shorter, in ms. */
  connectTimeoutMs: number;
  /** Where state changes are logged. */
  log?: Log;
  /** The server's label, for the lines' prefix. */
  label?: string;
  /** Every target speaks TLS, whatever its spec says (`--to-tls`). */
  tls?: boolean;
}

/** A pool and what starts its checks once its server runs. */
export interface StartedTargetPool {
  /** The targets and their state. */
  pool: TargetPool;
  /**
   * Starts the health checks (stream: a connect, and `checkSend` /
   * `checkExpect`; UDP: a datagram, only with `checkSend`) and stops them
   * when `server` finishes; hands `server` back with its pool.
   */
  supervise<S extends Server>(server: S): S & { readonly pool: TargetPool };
}

/**
 * The pool for `specs` as `options.balancing` says, with no timer running
 * until `supervise` is given its server (a server that fails to start
 * leaves nothing behind).
 *
 * @example
 * ```ts
 * import { startTargetPool } from "./balance.ts";
 * import { serve } from "./server.ts";
 * import { forwardConnection } from "./forward.ts";
 *
 * const specs = [
 *   { endpoint: { transport: "tcp" as const, hostname: "127.0.0.1", port: 7 } },
 *   { endpoint: { transport: "tcp" as const, hostname: "127.0.0.1", port: 9 } },
 * ];
 * const started = startTargetPool(specs, { connectTimeoutMs: 1000, log: () => {} });
 * const plan = { target: specs[0].endpoint, connectTimeoutMs: 1000, pool: started.pool };
 * await using server = started.supervise(serve({
 *   name: "forward",
 *   defaultPort: 0,
 *   stream: (conn, context) => forwardConnection(conn, context, plan),
 * }, { hostname: "127.0.0.1", port: 0, log: () => {} }));
 * if (server.pool.targets.length !== 2) throw new Error("two targets");
 * ```
 */
export function startTargetPool(
  specs: readonly TargetSpec[],
  options: TargetPoolPlan,
): StartedTargetPool {
  const balancing = options.balancing ?? {};
  const pool = new TargetPool(specs, {
    balance: balancing.balance,
    retries: balancing.retries,
    fall: balancing.fall,
    rise: balancing.rise,
    log: options.log,
    prefix: options.label ? `${options.label}: ` : "",
    tls: options.tls,
  });
  return {
    pool,
    supervise<S extends Server>(server: S): S & { readonly pool: TargetPool } {
      const timeoutMs = Math.min(
        balancing.checkIntervalMs ?? DOWN_PROBE_INTERVAL_MS,
        options.connectTimeoutMs,
      );
      const line = {
        send: balancing.checkSend,
        expect: balancing.checkExpect,
      };
      const plan = options.plan;
      const probe = plan
        ? streamProbe((target) => dialForCheck(plan, target, timeoutMs), line)
        : line.send === undefined
        ? undefined
        : datagramProbe({ send: line.send, expect: line.expect });
      const checks = probe &&
        startHealthChecks(pool, {
          intervalMs: balancing.checkIntervalMs,
          timeoutMs,
          probe,
        });
      const unwatch = watchTargets(
        options.label?.replace(/\/(tcp|udp|unix)$/, "") ?? "forward",
        () => pool.targets,
      );
      server.finished.finally(() => {
        checks?.stop();
        pool.flush();
        unwatch();
      });
      return Object.assign(server, { pool });
    },
  };
}

function balanceRule(text: string, name: string): BalanceRule {
  if ((BALANCE_RULES as readonly string[]).includes(text)) {
    return text as BalanceRule;
  }
  throw new UsageError(
    `invalid value '${text}' for ${name}: expected ${BALANCE_RULES.join(", ")}`,
  );
}

/**
 * The flags of many targets: the file, the rule, health (for
 * `parseCommandLine`; turn them into options with
 * {@linkcode balancingFromFlags}).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { BALANCE_FLAGS } from "./balance.ts";
 * import { parseCommandLine } from "./cli.ts";
 *
 * const { values } = parseCommandLine(["--balance", "source"], { usage: "", flags: BALANCE_FLAGS });
 * assertEquals(values.balance, "source");
 * ```
 */
export const BALANCE_FLAGS = {
  targets: flag.string(
    "FILE",
    `the targets, one a line: TARGET [weight=N] [backup]\n[drain] [tls] (weight 1 to ${MAX_WEIGHT}; tls: spoken to in TLS;\n# comments); SIGHUP reads it again: new targets start,\nremoved ones drain (needs --allow-read=FILE)`,
  ),
  balance: flag.custom(
    "RULE",
    "many targets: roundrobin (in turn, by weight; the\ndefault), leastconn (fewest clients), source (a client\naddress sticks to its target), random (two drawn, the\nless loaded)",
    balanceRule,
  ),
  retries: flag.integer(
    "N",
    "many targets: try a client on N other targets after a\nfailed connect {default}",
    { min: 0, max: 16, shown: String(DEFAULT_RETRIES) },
  ),
  "retry-unanswered": flag.boolean(
    `many targets: a target that resets or closes before its
first byte to a client that sent something (at most
${
      formatBytes(RETRY_UNANSWERED_MAX_BYTES)
    }) is a failure, and the client's bytes go to the
next target (within --retries): the client never sees
it. Only for requests safe to send twice: the target
that dropped one may have acted on it`,
  ),
  fall: flag.integer(
    "N",
    "many targets: N failed connects or checks in a row mark\na target down {default}",
    { min: 1, max: 100, shown: String(DEFAULT_FALL) },
  ),
  rise: flag.integer(
    "N",
    "many targets: N good checks in a row bring it back\n{default}",
    { min: 1, max: 100, shown: String(DEFAULT_RISE) },
  ),
  "check-interval": flag.custom(
    "S",
    `many targets: check each one every S seconds (connect;\nwithout it a down target is probed every ${
      DOWN_PROBE_INTERVAL_MS / 1000
    } s)`,
    positiveSecondsFlag,
  ),
  "check-send": flag.string(
    "LINE",
    "--check-interval: write LINE and CR LF (UDP: needed)",
  ),
  "check-expect": flag.string(
    "TEXT",
    "--check-interval: the answer must contain TEXT",
  ),
};

/** The values {@linkcode BALANCE_FLAGS} parse to. */
export interface BalanceFlagValues {
  targets?: string;
  balance?: BalanceRule;
  retries?: number;
  "retry-unanswered"?: boolean;
  fall?: number;
  rise?: number;
  "check-interval"?: number;
  "check-send"?: string;
  "check-expect"?: string;
}

/**
 * With one target: any of {@linkcode BALANCE_FLAGS} is a
 * {@linkcode UsageError} (refused, not ignored).
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { refuseBalanceFlags } from "./balance.ts";
 *
 * assertThrows(() => refuseBalanceFlags({ fall: 2 }), Error, "--fall needs more than one TARGET");
 * ```
 */
export function refuseBalanceFlags(values: BalanceFlagValues): void {
  for (const name of Object.keys(BALANCE_FLAGS)) {
    const value = values[name as keyof BalanceFlagValues];
    if (value !== undefined && value !== false) {
      throw new UsageError(
        `--${name} needs more than one TARGET, or --targets`,
      );
    }
  }
}

/**
 * {@linkcode BALANCE_FLAGS}' values as {@linkcode ForwardBalanceOptions};
 * a {@linkcode UsageError} for a check line without `--check-interval`, or
 * UDP checks without `--check-send`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { balancingFromFlags } from "./balance.ts";
 *
 * assertEquals(balancingFromFlags({ balance: "leastconn", "check-interval": 1000 }, false).checkIntervalMs, 1000);
 * ```
 */
export function balancingFromFlags(
  values: BalanceFlagValues,
  udp: boolean,
): ForwardBalanceOptions {
  const interval = values["check-interval"];
  for (const name of ["check-send", "check-expect"] as const) {
    if (values[name] !== undefined && interval === undefined) {
      throw new UsageError(`--${name} needs --check-interval`);
    }
  }
  if (udp && interval !== undefined && values["check-send"] === undefined) {
    throw new UsageError(
      "--check-interval with udp:// targets needs --check-send (a UDP target answers only what it is sent)",
    );
  }
  if (udp && values["retry-unanswered"]) {
    throw new UsageError(
      "--retry-unanswered applies to stream (tcp://, unix:) targets only",
    );
  }
  return {
    balance: values.balance,
    retries: values.retries,
    retryUnanswered: values["retry-unanswered"] || undefined,
    fall: values.fall,
    rise: values.rise,
    checkIntervalMs: interval,
    checkSend: values["check-send"],
    checkExpect: values["check-expect"],
    targetsFile: values.targets,
  };
}

/**
 * On SIGHUP: reads `file` again and gives `pool` the new list (a bad file:
 * one `error:` line, the running list kept). Returns what stops listening.
 *
 * @example
 * ```ts ignore
 * import { reloadTargetsOnHangup } from "./balance.ts";
 *
 * const stop = reloadTargetsOnHangup(server.pool, "targets.conf", console.error);
 * await server.finished;
 * stop();
 * ```
 */
export function reloadTargetsOnHangup(
  pool: TargetPool,
  file: string,
  log: Log,
): () => void {
  const reload = () => {
    log(`SIGHUP: reading ${file}`);
    try {
      pool.update(readTargetsFile(file));
    } catch (error) {
      log(`error: ${(error as Error).message}; keeping the running targets`);
    }
  };
  Deno.addSignalListener("SIGHUP", reload);
  return () => Deno.removeSignalListener("SIGHUP", reload);
}
