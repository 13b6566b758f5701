/**
 * Connecting by name, from the seed's "Connecting to a remote host": resolve
 * a host name to all its addresses (A and AAAA) with the system resolver,
 * then race connections to them in Happy Eyeballs order (RFC 8305): IPv6
 * first, families interleaved, a new attempt every 250 ms (or at once when
 * one fails), the first connection wins and the others are cancelled or
 * closed.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import {
  checkHost,
  parseIPv4,
  parseIPv6,
  stripBrackets,
  unmapIPv4,
} from "./address.ts";
import { ConnectError, type ConnectFailure, formatSeconds } from "./client.ts";
import { joinHostPort } from "./endpoint.ts";

/** RFC 8305 §8: the recommended Connection Attempt Delay. */
export const DEFAULT_ATTEMPT_DELAY_MS = 250;

/** RFC 8305 §5: a Connection Attempt Delay must never be below 10 ms. */
export const MIN_ATTEMPT_DELAY_MS = 10;

/**
 * A host name the resolver does not know (no A or AAAA record, no
 * `/etc/hosts` entry): a {@linkcode ConnectError} of kind `no-such-host`.
 *
 * @example
 * ```ts
 * import { HostNotFoundError, resolveHost } from "./dial.ts";
 *
 * const error = await resolveHost("no-such-host.invalid").catch((e) => e);
 * if (!(error instanceof HostNotFoundError)) throw error;
 * if (error.message !== "host not found: no-such-host.invalid") throw error;
 * ```
 */
export class HostNotFoundError extends ConnectError {
  /** The name looked up. */
  readonly hostname: string;

  /** Builds the error for `hostname`. */
  constructor(hostname: string, cause?: unknown) {
    super(`host not found: ${hostname}`, "no-such-host", hostname, cause);
    this.name = "HostNotFoundError";
    this.hostname = hostname;
  }
}

/**
 * The resolver failed for another reason than "no such host" (no
 * permission, resolver unreachable, temporary failure): a
 * {@linkcode ConnectError} of kind `no-such-host` (`other` for a missing
 * permission).
 *
 * @example
 * ```ts
 * import { ResolveError } from "./dial.ts";
 *
 * const error = new ResolveError("example.com", "EAI_AGAIN", "temporary failure");
 * if (error.code !== "EAI_AGAIN") throw error;
 * ```
 */
export class ResolveError extends ConnectError {
  /** The name looked up. */
  readonly hostname: string;
  /** The resolver's error code, e.g. `EAI_AGAIN`. */
  readonly code: string;

  /** Builds the error for `hostname` with the resolver's `code`. */
  constructor(
    hostname: string,
    code: string,
    message: string,
    cause?: unknown,
  ) {
    super(
      message,
      code === "EPERM" ? "other" : "no-such-host",
      hostname,
      cause,
    );
    this.name = "ResolveError";
    this.hostname = hostname;
    this.code = code;
  }
}

/** One failed connection attempt. */
export interface DialFailure {
  /** The address tried (an IP literal). */
  address: string;
  /** Why it failed. */
  error: unknown;
}

/**
 * Every address was tried and none connected: a {@linkcode ConnectError}
 * whose kind is the failures' own when they agree (`refused`,
 * `unreachable`, `timeout`), else `other`. The message lists each address
 * with its reason, e.g. `connection refused ([::1]:7, 127.0.0.1:7)`.
 *
 * @example
 * ```ts
 * import { DialError } from "./dial.ts";
 *
 * const refused = new Deno.errors.ConnectionRefused("Connection refused (os error 111)");
 * const error = new DialError(7, [
 *   { address: "::1", error: refused },
 *   { address: "127.0.0.1", error: refused },
 * ]);
 * if (error.message !== "connection refused ([::1]:7, 127.0.0.1:7)") throw error;
 * ```
 */
export class DialError extends ConnectError {
  /** The port dialled. */
  readonly port: number;
  /** Each attempt's failure, in the order they failed. */
  readonly failures: readonly DialFailure[];

