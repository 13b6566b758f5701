/**
 * Connecting by name, from "Connecting to a remote host" in the seed (the
 * C socket examples page this toolkit ports, see `mod.ts`): resolve
 * a host name to all its addresses (A and AAAA) with the system resolver,
 * then race connections to them in Happy Eyeballs order (RFC 8305): IPv6
 * first, families interleaved, a new attempt every 250 ms (or at once when
 * one fails), the first connection wins and the others are cancelled or
 * closed.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { parseIPv4, parseIPv6, unmapIPv4 } from "./address.ts";
import { type Deadline, setDeadline } from "./deadlines.ts";
import { notePermission, permissionHint } from "./main.ts";
import {
  checkConnectHost,
  ConnectError,
  DialError,
  type DialFailure,
  DialTimeoutError,
  HostNotFoundError,
  ResolveError,
} from "./connect_error.ts";

/** RFC 8305 §8: the recommended Connection Attempt Delay. */
export const DEFAULT_ATTEMPT_DELAY_MS = 250;

/** RFC 8305 §5: a Connection Attempt Delay must never be below 10 ms. */
export const MIN_ATTEMPT_DELAY_MS = 10;

/**
 * Which family an address belongs to: 6 for IPv6 (an IPv4-mapped IPv6
 * address such as `::ffff:192.0.2.1` counts as IPv4, as it travels as IPv4),
 * 4 for IPv4, 0 for anything else.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { addressFamily } from "./dial.ts";
 *
 * assertEquals(addressFamily("::1"), 6);
 * assertEquals(addressFamily("::ffff:10.0.0.1"), 4);
 * assertEquals(addressFamily("example.com"), 0);
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
 * import { assertEquals } from "@std/assert";
 * import { happyEyeballsOrder } from "./dial.ts";
 *
 * assertEquals(
 *   happyEyeballsOrder(["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"]),
 *   ["2001:db8::1", "10.0.0.1", "2001:db8::2", "10.0.0.2"],
 * );
 * ```
 */
