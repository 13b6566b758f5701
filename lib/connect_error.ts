/**
 * How connecting (and talking to a server) fails, in one place: the
 * {@linkcode ConnectError} every client rejects with, the one table that
 * turns a system error into its kind and its one-line message, the address
 * check every client makes before connecting, and the errors of the dialer
 * and the UDP clients built on them.
 *
 * @module
 */

import { checkHost, stripBrackets } from "./address.ts";
import { joinHostPort } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { withoutOsError } from "./os_error.ts";
import { formatSeconds } from "./units.ts";

/** What went wrong, for callers that react differently to each. */
export type ConnectFailure =
  | "invalid-address"
  | "no-such-host"
  | "refused"
  | "unreachable"
  | "timeout"
  | "no-reply"
  | "reset"
  | "busy"
  | "other";

/**
 * Connecting (or talking) to a server failed; the message is the one line
 * a user sees, `kind` says why, `cause` is the system's error.
 *
 * @example
 * ```ts
 * import { assertEquals, assertRejects } from "@std/assert";
 * import { ConnectError, dialHost } from "../mod.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * listener.close(); // nobody listens there now
 * const error = await assertRejects(() => dialHost("127.0.0.1", port), ConnectError);
 * assertEquals(error.kind, "refused");
 * assertEquals(error.message, `connection refused by 127.0.0.1:${port}`);
 * ```
 */
export class ConnectError extends Error {
  /** Why it failed. */
  readonly kind: ConnectFailure;
  /** The server, as `host:port` or `[v6]:port` (a Unix socket: its path). */
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

/** A host checked by {@linkcode checkConnectHost}. */
export interface ConnectHost {
  /** The host without IPv6 brackets. */
  hostname: string;
  /** 4 or 6 for an IP literal, `name` for a host name. */
  family: 4 | 6 | "name";
  /** How messages name the server: `host:port`, `[v6]:port` (no port: the host). */
  target: string;
}

/**
 * The check every client makes before connecting or sending: `hostname`
 * must be an IP literal (IPv6 with or without brackets) or a possible host
 * name, else a {@linkcode ConnectError} of kind `invalid-address` (`invalid
 * address '1.2.3': expected ...`), which scripts print as a runtime failure.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { checkConnectHost, ConnectError } from "./connect_error.ts";
 *
 * assertEquals(checkConnectHost("[::1]", 13), { hostname: "::1", family: 6, target: "[::1]:13" });
 * const error = assertThrows(() => checkConnectHost("1.2.3", 13), ConnectError);
 * assertEquals(error.kind, "invalid-address");
 * ```
 */
export function checkConnectHost(hostname: string, port?: number): ConnectHost {
  const bare = stripBrackets(hostname);
  const target = port === undefined ? bare : joinHostPort(bare, port);
  try {
    return { hostname: bare, family: checkHost(hostname), target };
  } catch (error) {
    // What was typed is echoed: not its control characters.
    throw new ConnectError(
      escapeControlChars((error as Error).message),
      "invalid-address",
      target,
      error,
    );
  }
}

/** What {@linkcode classifyConnectFailure} says about a system error. */
export interface ConnectFailureClass {
  /** The failure's kind. */
  kind: ConnectFailure;
  /** A short lower-case phrase: `connection refused`, `no route to host`. */
  reason: string;
  /** The one line a user sees, naming `target`. */
  message(target: string): string;
}

interface FailureRow extends ConnectFailureClass {
  /** errno names (Deno's errors carry them as `code`). */
  codes: readonly string[];
  /** Deno error classes, for errors made without a code. */
  classes: readonly (abstract new (...args: never[]) => Error)[];
}

const cannotConnect = (reason: string) => (target: string) =>
  `cannot connect to ${target}: ${reason}`;

/** Every system error a client expects, and how it is told. */
const FAILURES: readonly FailureRow[] = [
  {
    kind: "refused",
    reason: "connection refused",
    message: (target) => `connection refused by ${target}`,
    codes: ["ECONNREFUSED"],
    classes: [Deno.errors.ConnectionRefused],
  },
  {
    kind: "reset",
    reason: "connection reset",
    message: (target) => `connection to ${target} was reset by the peer`,
    codes: ["ECONNRESET", "EPIPE", "ECONNABORTED"],
    classes: [
      Deno.errors.ConnectionReset,
      Deno.errors.BrokenPipe,
      Deno.errors.ConnectionAborted,
    ],
  },
  {
    kind: "timeout",
    reason: "timed out",
    message: (target) => `connection to ${target} timed out`,
    codes: ["ETIMEDOUT"],
    classes: [Deno.errors.TimedOut],
  },
  {
    kind: "unreachable",
    reason: "no route to host",
    message: cannotConnect("no route to host"),
    codes: ["EHOSTUNREACH"],
    classes: [],
  },
  {
    kind: "unreachable",
    reason: "network is unreachable",
    message: cannotConnect("network is unreachable"),
    codes: ["ENETUNREACH"],
    classes: [Deno.errors.NetworkUnreachable],
  },
  {
    kind: "unreachable",
    reason: "address not available",
    message: cannotConnect("address not available"),
    codes: ["EADDRNOTAVAIL"],
    classes: [Deno.errors.AddrNotAvailable],
  },
  {
    // A Unix socket whose listen backlog is full refuses with EAGAIN.
    kind: "busy",
    reason: "not accepting connections (its backlog is full)",
    message: cannotConnect(
      "not accepting connections (its backlog is full); try again later",
    ),
    codes: ["EAGAIN", "EWOULDBLOCK"],
    classes: [Deno.errors.WouldBlock],
  },
  {
    kind: "other",
    reason: "no such file or directory",
    message: cannotConnect("no such file or directory"),
    codes: ["ENOENT"],
    classes: [Deno.errors.NotFound],
  },
];

/** The first line of an error's message, without ` (os error N)`. */
function systemReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const first = withoutOsError((error.message || error.name).split("\n")[0]);
  return first.charAt(0).toLowerCase() + first.slice(1);
}