  /**
   * Builds the error from the attempts' `failures`; with `target` (e.g.
   * `example.com:80`) the message starts `cannot connect to TARGET: `.
   */
  constructor(port: number, failures: readonly DialFailure[], target?: string) {
    const detail = describeFailures(port, failures);
    super(
      target ? `cannot connect to ${target}: ${detail}` : detail,
      failureKind(failures),
      target ?? failures.map((f) => joinHostPort(f.address, port)).join(", "),
      failures[0]?.error,
    );
    this.name = "DialError";
    this.port = port;
    this.failures = failures;
  }
}

function failureKind(failures: readonly DialFailure[]): ConnectFailure {
  const kinds = failures.map(({ error }): ConnectFailure => {
    if (error instanceof Deno.errors.ConnectionRefused) return "refused";
    if (error instanceof Deno.errors.TimedOut) return "timeout";
    if (
      error instanceof Deno.errors.NetworkUnreachable ||
      ["EHOSTUNREACH", "ENETUNREACH"].includes(
        (error as { code?: string })?.code ?? "",
      )
    ) {
      return "unreachable";
    }
    return "other";
  });
  return kinds.length > 0 && kinds.every((k) => k === kinds[0])
    ? kinds[0]
    : "other";
}

function describeFailures(
  port: number,
  failures: readonly DialFailure[],
): string {
  if (failures.length === 0) return "no address to connect to";
  const reasons = failures.map((f) => connectFailureReason(f.error));
  const where = failures.map((f) => joinHostPort(f.address, port));
  if (reasons.every((reason) => reason === reasons[0])) {
    return `${reasons[0]} (${where.join(", ")})`;
  }
  return failures.map((_, i) => `${where[i]}: ${reasons[i]}`).join("; ");
}

/**
 * No connection was made within the connect timeout: a
 * {@linkcode ConnectError} of kind `timeout`.
 *
 * @example
 * ```ts
 * import { DialTimeoutError } from "./dial.ts";
 *
 * const error = new DialTimeoutError(1500);
 * if (error.message !== "timed out after 1.5 s") throw error;
 * ```
 */
export class DialTimeoutError extends ConnectError {
  /** The timeout that passed, in milliseconds. */
  readonly timeoutMs: number;

