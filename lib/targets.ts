/**
 * A forwarder's targets when it has more than one: the pool, each
 * target's state (up or down, draining, clients in flight), the balancing
 * rules that pick one for a client, and passive health (a target whose
 * connects fail `fall` times in a row is down, and the client is retried on
 * another). Active checks are `health.ts`'s; the `--targets` file is
 * `targets_file.ts`'s.
 *
 * The rules, as haproxy's `balance` and nginx's `upstream` name them:
 *
 * - `roundrobin` (the default): in turn, in proportion to the weights,
 *   spread out (nginx's smooth weighted round robin: weights 5,1,1 give
 *   `a a b a c a a`, not `a a a a a b c`).
 * - `leastconn`: the target with the fewest clients in flight for its
 *   weight; ties in turn.
 * - `source`: a client address always lands on the same live target, by
 *   rendezvous hashing (the highest `hash(client, target)` wins, scaled by
 *   weight): adding a target moves only the clients it now wins, about 1/N
 *   of them, and a target going down moves only its own clients.
 * - `random`: two targets drawn at random (by weight), the less loaded
 *   one taken (the "power of two choices").
 *
 * Backup targets take clients only when no other target is up. A draining
 * target takes no new client; the ones it has go on until they end.
 *
 * @module
 */

import { unmapIPv4 } from "./address.ts";
import {
  classifyConnectFailure,
  ConnectError,
  DialTimeoutError,
} from "./connect_error.ts";
import { formatSeconds } from "./units.ts";
import { type Endpoint, formatEndpoint } from "./endpoint.ts";
import { FloodLog, type Log, stderrLog } from "./log.ts";

/** The balancing rules (`--balance`). */
export type BalanceRule = "roundrobin" | "leastconn" | "source" | "random";

/** Every {@linkcode BalanceRule}, in the order the help lists them. */
export const BALANCE_RULES: readonly BalanceRule[] = [
  "roundrobin",
  "leastconn",
  "source",
  "random",
];

/** Failures in a row that mark a target down, by default (`--fall`). */
export const DEFAULT_FALL = 3;

/** Successful checks in a row that bring a down target back, by default (`--rise`). */
export const DEFAULT_RISE = 2;

/** Other targets a client is tried on after a failed connect, by default (`--retries`). */
export const DEFAULT_RETRIES = 2;

/** The largest weight a target takes (haproxy's limit). */
export const MAX_WEIGHT = 256;

/** One target as configured: where, and how it takes part. */
export interface TargetSpec {
  /** Where the target is. */
  endpoint: Endpoint;
  /** Its share against the others' (1 to {@linkcode MAX_WEIGHT}). Default 1. */
  weight?: number;
  /** Takes clients only when no non-backup target is up. Default `false`. */
  backup?: boolean;
  /** Takes no new clients; its open ones go on. Default `false`. */
  drain?: boolean;
  /**
   * Speak TLS to it (a `tcp://` target; haproxy's `server ... ssl`), as
   * the forwarder's `targetTls` says. Default `false`: plain, unless the
   * pool's `tls` makes every target TLS.
   */
  tls?: boolean;
}

/**
 * How a failure was seen: a client's connect, an active check, a
 * client's request dropped unanswered (`--retry-unanswered`), or a UDP
 * session's datagram refused (ICMP port unreachable).
 */
export type FailureSource = "connect" | "check" | "answer" | "datagram";

/** Every {@linkcode FailureSource}, as the stats list them. */
export const FAILURE_SOURCES: readonly FailureSource[] = [
  "connect",
  "check",
  "answer",
  "datagram",
];

/** How a state line counts failures of each source: `(3 connects)`. */
const FAILURE_WORDS: Record<FailureSource, string> = {
  connect: "connects",
  check: "checks",
  answer: "clients unanswered",
  datagram: "datagrams refused",
};

