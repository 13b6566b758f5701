/**
 * The client side every script here shares: connect over TCP with a
 * timeout, read with a timeout, and turn each way a connection can fail
 * (bad address, no such host, refused, unreachable, timed out) into one
 * clear line, where the seed's clients ignore `connect`'s result and block
 * forever.
 *
 * @module
 */

import {
  checkHost,
  parseIPv4,
  parseIPv6,
  stripBrackets,
  unmapIPv4,
} from "./address.ts";
import { joinHostPort } from "./endpoint.ts";

/** What went wrong, for callers that react differently to each. */
export type ConnectFailure =
  | "invalid-address"
  | "no-such-host"
  | "refused"
  | "unreachable"
  | "timeout"
  | "no-reply"
  | "reset"
  | "other";

/**
 * Connecting (or talking) to a server failed; the message is the one line
 * a user sees, `kind` says why, `cause` is the system's error.
 *
 * @example
 * ```ts
 * import { ConnectError, connectTcp } from "./client.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * listener.close(); // nobody listens there now
 * const error = await connectTcp({ hostname: "127.0.0.1", port }).catch((e) => e);
 * if (!(error instanceof ConnectError) || error.kind !== "refused") throw error;
 * ```
 */
export class ConnectError extends Error {
  /** Why it failed. */
  readonly kind: ConnectFailure;
  /** The server, as `host:port` or `[v6]:port`. */
  readonly target: string;

  /** Builds the error; `message` is the whole line without `error: `. */
  constructor(
    message: string,
    kind: ConnectFailure,
    target: string,
    cause?: unknown,
  ) {
    super(message, { cause });
    this.name = "ConnectError";
    this.kind = kind;
    this.target = target;
  }
}

/** Options for {@linkcode connectTcp}. */
export interface ConnectTcpOptions {
  /** IP literal (IPv6 with or without brackets) or host name. */
  hostname: string;
  /** Port, 1 to 65535. */
  port: number;
  /** Gives up after this many ms (name lookup included); 0 or absent: never. */
  timeoutMs?: number;
}

/**
 * Formats a duration in ms as the toolkit prints it: `2 s`, `0.5 s`.
 *
 * @example
 * ```ts
 * import { formatSeconds } from "./client.ts";
 *
 * if (formatSeconds(1500) !== "1.5 s") throw new Error(formatSeconds(1500));
 * ```
 */
export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

/**
 * Turns a failed connect or read into a {@linkcode ConnectError} with a
 * one-line message naming `target`; a {@linkcode ConnectError} passes
 * through and a missing permission (`NotCapable`) is returned as it is, so
 * its message still names the `--allow-net` flag to add.
 *
 * @example
 * ```ts
 * import { ConnectError, describeConnectFailure } from "./client.ts";
 *
 * const error = describeConnectFailure(
 *   new Deno.errors.ConnectionRefused("Connection refused (os error 111)"),
 *   "127.0.0.1:13",
 * );
 * if (!(error instanceof ConnectError)) throw error;
 * if (error.message !== "connection refused by 127.0.0.1:13") throw new Error(error.message);
 * ```
 */
export function describeConnectFailure(
  error: unknown,
  target: string,
  hostname = "",
): Error {
  if (error instanceof ConnectError) return error;
  if (error instanceof Deno.errors.NotCapable) return error;
  if (!(error instanceof Error)) {
    return new ConnectError(
      `cannot connect to ${target}: ${String(error)}`,
      "other",
      target,
      error,
    );
  }
  const reason = error.message.replace(/ \(os error \d+\)$/, "");
  const code = (error as { code?: string }).code;
  const lookup = /^failed to lookup address information: (.*)$/.exec(
    error.message,
  );
  if (lookup) {
    const detail = lookup[1];
    return /not known|no address associated|non-recoverable/i.test(detail)
      ? new ConnectError(
        `no such host '${hostname}' (${detail})`,
        "no-such-host",
        target,
        error,
      )
      : new ConnectError(
        `cannot resolve host '${hostname}': ${detail}`,
        "no-such-host",
        target,
        error,
      );
  }
  if (error instanceof Deno.errors.ConnectionRefused) {
    return new ConnectError(
      `connection refused by ${target}`,
      "refused",
      target,
      error,
    );
  }
  if (
    error instanceof Deno.errors.NetworkUnreachable ||
    code === "EHOSTUNREACH" || code === "ENETUNREACH"
  ) {
    return new ConnectError(
      `cannot connect to ${target}: ${reason.toLowerCase()}`,
      "unreachable",
      target,
      error,
    );
  }
  if (
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe
  ) {
    return new ConnectError(
      `connection to ${target} was reset`,
      "reset",
      target,
      error,
    );
  }
  if (error instanceof Deno.errors.TimedOut) {
    return new ConnectError(
      `timed out connecting to ${target}`,
      "timeout",
      target,
      error,
    );
  }
  return new ConnectError(
    `cannot connect to ${target}: ${reason}`,
    "other",
    target,
    error,
  );
}