export function happyEyeballsOrder(
  addresses: readonly string[],
  firstFamilyCount = 1,
): string[] {
  // One address (an IP literal, a forwarder's target): nothing to order.
  if (addresses.length === 1) return [addresses[0]];
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
 * import { assert, assertEquals } from "@std/assert";
 * import { resolveHost } from "./dial.ts";
 *
 * assertEquals(await resolveHost("[::1]"), ["::1"]); // a literal: no lookup
 * const local = await resolveHost("localhost");
 * assert(local.includes("127.0.0.1") || local.includes("::1"));
 * ```
 */
export async function resolveHost(
  hostname: string,
  options: ResolveOptions = {},
): Promise<string[]> {
  const { hostname: bare, family } = checkConnectHost(hostname);
  if (family !== "name") return [bare];
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

/** Resolver error codes (node's, and getaddrinfo's) and what each means. */
const RESOLVER_CODES: Record<string, "not-found" | "permission" | "again"> = {
  ENOTFOUND: "not-found",
  ENODATA: "not-found",
  EAI_NONAME: "not-found",
  EAI_NODATA: "not-found",
  EPERM: "permission",
  EAI_AGAIN: "again",
  ETIMEOUT: "again",
};

/**
 * A resolver failure as a `ConnectError`: node's `lookup` error (with a
 * `code`), or `Deno.connect`'s when it resolved a name itself (`failed to
 * lookup address information: DETAIL`, no code). Anything else is returned
 * as it is.
 */
function resolveFailure(hostname: string, error: unknown): unknown {
  let code = (error as { code?: unknown })?.code;
  const detail = error instanceof Error
    ? /^failed to lookup address information: (.*)$/.exec(error.message)?.[1]
    : undefined;
  if (detail !== undefined) {
    code = /not known|no address associated|non-recoverable/i.test(detail)
      ? "EAI_NONAME"
      : /temporary failure/i.test(detail)
      ? "EAI_AGAIN"
      : detail;
  }
  if (typeof code !== "string") return error;
  switch (RESOLVER_CODES[code]) {
    case "not-found":
      return new HostNotFoundError(hostname, error);
    case "permission":
      return new ResolveError(
        hostname,
        code,
        `no permission to resolve ${hostname} (${
          permissionHint("--allow-net", [hostname])
        })`,
        error,
      );
    case "again":
      return new ResolveError(
        hostname,
        code,
        `cannot resolve host '${hostname}': temporary failure (the resolver did not answer)`,
        error,
      );
    default:
      return new ResolveError(
        hostname,
        code,
        `cannot resolve host '${hostname}': ${code}`,
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
 * import { assertEquals } from "@std/assert";
 * import { dialHappyEyeballs } from "./dial.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr;
 * const accepting = listener.accept();
 * using conn = await dialHappyEyeballs(["127.0.0.1"], port);
 * using _server = await accepting;
 * assertEquals(conn.remoteAddr.port, port);
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

  // One function (about 100 lines) on purpose: the race's state (attempts
  // running, the two timers, whether it is settled) is shared by every
  // callback below, each a step of RFC 8305 §5; split up, that state would
  // be passed back and forth between them.
  return new Promise<C>((resolve, reject) => {
    const controllers = new Set<AbortController>();
    const failures: DialFailure[] = [];
    const running: Promise<void>[] = [];
    let next = 0;
    let settled = false;
    let delayTimer: ReturnType<typeof setTimeout> | undefined;
    let timeout: Deadline | undefined;

    // Ends the race: stops timers, aborts every attempt still running, and
    // settles once they all have (so no connect is left in flight).
    const finish = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(delayTimer);
      timeout?.cancel();
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
      // A deadline, not a timer: most dials end long before it.
      timeout = setDeadline(
        options.timeoutMs,
        () =>
          finish(() =>
            reject(new DialTimeoutError(options.timeoutMs!, options.target))
          ),
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
 * ({@linkcode dialHappyEyeballs}): the one dialer every client here uses.
 * `timeoutMs` covers both. Every failure is a `ConnectError` naming the
 * target: `invalid address` (kind `invalid-address`),
 * {@linkcode HostNotFoundError} (`no such host 'example.invalid'`),
 * {@linkcode DialError} (`connection refused by 127.0.0.1:7`, `cannot
 * connect to localhost:7: connection refused ([::1]:7, 127.0.0.1:7)`),
 * {@linkcode DialTimeoutError} (`timed out after 5 s connecting to
 * example.com:80`).
 *
 * Permissions: an IP literal needs `--allow-net=ADDRESS:PORT`. A name is
 * looked up here when `--allow-net=NAME` is granted, and then each address
 * needs its own `ADDRESS:PORT`; with only `--allow-net=NAME:PORT`, the name
 * is handed to `Deno.connect`, which resolves it and races its addresses
 * itself (Happy Eyeballs too, with the same attempt delay; `onResolved`
 * is not called then).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { dialHost } from "./dial.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepting = listener.accept();
 * using conn = await dialHost("127.0.0.1", listener.addr.port, { timeoutMs: 5000 });
 * using _server = await accepting;
 * assertEquals(conn.remoteAddr.hostname, "127.0.0.1");
 * ```
 */
export async function dialHost<C extends Closable = Deno.TcpConn>(
  hostname: string,
  port: number,
  options: DialHostOptions<C> = {},
): Promise<C> {
  const { hostname: bare, family, target } = checkConnectHost(hostname, port);
  notePermission("--allow-net", target);
  if (family !== "name") {
    // An IP literal: nothing to resolve, so no timer nor signal of our own
    // for resolving (a forwarder dials one per client: 3 KB less garbage each).
    options.onResolved?.([bare]);
    return dialHappyEyeballs([bare], port, { ...options, target });
  }
  const began = performance.now();
  const { timeoutMs } = options;
  const timer = new AbortController();
  const timeout = timeoutMs !== undefined && timeoutMs > 0
    ? setTimeout(() => timer.abort(), timeoutMs)
    : undefined;
  const signal = options.signal
    ? AbortSignal.any([options.signal, timer.signal])
    : timer.signal;
  // With only --allow-net=NAME:PORT, the addresses cannot be looked up nor
  // dialled one by one: Deno resolves the name and races them itself.
  const byName = options.connect === undefined && !granted(bare) &&
    granted(target);
  try {
    let addresses: string[];
    try {
      addresses = byName ? [bare] : await resolveHost(bare, { signal });
    } catch (error) {
      if (timer.signal.aborted) throw new DialTimeoutError(timeoutMs!, target);
      throw error;
    }
    if (!byName) {
      options.onResolved?.(
        happyEyeballsOrder(addresses, options.firstFamilyCount),
      );
    }
    return await dialHappyEyeballs(addresses, port, {
      ...options,
      connect: byName
        ? connectByName(options.attemptDelayMs) as unknown as ConnectFunction<
          C
        >
        : options.connect,
      signal: options.signal,
      timeoutMs: timeout === undefined
        ? undefined
        : Math.max(1, timeoutMs! - (performance.now() - began)),
      target,
    }).catch((error) => {
      if (error instanceof DialTimeoutError) {
        throw new DialTimeoutError(timeoutMs!, target);
      }
      // Deno could not resolve the name: say so, as resolveHost does.
      const first = error instanceof DialError && error.failures.length === 1
        ? error.failures[0].error
        : undefined;
      if (first instanceof ConnectError && first.kind === "no-such-host") {
        throw first;
      }
      throw error;
    });
  } finally {
    clearTimeout(timeout);
  }
}

/** Whether `--allow-net` covers `host` (`name` or `name:port`), without asking. */
function granted(host: string): boolean {
  try {
    return Deno.permissions.querySync({ name: "net", host }).state ===
      "granted";
  } catch {
    return false; // A host Deno's permission syntax does not take.
  }
}

/** One attempt by name, resolved and raced by `Deno.connect` itself. */
function connectByName(
  attemptDelayMs = DEFAULT_ATTEMPT_DELAY_MS,
): ConnectFunction<Deno.TcpConn> {
  return (hostname, port, signal) =>
    Deno.connect({
      hostname,
      port,
      signal,
      autoSelectFamilyAttemptDelay: Math.max(
        MIN_ATTEMPT_DELAY_MS,
        attemptDelayMs,
      ),
    }).catch((error) => {
      throw resolveFailure(hostname, error);
    });
}