/**
 * A target in a {@linkcode TargetPool}, with its state.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { PoolTarget } from "./targets.ts";
 *
 * const target = new PoolTarget({
 *   endpoint: { transport: "tcp", hostname: "::1", port: 80 },
 *   weight: 2,
 * });
 * assertEquals([target.key, target.name, target.weight, target.available], ["tcp://[::1]:80", "[::1]:80", 2, true]);
 * ```
 */
export class PoolTarget {
  /** The endpoint as text, `tcp://127.0.0.1:80`: the target's identity. */
  readonly key: string;
  /** How log lines name it: `127.0.0.1:80`, or the socket path. */
  readonly name: string;
  /** Where it is. */
  readonly endpoint: Endpoint;
  /** Its weight. */
  weight = 1;
  /** A backup target. */
  backup = false;
  /** Takes no new clients. */
  draining = false;
  /** Spoken to in TLS (clients and checks). */
  tls = false;
  /** No longer in the configuration: goes once its clients have ended. */
  removed = false;
  /** Up (takes clients) or down. */
  up = true;
  /** Clients (or UDP sessions) in flight. */
  active = 0;
  /** Failures in a row (while up) or successful checks in a row (while down). */
  streak = 0;
  /** Smooth weighted round robin's running weight. */
  current = 0;
  /** When it was last picked (a sequence number): leastconn's tie-breaker. */
  lastPicked = 0;
  /** Failures seen, by source, for the stats (`server_metrics.ts`). */
  readonly failures: Record<FailureSource, number> = {
    connect: 0,
    check: 0,
    answer: 0,
    datagram: 0,
  };
  /** Active checks made, for the stats. */
  checks = 0;