  /** Builds the error for `timeoutMs`, naming `target` if given. */
  constructor(timeoutMs: number, target?: string) {
    super(
      `timed out after ${formatSeconds(timeoutMs)}` +
        (target ? ` connecting to ${target}` : ""),
      "timeout",
      target ?? "",
    );
    this.name = "DialTimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/**
 * A connection failure as a short lower-case phrase for a one-line error:
 * `connection refused`, `network is unreachable`, `timed out`, or the
 * permission message for a missing `--allow-net`.
 *
 * @example
 * ```ts
 * import { connectFailureReason } from "./dial.ts";
 *
 * const error = new Deno.errors.ConnectionRefused("Connection refused (os error 111)");
 * if (connectFailureReason(error) !== "connection refused") throw new Error("wrong text");
 * ```
 */
export function connectFailureReason(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) {
    return "connection refused";
  }
  if (error instanceof Deno.errors.TimedOut) return "timed out";
  if (!(error instanceof Error)) return String(error);
  const first = (error.message || error.name).split("\n")[0]
    .replace(/ \(os error \d+\)$/, "");
  return first.charAt(0).toLowerCase() + first.slice(1);
}

/**
 * Which family an address belongs to: 6 for IPv6 (an IPv4-mapped IPv6
 * address such as `::ffff:192.0.2.1` counts as IPv4, as it travels as IPv4),
 * 4 for IPv4, 0 for anything else.
 *
 * @example
 * ```ts
 * import { addressFamily } from "./dial.ts";
 *
 * if (addressFamily("::1") !== 6 || addressFamily("::ffff:10.0.0.1") !== 4) {
 *   throw new Error("wrong family");
 * }
 * ```
 */
export function addressFamily(address: string): 0 | 4 | 6 {
  if (parseIPv4(address)) return 4;
  if (!parseIPv6(address)) return 0;
  return unmapIPv4(address) === address ? 6 : 4;
}

/**
 * Orders addresses for connection attempts as RFC 8305 §4 says: duplicates
 * removed, IPv6 first, then the families interleaved (`firstFamilyCount`
 * addresses of the first family, then one of the other, then alternating),
 * each family keeping the order the resolver gave (its RFC 6724 sort).
 *
 * @example
 * ```ts
 * import { happyEyeballsOrder } from "./dial.ts";
 *
 * const order = happyEyeballsOrder(["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"]);
 * if (order.join(" ") !== "2001:db8::1 10.0.0.1 2001:db8::2 10.0.0.2") {
 *   throw new Error(order.join(" "));
 * }
 * ```
 */
export function happyEyeballsOrder(
  addresses: readonly string[],
  firstFamilyCount = 1,
): string[] {
  const unique = [...new Set(addresses)];
  const v6 = unique.filter((a) => addressFamily(a) === 6);
  const other = unique.filter((a) => addressFamily(a) !== 6);
  const [first, second] = v6.length > 0 ? [v6, other] : [other, []];
  const order = first.splice(0, Math.max(1, firstFamilyCount));
  while (first.length > 0 || second.length > 0) {
    if (second.length > 0) order.push(second.shift()!);
    if (first.length > 0) order.push(first.shift()!);
  }
  return order;
}

/** Options for {@linkcode resolveHost}. */
export interface ResolveOptions {
  /** Stops waiting for the resolver (its answer is then ignored). */
  signal?: AbortSignal;
}

/**
 * Resolves `hostname` to its IP addresses (A and AAAA), in the system
 * resolver's order, without duplicates. An IP literal (IPv6 with or without
 * brackets) is returned as it is, without a lookup; what is neither a
 * literal nor a possible name (`1.2.3`) is refused with a `ConnectError` of
 * kind `invalid-address`.
 *
 * This uses the system resolver (`getaddrinfo`, as `nc` and `curl` do), not
 * `Deno.resolveDns`: it honours `/etc/hosts`, `nsswitch.conf` and the local
 * search domains, so `localhost` and names a user added by hand resolve as
 * in every other program. It needs `--allow-net=HOSTNAME`.
 *
 * @example
 * ```ts
 * import { resolveHost } from "./dial.ts";
 *
 * const literal = await resolveHost("[::1]");
 * if (literal.join() !== "::1") throw new Error(literal.join());
 * const local = await resolveHost("localhost");
 * if (!local.includes("127.0.0.1") && !local.includes("::1")) throw new Error(local.join());
 * ```
 */
export async function resolveHost(
  hostname: string,
  options: ResolveOptions = {},
): Promise<string[]> {
  const bare = stripBrackets(hostname);
  try {
    if (checkHost(hostname) !== "name") return [bare];
  } catch (error) {
    throw new ConnectError(
      (error as Error).message,
      "invalid-address",
      hostname,
      error,
    );
  }
  options.signal?.throwIfAborted();
  let answers: { address: string }[];
  try {
    const lookingUp = lookup(bare, { all: true, verbatim: true });
    answers =
      await (options.signal ? abortable(lookingUp, options.signal) : lookingUp);
  } catch (error) {
    throw resolveFailure(bare, error);
  }
  const addresses = [...new Set(answers.map((a) => a.address))];
  if (addresses.length === 0) throw new HostNotFoundError(bare);
  return addresses;
}

function resolveFailure(hostname: string, error: unknown): unknown {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== "string") return error;
  switch (code) {
    case "ENOTFOUND":
    case "ENODATA":
    case "EAI_NONAME":
    case "EAI_NODATA":
      return new HostNotFoundError(hostname, error);
    case "EPERM":
      return new ResolveError(
        hostname,
        code,
        `no permission to resolve ${hostname} (run with --allow-net=${hostname})`,
        error,
      );
    case "EAI_AGAIN":
    case "ETIMEOUT":
      return new ResolveError(
        hostname,
        code,
        `temporary failure resolving ${hostname} (the resolver did not answer)`,
        error,
      );
    default:
      return new ResolveError(
        hostname,
        code,
        `cannot resolve ${hostname}: ${code}`,
        error,
      );
  }
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() =>
      signal.removeEventListener("abort", onAbort)
    );
  });
}

/** Something a dial returns; the losers of the race are closed. */
export interface Closable {
  /** Releases the connection. */
  close(): void;
}