/**
 * Looks a connect or read failure up in the toolkit's one table of
 * expected system errors (by errno `code`, else by Deno error class): its
 * kind, a short reason, and the one-line message naming a target.
 * Anything else is kind `other`, its reason the system's first line.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { classifyConnectFailure } from "./connect_error.ts";
 *
 * const failure = classifyConnectFailure(
 *   new Deno.errors.ConnectionRefused("Connection refused (os error 111)"),
 * );
 * assertEquals(failure.kind, "refused");
 * assertEquals(failure.message("127.0.0.1:13"), "connection refused by 127.0.0.1:13");
 * ```
 */
export function classifyConnectFailure(error: unknown): ConnectFailureClass {
  const code = (error as { code?: unknown } | null)?.code;
  const row = FAILURES.find((r) => r.codes.includes(code as string)) ??
    FAILURES.find((r) => r.classes.some((c) => error instanceof c));
  if (row) return row;
  const reason = systemReason(error);
  const alert = /received fatal alert: (\w+)/.exec(reason)?.[1];
  if (alert && CERTIFICATE_ALERTS[alert]) {
    const why = `the server refused the TLS session (${alert}): ${
      CERTIFICATE_ALERTS[alert]
    }`;
    return {
      kind: "other",
      reason: why,
      message: (target) => `${target}: ${why}`,
    };
  }
  return { kind: "other", reason, message: cannotConnect(reason) };
}

/**
 * The alerts a server refusing our client certificate sends; on TLS 1.3
 * they come after our handshake is done, at the first read.
 */
const CERTIFICATE_ALERTS: Record<string, string> = {
  CertificateRequired: "it wants a client certificate",
  UnknownCA: "it does not trust our client certificate's CA",
  BadCertificate: "it does not accept our client certificate",
  UnsupportedCertificate: "it does not accept our client certificate",
  CertificateUnknown: "it does not accept our client certificate",
  CertificateExpired: "our client certificate has expired",
  CertificateRevoked: "our client certificate was revoked",
  AccessDenied: "access denied",
};

/**
 * A connection failure as a short lower-case phrase for a one-line error:
 * `connection refused`, `network is unreachable`, `timed out`, or the
 * permission message for a missing `--allow-net`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { connectFailureReason } from "./connect_error.ts";
 *
 * const error = new Deno.errors.ConnectionRefused("Connection refused (os error 111)");
 * assertEquals(connectFailureReason(error), "connection refused");
 * ```
 */
export function connectFailureReason(error: unknown): string {
  return classifyConnectFailure(error).reason;
}

/**
 * Turns a failed connect or read into a {@linkcode ConnectError} with a
 * one-line message naming `target` (see {@linkcode classifyConnectFailure});
 * a {@linkcode ConnectError} passes through and a missing permission
 * (`NotCapable`) is returned as it is, so its message still names the
 * `--allow-net` flag to add.
 *
 * @example
 * ```ts
 * import { assertEquals, assertInstanceOf } from "@std/assert";
 * import { ConnectError, describeConnectFailure } from "./connect_error.ts";
 *
 * const error = describeConnectFailure(
 *   new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)"),
 *   "127.0.0.1:13",
 * );
 * assertInstanceOf(error, ConnectError);
 * assertEquals(error.message, "connection to 127.0.0.1:13 was reset by the peer");
 * ```
 */
export function describeConnectFailure(error: unknown, target: string): Error {
  if (error instanceof ConnectError) return error;
  if (error instanceof Deno.errors.NotCapable) return error;
  const failure = classifyConnectFailure(error);
  return new ConnectError(
    failure.message(target),
    failure.kind,
    target,
    error,
  );
}

/**
 * A host name the resolver does not know (no A or AAAA record, no
 * `/etc/hosts` entry): a {@linkcode ConnectError} of kind `no-such-host`.
 *
 * @example
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { HostNotFoundError, resolveHost } from "../mod.ts";
 *
 * await assertRejects(
 *   () => resolveHost("no-such-host.invalid"),
 *   HostNotFoundError,
 *   "no such host 'no-such-host.invalid'",
 * );
 * ```
 */