  /** A target for `spec`, up. */
  constructor(spec: TargetSpec) {
    this.endpoint = spec.endpoint;
    this.key = formatEndpoint(spec.endpoint);
    this.name = "path" in spec.endpoint
      ? spec.endpoint.path
      : this.key.replace(/^[a-z]+:\/\//, "");
    this.configure(spec);
  }

  /** Takes `spec`'s weight and flags (a reload keeps the state). */
  configure(spec: TargetSpec): void {
    this.weight = spec.weight ?? 1;
    this.backup = spec.backup ?? false;
    this.draining = spec.drain ?? false;
    this.tls = spec.tls ?? false;
  }

  /** Whether it may take a new client. */
  get available(): boolean {
    return this.up && !this.draining && !this.removed;
  }
}

/**
 * No target can take a client: all are down, draining or already tried.
 *
 * @example
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { NoTargetError, TargetPool } from "./targets.ts";
 *
 * const pool = new TargetPool([{ endpoint: { transport: "tcp", hostname: "127.0.0.1", port: 7 } }], { log: () => {} });
 * pool.targets[0].up = false;
 * await assertRejects(() => pool.take("", () => Promise.resolve()), NoTargetError, "no target up");
 * pool.flush();
 * ```
 */
export class NoTargetError extends Error {
  /** Builds the error; the message is the client's closing reason. */
  constructor(message = "no target up") {
    super(message);
    this.name = "NoTargetError";
  }
}

/** Options for {@linkcode TargetPool}. */
export interface TargetPoolOptions {
  /** The rule that picks a target. Default `roundrobin`. */
  balance?: BalanceRule;
  /** Failures in a row that mark a target down. Default {@linkcode DEFAULT_FALL}. */
  fall?: number;
  /** Successful checks in a row that bring one back. Default {@linkcode DEFAULT_RISE}. */
  rise?: number;
  /** Other targets a client is tried on. Default {@linkcode DEFAULT_RETRIES}. */
  retries?: number;
  /** Where state changes are logged. Default stderr. */
  log?: Log;
  /** Prefix of the log lines (`forward: `). */
  prefix?: string;
  /** A number in [0, 1), for `random` (tests give their own). Default `Math.random`. */
  random?: () => number;
  /**
   * Every target speaks TLS, whatever its spec says (`--to-tls`), now and
   * after each `update`. Default `false`: each as its spec says.
   */
  tls?: boolean;
}

/** Options for {@linkcode TargetPool.take}. */
export interface TakeOptions {
  /**
   * The client's earlier take, whose target dropped it: the targets it
   * tried are skipped, and its tries count against `retries`.
   */
  after?: Taken<unknown>;
  /**
   * A connect alone does not forget the target's failures, its answer
   * does (`Taken.answered`): a target that takes connects and drops every
   * request still goes down. Default `false`.
   */
  answerConfirms?: boolean;
}

/** A target taken for a client, with its connection. */
export interface Taken<T> {
  /** What `dial` returned. */
  value: T;
  /** The target it went to. */
  target: PoolTarget;
  /** The targets tried before it, and why each failed (a retried client's log). */
  retried: { target: PoolTarget; reason: string }[];
  /** Every target tried for the client, this one included. */
  tried: ReadonlySet<PoolTarget>;
  /**
   * With {@linkcode TakeOptions.answerConfirms}: the target answered the
   * client, which forgets its failures as a connect otherwise does.
   */
  answered(): void;
  /** Call once the client has ended: the target's count goes down. */
  release(): void;
}

/**
 * Why a connect failed, as a state line says it: `connection refused`
 * rather than `connection refused by 127.0.0.1:7` (the line names the
 * target already).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { ConnectError, DialTimeoutError } from "./connect_error.ts";
 * import { failureReason } from "./targets.ts";
 *
 * const refused = new Deno.errors.ConnectionRefused("Connection refused (os error 111)");
 * const error = new ConnectError("connection refused by 127.0.0.1:7", "refused", "127.0.0.1:7", refused);
 * assertEquals(failureReason(error), "connection refused");
 * assertEquals(failureReason(new DialTimeoutError(500, "10.0.0.9:80")), "timed out after 0.5 s");
 * ```
 */
export function failureReason(error: unknown): string {
  if (error instanceof DialTimeoutError) {
    return `timed out after ${formatSeconds(error.timeoutMs)}`;
  }
  if (
    error instanceof ConnectError && error.kind !== "other" &&
    error.cause !== undefined
  ) {
    return classifyConnectFailure(error.cause).reason;
  }
  return error instanceof Error ? error.message : String(error);
}

/** 32-bit FNV-1a of `text`, from `seed`, then murmur3's finalizer. */
function hash32(text: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** `hash(client, target)` as a number in (0, 1), 53 bits of it. */
function unitHash(text: string): number {
  const high = hash32(text, 0x811c9dc5) >>> 11; // 21 bits
  const low = hash32(text, 0x9e3779b9); // 32 bits
  return (high * 2 ** 32 + low + 0.5) / 2 ** 53;
}

/**
 * The rendezvous score of `target` for `client`: the highest wins.
 * `-weight / ln(u)` is weighted rendezvous hashing (Schindelhauer and
 * Schomaker): each target wins its weight's share of clients.
 */
function rendezvousScore(client: string, target: PoolTarget): number {
  return -target.weight / Math.log(unitHash(`${client}\u0000${target.key}`));
}

/**
 * The targets of a forwarder and their state (see the module doc): picks
 * one for each client by the rule, counts clients in flight, marks targets
 * down and up, and takes a new configuration on reload. Every change of
 * state is one log line: `target 127.0.0.1:7 down: connection refused (3
 * connects)`, `target 127.0.0.1:7 up (2 checks)`.
 *
 * @example Round robin by weight
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { TargetPool } from "./targets.ts";
 *
 * const pool = new TargetPool([
 *   { endpoint: { transport: "tcp", hostname: "127.0.0.1", port: 7 }, weight: 2 },
 *   { endpoint: { transport: "tcp", hostname: "127.0.0.2", port: 7 } },
 * ], { log: () => {} });
 * const names = [1, 2, 3, 4, 5, 6].map(() => pool.pick("")!.name);
 * assertEquals(names, ["127.0.0.1:7", "127.0.0.2:7", "127.0.0.1:7", "127.0.0.1:7", "127.0.0.2:7", "127.0.0.1:7"]);
 * ```
 */
export class TargetPool {
  readonly #rule: BalanceRule;
  readonly #fall: number;
  readonly #rise: number;
  readonly #retries: number;
  readonly #log: Log;
  readonly #prefix: string;
  readonly #random: () => number;
  readonly #noTarget: FloodLog;
  readonly #allTls: boolean;
  #targets: PoolTarget[] = [];
  #picks = 0;

  /** A pool of `specs` (at least one), all up. */
  constructor(specs: readonly TargetSpec[], options: TargetPoolOptions = {}) {
    this.#rule = options.balance ?? "roundrobin";
    this.#fall = options.fall ?? DEFAULT_FALL;
    this.#rise = options.rise ?? DEFAULT_RISE;
    this.#retries = options.retries ?? DEFAULT_RETRIES;
    this.#log = options.log ?? stderrLog;
    this.#prefix = options.prefix ?? "";
    this.#random = options.random ?? Math.random;
    // One line a second while no target is up, however many clients come.
    this.#noTarget = new FloodLog(
      this.#log,
      `${this.#prefix}no target up:`,
      1000,
      "clients",
    );
    if (specs.length === 0) throw new RangeError("no targets");
    this.#allTls = options.tls ?? false;
    this.#targets = specs.map((spec) => new PoolTarget(this.#spec(spec)));
  }

  /** `spec` as this pool takes it: TLS when the pool makes every target TLS. */
  #spec(spec: TargetSpec): TargetSpec {
    return this.#allTls ? { ...spec, tls: true } : spec;
  }