/**
 * Makes one connection attempt to `address` (an IP literal) and `port`; must
 * give up (reject) promptly once `signal` aborts.
 */
export type ConnectFunction<C extends Closable> = (
  address: string,
  port: number,
  signal: AbortSignal,
) => Promise<C>;

/** Options for {@linkcode dialHappyEyeballs}. */
export interface DialOptions<C extends Closable = Deno.TcpConn> {
  /**
   * RFC 8305's Connection Attempt Delay: how long an attempt runs alone
   * before the next one starts. Default 250 ms; never below 10 ms.
   */
  attemptDelayMs?: number;
  /** RFC 8305's First Address Family Count. Default 1. */
  firstFamilyCount?: number;
  /** Give up with {@linkcode DialTimeoutError} after this long. Default: never. */
  timeoutMs?: number;
  /** Give up (rejecting with the signal's reason) when this aborts. */
  signal?: AbortSignal;
  /**
   * Makes one attempt. Default: `Deno.connect` over TCP (with the attempt's
   * signal). A TLS client can pass its own; tests pass a fake.
   */
  connect?: ConnectFunction<C>;
  /** Called as each attempt starts, `elapsedMs` after the dial began. */
  onAttempt?: (address: string, elapsedMs: number) => void;
  /** Called as each attempt fails. */
  onFailure?: (address: string, error: unknown, elapsedMs: number) => void;
  /** How errors name what was dialled, e.g. `example.com:80`. */
  target?: string;
}

const tcpConnect: ConnectFunction<Deno.TcpConn> = (address, port, signal) =>
  Deno.connect({
    hostname: address,
    port,
    signal,
    // One address per attempt: the race is ours.
    autoSelectFamily: false,
  });

/**
 * Connects to the first of `addresses` (IP literals) that answers on
 * `port`, racing them as RFC 8305 says: ordered by
 * {@linkcode happyEyeballsOrder}, one attempt started every
 * `attemptDelayMs` (or at once when the previous attempt fails), the first
 * connection wins, every other attempt is aborted (or closed, when it
 * connected too late). It resolves only after every losing attempt has
 * settled, so nothing is left running. Rejects with {@linkcode DialError}
 * when all fail, {@linkcode DialTimeoutError} after `timeoutMs`.
 *
 * @example The address that answers wins
 * ```ts
 * import { dialHappyEyeballs } from "./dial.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr;
 * const accepting = listener.accept();
 * using conn = await dialHappyEyeballs(["127.0.0.1"], port);
 * using _server = await accepting;
 * if ((conn.remoteAddr as Deno.NetAddr).port !== port) throw new Error("wrong peer");
 * ```
 */