/**
 * Connects over TCP to a host name or IP literal, giving up after
 * `timeoutMs`. Every expected failure rejects with a
 * {@linkcode ConnectError} whose message is one clear line: `invalid
 * address`, `no such host`, `connection refused by`, `network is
 * unreachable`, `no route to host`, `timed out after N s connecting to`.
 * Names resolving to several addresses are tried the way `Deno.connect`
 * does (Happy Eyeballs).
 *
 * @example Connecting to a local server with a 2 s limit
 * ```ts
 * import { connectTcp } from "./client.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * using conn = await connectTcp({ hostname: "127.0.0.1", port, timeoutMs: 2000 });
 * using _accepted = await listener.accept();
 * ```
 */
export async function connectTcp(
  options: ConnectTcpOptions,
): Promise<Deno.TcpConn> {
  const hostname = stripBrackets(options.hostname);
  const target = joinHostPort(hostname, options.port);
  try {
    checkHost(options.hostname);
  } catch (error) {
    throw new ConnectError(
      (error as Error).message,
      "invalid-address",
      target,
      error,
    );
  }
  const timeoutMs = options.timeoutMs ?? 0;
  const controller = new AbortController();
  const timer = timeoutMs > 0
    ? setTimeout(() => controller.abort(), timeoutMs)
    : undefined;
  try {
    return await Deno.connect({
      hostname,
      port: options.port,
      signal: controller.signal,
    });
  } catch (error) {
    if (controller.signal.aborted) {
      throw new ConnectError(
        `timed out after ${formatSeconds(timeoutMs)} connecting to ${target}`,
        "timeout",
        target,
        error,
      );
    }
    throw describeConnectFailure(error, target, hostname);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads once from `conn` like `conn.read(buffer)`, but gives up after
 * `timeoutMs` (0: never): the connection is then closed (a pending read
 * cannot be cancelled otherwise) and the promise rejects with a
 * {@linkcode ConnectError} of kind `timeout` naming `target`. Other read
 * failures (reset...) reject with a {@linkcode ConnectError} too.
 *
 * @example
 * ```ts
 * import { ConnectError, readWithTimeout } from "./client.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * using _silent = await listener.accept(); // never sends anything
 * const error = await readWithTimeout(conn, new Uint8Array(16), 50, "the server")
 *   .catch((e) => e);
 * if (!(error instanceof ConnectError) || error.kind !== "timeout") throw error;
 * ```
 */
export async function readWithTimeout(
  conn: Deno.Conn,
  buffer: Uint8Array,
  timeoutMs: number,
  target: string,
): Promise<number | null> {
  let timedOut = false;
  const timer = timeoutMs > 0
    ? setTimeout(() => {
      timedOut = true;
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }, timeoutMs)
    : undefined;
  try {
    return await conn.read(buffer);
  } catch (error) {
    if (timedOut) {
      throw new ConnectError(
        `timed out after ${
          formatSeconds(timeoutMs)
        } waiting for data from ${target}`,
        "timeout",
        target,
        error,
      );
    }
    throw describeConnectFailure(error, target);
  } finally {
    clearTimeout(timer);
  }
}

/** Options for {@linkcode requestDatagram}. */
export interface DatagramRequestOptions {
  /** Server: IP literal (IPv6 with or without brackets) or host name. */
  hostname: string;
  /** Server port, 1 to 65535. */
  port: number;
  /** The request datagram. */
  message: Uint8Array;
  /** How long to wait for a reply after each send, in ms. Default 1000. */
  timeoutMs?: number;
  /** How many times to send again when no reply came. Default 3. */
  retries?: number;
  /** Told about each retry (`no reply within 1 s; sending again (2 of 4)`). */
  log?: (line: string) => void;
}

/**
 * Sends a request datagram and waits for the reply, sending again after
 * each `timeoutMs` without one, `retries` times. Only a datagram from the
 * server's address and port counts as the reply (for a host name, from
 * its port). The socket is bound to the wildcard address of the server's
 * family (`0.0.0.0` or `::`), port 0: it needs `--allow-net=0.0.0.0:0`
 * (or `[::]:0`) besides the server's address, and `--unstable-net`.
 * When no reply comes, rejects with a {@linkcode ConnectError} of kind
 * `no-reply`: `no reply from HOST:PORT after N attempts (T s each)`.
 *
 * @example Against an in-process UDP server that answers "hello"
 * ```ts
 * import { requestDatagram } from "./client.ts";
 *
 * const server = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * const { port } = server.addr as Deno.NetAddr;
 * const answering = server.receive().then(([, source]) =>
 *   server.send(new TextEncoder().encode("hello"), source)
 * );
 * const reply = await requestDatagram({
 *   hostname: "127.0.0.1",
 *   port,
 *   message: new TextEncoder().encode("hi"),
 * });
 * await answering;
 * server.close();
 * if (new TextDecoder().decode(reply) !== "hello") throw new Error("no hello");
 * ```
 */
export async function requestDatagram(
  options: DatagramRequestOptions,
): Promise<Uint8Array> {
  const hostname = stripBrackets(options.hostname);
  const target = joinHostPort(hostname, options.port);
  let family: 4 | 6 | "name";
  try {
    family = checkHost(options.hostname);
  } catch (error) {
    throw new ConnectError(
      (error as Error).message,
      "invalid-address",
      target,
      error,
    );
  }
  const timeoutMs = options.timeoutMs ?? 1000;
  const attempts = 1 + (options.retries ?? 3);
  const server = { transport: "udp" as const, hostname, port: options.port };
  const wanted = family === "name" ? undefined : addressKey(hostname);
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: family === 6 ? "::" : "0.0.0.0",
    port: 0,
  });
  const buffer = new Uint8Array(65536);
  let receiving: Promise<[Uint8Array, Deno.Addr]> | undefined;
  try {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) {
        options.log?.(
          `no reply within ${
            formatSeconds(timeoutMs)
          }; sending again (${attempt} of ${attempts})`,
        );
      }
      try {
        await socket.send(options.message, server);
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) throw error;
        throw describeConnectFailure(error, target, hostname);
      }
      const deadline = Date.now() + timeoutMs;
      while (true) {
        receiving ??= socket.receive(buffer);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const received = await Promise.race([
          receiving,
          new Promise<undefined>((resolve) =>
            timer = setTimeout(
              () => resolve(undefined),
              Math.max(0, deadline - Date.now()),
            )
          ),
        ]);
        clearTimeout(timer);
        if (!received) break;
        receiving = undefined;
        const [data, source] = received;
        if (
          "hostname" in source && source.port === options.port &&
          (wanted === undefined || addressKey(source.hostname) === wanted)
        ) {
          return data.slice();
        }
      }
    }
  } finally {
    socket.close();
    receiving?.catch(() => {});
  }
  throw new ConnectError(
    `no reply from ${target} after ${attempts} attempt${
      attempts === 1 ? "" : "s"
    } (${formatSeconds(timeoutMs)} each)`,
    "no-reply",
    target,
  );
}

/** One spelling per address, IPv4-mapped IPv6 as IPv4. */
function addressKey(hostname: string): string {
  const plain = unmapIPv4(hostname);
  const v4 = parseIPv4(plain);
  if (v4) return v4.join(".");
  const v6 = parseIPv6(plain);
  return v6 ? Array.from(v6, (g) => g.toString(16)).join(":") : plain;
}