export class HostNotFoundError extends ConnectError {
  /** The name looked up. */
  readonly hostname: string;

  /** Builds the error for `hostname`. */
  constructor(hostname: string, cause?: unknown) {
    super(`no such host '${hostname}'`, "no-such-host", hostname, cause);
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
 * import { assertEquals } from "@std/assert";
 * import { ResolveError } from "./connect_error.ts";
 *
 * const error = new ResolveError("example.com", "EAI_AGAIN", "temporary failure");
 * assertEquals([error.code, error.kind], ["EAI_AGAIN", "no-such-host"]);
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
  /** The address tried (an IP literal, or the name Deno resolved itself). */
  address: string;
  /** Why it failed. */
  error: unknown;
}

/**
 * Every address was tried and none connected: a {@linkcode ConnectError}
 * whose kind is the failures' own when they agree (`refused`,
 * `unreachable`, `timeout`), else `other`. The message lists each address
 * with its reason, e.g. `connection refused ([::1]:7, 127.0.0.1:7)`; with
 * `target`, it starts `cannot connect to TARGET: `, and when the one
 * address tried is the target itself it is that failure's own line
 * (`connection refused by 127.0.0.1:7`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { DialError } from "./connect_error.ts";
 *
 * const refused = new Deno.errors.ConnectionRefused("Connection refused (os error 111)");
 * const error = new DialError(7, [
 *   { address: "::1", error: refused },
 *   { address: "127.0.0.1", error: refused },
 * ]);
 * assertEquals(error.message, "connection refused ([::1]:7, 127.0.0.1:7)");
 * const one = new DialError(7, [{ address: "::1", error: refused }], "[::1]:7");
 * assertEquals(one.message, "connection refused by [::1]:7");
 * ```
 */
export class DialError extends ConnectError {
  /** The port dialled. */
  readonly port: number;
  /** Each attempt's failure, in the order they failed. */
  readonly failures: readonly DialFailure[];

  /**
   * Builds the error from the attempts' `failures`; with `target` (e.g.
   * `example.com:80`) the message names it.
   */
  constructor(port: number, failures: readonly DialFailure[], target?: string) {
    const classes = failures.map((f) => classifyConnectFailure(f.error));
    const kind = classes.length > 0 &&
        classes.every((c) => c.kind === classes[0].kind)
      ? classes[0].kind
      : "other";
    const where = failures.map((f) => joinHostPort(f.address, port));
    let detail: string;
    if (failures.length === 0) detail = "no address to connect to";
    else if (classes.every((c) => c.reason === classes[0].reason)) {
      detail = `${classes[0].reason} (${where.join(", ")})`;
    } else {
      detail = where.map((w, i) => `${w}: ${classes[i].reason}`).join("; ");
    }
    let message = detail;
    if (target !== undefined) {
      message = failures.length === 1 && where[0] === target
        ? classes[0].message(target)
        : `cannot connect to ${target}: ${detail}`;
    }
    super(message, kind, target ?? where.join(", "), failures[0]?.error);
    this.name = "DialError";
    this.port = port;
    this.failures = failures;
  }
}

/**
 * No connection was made within the connect timeout: a
 * {@linkcode ConnectError} of kind `timeout`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { DialTimeoutError } from "./connect_error.ts";
 *
 * assertEquals(new DialTimeoutError(1500).message, "timed out after 1.5 s");
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
 * A UDP request got no reply: the one "no reply" error of the UDP clients,
 * a {@linkcode ConnectError} of kind `no-reply`. The message says how
 * long was waited: `no reply from 127.0.0.1:37 within 0.5 s (UDP)` for one
 * attempt, `no reply from 127.0.0.1:3500 after 4 attempts (1 s each)`.
 * (Over UDP a closed port and a silent server look alike: the system does
 * not tell an unconnected socket about the ICMP "port unreachable".)
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { NoReplyError } from "./connect_error.ts";
 *
 * const error = new NoReplyError("127.0.0.1:37", 1, 500);
 * assertEquals(error.message, "no reply from 127.0.0.1:37 within 0.5 s (UDP)");
 * ```
 */
export class NoReplyError extends ConnectError {
  /** How many requests were sent. */
  readonly attempts: number;
  /** How long each was waited for, in ms. */
  readonly timeoutMs: number;

  /** Builds the error for `attempts` requests to `target`, `timeoutMs` each. */
  constructor(target: string, attempts: number, timeoutMs: number) {
    super(
      attempts === 1
        ? `no reply from ${target} within ${formatSeconds(timeoutMs)} (UDP)`
        : `no reply from ${target} after ${attempts} attempts (${
          formatSeconds(timeoutMs)
        } each)`,
      "no-reply",
      target,
    );
    this.name = "NoReplyError";
    this.attempts = attempts;
    this.timeoutMs = timeoutMs;
  }
}