  /** The balancing rule. */
  get rule(): BalanceRule {
    return this.#rule;
  }

  /** Every target, removed ones still draining included. */
  get targets(): readonly PoolTarget[] {
    return this.#targets;
  }

  /** Successful checks in a row that bring a target back. */
  get rise(): number {
    return this.#rise;
  }

  /**
   * The target for a client at `client` (its address without the port;
   * `""` when it has none, a Unix socket's client), skipping `tried`;
   * `undefined` when none can take it. Does not count the client: see
   * {@linkcode TargetPool.take}.
   */
  pick(
    client: string,
    tried: ReadonlySet<PoolTarget> = new Set(),
  ): PoolTarget | undefined {
    let candidates = this.#targets.filter((t) =>
      t.available && !t.backup && !tried.has(t)
    );
    if (candidates.length === 0) {
      // Backups only when no other target is up (not merely tried).
      if (this.#targets.some((t) => t.available && !t.backup)) {
        return undefined;
      }
      candidates = this.#targets.filter((t) =>
        t.available && t.backup && !tried.has(t)
      );
    }
    if (candidates.length === 0) return undefined;
    const target = this.#choose(candidates, client);
    target.lastPicked = ++this.#picks;
    return target;
  }

  #choose(candidates: PoolTarget[], client: string): PoolTarget {
    if (candidates.length === 1) return candidates[0];
    switch (this.#rule) {
      case "leastconn":
        return this.#leastLoaded(candidates);
      case "source":
        // A client without an address (a Unix socket's) has nothing to
        // hash: in turn, as haproxy does.
        // A dual-stack listener's ::ffff:192.0.2.1 is the client 192.0.2.1.
        return client === ""
          ? this.#roundRobin(candidates)
          : this.#rendezvous(candidates, unmapIPv4(client));
      case "random":
        return this.#twoChoices(candidates);
      default:
        return this.#roundRobin(candidates);
    }
  }

  /** nginx's smooth weighted round robin (`ngx_http_upstream_get_peer`). */
  #roundRobin(candidates: PoolTarget[]): PoolTarget {
    let total = 0;
    let best = candidates[0];
    for (const target of candidates) {
      target.current += target.weight;
      total += target.weight;
      if (target.current > best.current) best = target;
    }
    best.current -= total;
    return best;
  }

  #leastLoaded(candidates: PoolTarget[]): PoolTarget {
    let best = candidates[0];
    for (const target of candidates) {
      const load = target.active / target.weight;
      const bestLoad = best.active / best.weight;
      if (
        load < bestLoad ||
        (load === bestLoad && target.lastPicked < best.lastPicked)
      ) {
        best = target;
      }
    }
    return best;
  }

  #rendezvous(candidates: PoolTarget[], client: string): PoolTarget {
    let best = candidates[0];
    let bestScore = -Infinity;
    for (const target of candidates) {
      const score = rendezvousScore(client, target);
      if (score > bestScore) {
        best = target;
        bestScore = score;
      }
    }
    return best;
  }

  #weightedDraw(candidates: PoolTarget[], total: number): PoolTarget {
    let point = this.#random() * total;
    for (const target of candidates) {
      point -= target.weight;
      if (point < 0) return target;
    }
    return candidates[candidates.length - 1];
  }

  #twoChoices(candidates: PoolTarget[]): PoolTarget {
    const total = candidates.reduce((sum, t) => sum + t.weight, 0);
    const first = this.#weightedDraw(candidates, total);
    const others = candidates.filter((t) => t !== first);
    const second = this.#weightedDraw(others, total - first.weight);
    return second.active / second.weight < first.active / first.weight
      ? second
      : first;
  }

  /**
   * Takes a target for a client at `client` and dials it with `dial`: a
   * failed dial counts against that target (passive health) and the client
   * is tried on the next one, up to `retries` more. Rejects with the last
   * dial's error, or {@linkcode NoTargetError} when no target could take
   * the client (logged once a second, not once a client). See
   * {@linkcode TakeOptions} for a retry after a target dropped the client.
   */
  async take<T>(
    client: string,
    dial: (target: PoolTarget) => Promise<T>,
    options: TakeOptions = {},
  ): Promise<Taken<T>> {
    const after = options.after;
    const tried = new Set<PoolTarget>(after?.tried);
    let lastError: unknown;
    const retried = [...after?.retried ?? []];
    for (let attempt = tried.size; attempt <= this.#retries; attempt++) {
      const target = this.pick(client, tried);
      if (!target) break;
      tried.add(target);
      target.active++;
      try {
        const value = await dial(target);
        if (!options.answerConfirms) this.succeeded(target, "connect");
        let released = false;
        return {
          value,
          target,
          retried,
          tried,
          answered: () => this.succeeded(target, "connect"),
          release: () => {
            if (released) return;
            released = true;
            this.#release(target);
          },
        };
      } catch (error) {
        this.#release(target);
        // A missing permission is the configuration's fault, not the
        // target's: said as it is, not retried.
        if (error instanceof Deno.errors.NotCapable) throw error;
        lastError = error;
        const reason = failureReason(error);
        retried.push({ target, reason });
        this.failed(target, reason, "connect");
      }
    }
    if (lastError !== undefined) throw lastError;
    this.#noTarget.event(`closing ${client || "a client"} at once`);
    throw new NoTargetError();
  }

  /**
   * Takes a target for a UDP session (no dial to fail), skipping `tried`
   * (the targets that refused its datagrams): counted until `release`;
   * its `answered` (the target's first answer) forgets the target's
   * failures, as a connect does. `undefined` when none is up.
   */
  takeSession(
    client: string,
    tried: ReadonlySet<PoolTarget> = new Set(),
  ): Taken<PoolTarget> | undefined {
    const target = this.pick(client, tried);
    if (!target) {
      this.#noTarget.event(`dropping the session of ${client}`);
      return undefined;
    }
    target.active++;
    let released = false;
    return {
      value: target,
      target,
      retried: [],
      tried: new Set([...tried, target]),
      answered: () => this.succeeded(target, "connect"),
      release: () => {
        if (released) return;
        released = true;
        this.#release(target);
      },
    };
  }

  #release(target: PoolTarget): void {
    target.active--;
    if (target.active === 0 && (target.draining || target.removed)) {
      if (target.removed) {
        this.#targets = this.#targets.filter((t) => t !== target);
        this.#log(`${this.#prefix}target ${target.name} removed (drained)`);
      } else {
        this.#log(`${this.#prefix}target ${target.name} drained`);
      }
    }
  }

  /**
   * A connect, check, request or datagram to `target` failed because of
   * `reason`: the `fall`th in a row marks it down, with one log line.
   */
  failed(target: PoolTarget, reason: string, source: FailureSource): void {
    target.failures[source]++;
    if (source === "check") target.checks++;
    if (!target.up) {
      target.streak = 0; // a down target's successes must come in a row
      return;
    }
    target.streak++;
    if (target.streak >= this.#fall) {
      target.up = false;
      this.#log(
        `${this.#prefix}target ${target.name} down: ${reason} (${target.streak} ${
          FAILURE_WORDS[source]
        })${this.#upCount()}`,
      );
      target.streak = 0;
    }
  }

  /**
   * A connect or check to `target` succeeded: an up target's failures are
   * forgotten; a down one comes back after `rise` checks in a row.
   */
  succeeded(target: PoolTarget, source: FailureSource): void {
    if (source === "check") target.checks++;
    if (target.up) {
      target.streak = 0;
      return;
    }
    if (source !== "check") return;
    target.streak++;
    if (target.streak >= this.#rise) {
      target.up = true;
      target.streak = 0;
      this.#log(
        `${this.#prefix}target ${target.name} up (${this.#rise} checks)${this.#upCount()}`,
      );
    }
  }

  /** `, 2 of 3 up` for a state line. */
  #upCount(): string {
    const live = this.#targets.filter((t) => !t.removed);
    return `, ${live.filter((t) => t.up).length} of ${live.length} up`;
  }

  /**
   * Takes a new configuration (a reload): targets still in it keep their
   * state and clients and take its weight and flags; new ones start up; a
   * target no longer in it takes no new client and goes once its clients
   * have ended. One log line for each change.
   */
  update(specs: readonly TargetSpec[]): void {
    if (specs.length === 0) throw new RangeError("no targets");
    const byKey = new Map(this.#targets.map((t) => [t.key, t]));
    const next: PoolTarget[] = [];
    const kept = new Set<PoolTarget>();
    for (const given of specs) {
      const spec = this.#spec(given);
      const key = formatEndpoint(spec.endpoint);
      const existing = byKey.get(key);
      if (existing && !kept.has(existing)) {
        const wasDraining = existing.draining || existing.removed;
        existing.removed = false;
        existing.configure(spec);
        if (!wasDraining && existing.draining) this.#draining(existing);
        if (wasDraining && !existing.draining) {
          this.#log(`${this.#prefix}target ${existing.name} back in service`);
        }
        kept.add(existing);
        next.push(existing);
      } else if (!existing) {
        const target = new PoolTarget(spec);
        byKey.set(key, target);
        kept.add(target);
        this.#log(
          `${this.#prefix}target ${target.name} added${
            target.draining ? " (draining)" : ""
          }`,
        );
        next.push(target);
      }
    }
    for (const target of this.#targets) {
      if (kept.has(target)) continue;
      target.removed = true;
      if (target.active > 0) {
        this.#log(
          `${this.#prefix}target ${target.name} removed: draining ${target.active} clients`,
        );
        next.push(target);
      } else {
        this.#log(`${this.#prefix}target ${target.name} removed`);
      }
    }
    this.#targets = next;
  }

  #draining(target: PoolTarget): void {
    if (target.active === 0) {
      this.#log(`${this.#prefix}target ${target.name} drained`);
    } else {
      this.#log(
        `${this.#prefix}target ${target.name} draining ${target.active} clients`,
      );
    }
  }

  /** Writes out a pending "no target up" count (when the server stops). */
  flush(): void {
    this.#noTarget.flush();
  }
}