export function dialHappyEyeballs<C extends Closable = Deno.TcpConn>(
  addresses: readonly string[],
  port: number,
  options: DialOptions<C> = {},
): Promise<C> {
  const connect = options.connect ??
    (tcpConnect as unknown as ConnectFunction<C>);
  const delayMs = Math.max(
    MIN_ATTEMPT_DELAY_MS,
    options.attemptDelayMs ?? DEFAULT_ATTEMPT_DELAY_MS,
  );
  const order = happyEyeballsOrder(addresses, options.firstFamilyCount);
  const began = performance.now();
  const elapsed = () => Math.round(performance.now() - began);

  return new Promise<C>((resolve, reject) => {
    const controllers = new Set<AbortController>();
    const failures: DialFailure[] = [];
    const running: Promise<void>[] = [];
    let next = 0;
    let settled = false;
    let delayTimer: ReturnType<typeof setTimeout> | undefined;
    let timeoutTimer: ReturnType<typeof setTimeout> | undefined;

    // Ends the race: stops timers, aborts every attempt still running, and
    // settles once they all have (so no connect is left in flight).
    const finish = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(delayTimer);
      clearTimeout(timeoutTimer);
      options.signal?.removeEventListener("abort", onAbort);
      for (const controller of controllers) controller.abort();
      Promise.allSettled(running).then(outcome);
    };
    const onAbort = () => finish(() => reject(options.signal!.reason));

    const startNext = () => {
      clearTimeout(delayTimer);
      if (settled || next >= order.length) return;
      const address = order[next++];
      const controller = new AbortController();
      controllers.add(controller);
      options.onAttempt?.(address, elapsed());
      let attempt: Promise<C>;
      try {
        attempt = connect(address, port, controller.signal);
      } catch (error) {
        attempt = Promise.reject(error);
      }
      running.push(
        attempt
          .then(
            (conn) => {
              controllers.delete(controller);
              if (settled) {
                conn.close(); // Connected after another won: a loser.
                return;
              }
              finish(() => resolve(conn));
            },
            (error) => {
              controllers.delete(controller);
              if (settled) return;
              failures.push({ address, error });
              options.onFailure?.(address, error, elapsed());
              if (next < order.length) {
                startNext(); // RFC 8305 §5: a failure starts the next at once.
              } else if (controllers.size === 0) {
                finish(() =>
                  reject(new DialError(port, failures, options.target))
                );
              }
            },
          ),
      );
      if (next < order.length) delayTimer = setTimeout(startNext, delayMs);
    };

    if (options.signal?.aborted) {
      reject(options.signal.reason);
      return;
    }
    if (order.length === 0) {
      reject(new DialError(port, [], options.target));
      return;
    }
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.timeoutMs !== undefined && options.timeoutMs > 0) {
      timeoutTimer = setTimeout(
        () =>
          finish(() =>
            reject(new DialTimeoutError(options.timeoutMs!, options.target))
          ),
        options.timeoutMs,
      );
    }
    startNext();
  });
}

/** Options for {@linkcode dialHost}. */
export interface DialHostOptions<C extends Closable = Deno.TcpConn>
  extends Omit<DialOptions<C>, "target"> {
  /** Called with the addresses found, in the order they will be tried. */
  onResolved?: (addresses: string[]) => void;
}

/**
 * Resolves `hostname` ({@linkcode resolveHost}) and connects to it
 * ({@linkcode dialHappyEyeballs}): the one call a client needs. `timeoutMs`
 * covers both. Every failure is a `ConnectError` naming the target:
 * `invalid address` (kind `invalid-address`), {@linkcode HostNotFoundError},
 * {@linkcode DialError} (`cannot connect to localhost:7: connection
 * refused ([::1]:7, 127.0.0.1:7)`), {@linkcode DialTimeoutError}
 * (`timed out after 5 s connecting to example.com:80`).
 *
 * @example
 * ```ts
 * import { dialHost } from "./dial.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepting = listener.accept();
 * using conn = await dialHost("127.0.0.1", listener.addr.port, { timeoutMs: 5000 });
 * using _server = await accepting;
 * if ((conn.remoteAddr as Deno.NetAddr).hostname !== "127.0.0.1") throw new Error("wrong peer");
 * ```
 */
export async function dialHost<C extends Closable = Deno.TcpConn>(
  hostname: string,
  port: number,
  options: DialHostOptions<C> = {},
): Promise<C> {
  const bare = stripBrackets(hostname);
  const target = joinHostPort(bare, port);

  const began = performance.now();
  const { timeoutMs } = options;
  const timer = new AbortController();
  const timeout = timeoutMs !== undefined && timeoutMs > 0
    ? setTimeout(() => timer.abort(), timeoutMs)
    : undefined;
  const signal = options.signal
    ? AbortSignal.any([options.signal, timer.signal])
    : timer.signal;
  try {
    let addresses: string[];
    try {
      addresses = await resolveHost(bare, { signal });
    } catch (error) {
      if (timer.signal.aborted) throw new DialTimeoutError(timeoutMs!, target);
      throw error;
    }
    options.onResolved?.(
      happyEyeballsOrder(addresses, options.firstFamilyCount),
    );
    return await dialHappyEyeballs(addresses, port, {
      ...options,
      signal: options.signal,
      timeoutMs: timeout === undefined
        ? undefined
        : Math.max(1, timeoutMs! - (performance.now() - began)),
      target,
    }).catch((error) => {
      if (error instanceof DialTimeoutError) {
        throw new DialTimeoutError(timeoutMs!, target);
      }
      throw error;
    });
  } finally {
    clearTimeout(timeout);
  }
}
