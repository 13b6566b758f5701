/**
 * TCP keepalive, tuned: from "Enabling TCP keepalive at server side" in the
 * seed (the C socket examples page this toolkit ports, see `mod.ts`). Deno's `TcpConn.setKeepAlive(on)` is on/off only, and Linux then
 * waits 7200 s before the first probe. {@linkcode setKeepAlive} also sets
 * the probe timing (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`) the way
 * Go's `net.KeepAliveConfig` does, through libc's `setsockopt` over FFI.
 *
 * Permissions:
 * - on/off (`setKeepAlive(conn, true)`): none beyond the connection itself.
 * - tuning (`idle`, `interval` or `count`), Linux only: FFI access to libc,
 *   at least `--allow-ffi=/lib/x86_64-linux-gnu/libc.so.6` (Debian and
 *   Ubuntu on x86_64; `/lib/aarch64-linux-gnu/libc.so.6` on arm64), or
 *   plain `--allow-ffi`. Nothing else: the connection's descriptor is found
 *   through libc too (listing `/proc/self/fd` with `getdents64`, then
 *   matching `getsockname`/`getpeername` against the connection's
 *   addresses), so no `--allow-read` is needed. Mind that FFI runs native
 *   code outside Deno's sandbox: grant it only to programs you trust.
 *
 * @module
 */

import { parseIPv4, parseIPv6, stripBrackets } from "./address.ts";
import { DescriptorListError, openDescriptors } from "./descriptors.ts";
import { closeQuietly } from "./io.ts";
import { type LibC, LibcError, openLibc } from "./libc.ts";
import { osErrorNumber } from "./os_error.ts";

/**
 * Keepalive settings, shaped like Go's `net.KeepAliveConfig`; every time is
 * in whole seconds, the kernel's granularity. An absent field leaves the
 * system's value alone (Linux: idle 7200 s, interval 75 s, 9 probes).
 */
export interface KeepAliveConfig {
  /** Turn keepalive on (default) or off. */
  enable?: boolean;
  /** Seconds a connection stays idle before the first probe (`TCP_KEEPIDLE`); range: {@linkcode KEEPALIVE_LIMITS}. */
  idle?: number;
  /** Seconds between unanswered probes (`TCP_KEEPINTVL`); range: {@linkcode KEEPALIVE_LIMITS}. */
  interval?: number;
  /** Unanswered probes before the kernel declares the peer dead (`TCP_KEEPCNT`); range: {@linkcode KEEPALIVE_LIMITS}. */
  count?: number;
}

/** Why keepalive could not be set as asked. */
export type KeepAliveErrorReason =
  | "unsupported"
  | "permission"
  | "invalid"
  | "not-found"
  | "failed";

/**
 * Keepalive could not be set as asked: `reason` says why (`permission`
 * when `--allow-ffi` is missing, `unsupported` off Linux, `invalid` for an
 * out-of-range value, `not-found` when the descriptor was not found,
 * `failed` when `setsockopt` refused). The message is one line, naming
 * the flag to add where a flag is missing.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { KeepAliveError } from "./keepalive.ts";
 *
 * const error = new KeepAliveError("permission", "needs --allow-ffi");
 * assertEquals([error.reason, error.name], ["permission", "KeepAliveError"]);
 * ```
 */
export class KeepAliveError extends Error {
  /** What went wrong, for `instanceof`-and-switch handling. */
  readonly reason: KeepAliveErrorReason;

  /** Builds the error; `message` is the line a user sees. */
  constructor(
    reason: KeepAliveErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "KeepAliveError";
    this.reason = reason;
  }
}

// From /usr/include: asm-generic/socket.h, netinet/in.h, netinet/tcp.h.
const SOL_SOCKET = 1;
const SO_KEEPALIVE = 9;
const IPPROTO_TCP = 6;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
const AF_INET = 2;
const AF_INET6 = 10;

/**
 * libc (see `libc.ts`), its failure as a {@linkcode KeepAliveError} with
 * the same reason and message; `what` names the feature.
 */
function openLibC(what = "tuning keepalive"): LibC {
  try {
    return openLibc(what);
  } catch (error) {
    if (!(error instanceof LibcError)) throw error;
    throw new KeepAliveError(error.reason, error.message, {
      cause: error.cause,
    });
  }
}

/**
 * The range the kernel takes for each keepalive setting (Linux:
 * `TCP_KEEPIDLE`, `TCP_KEEPINTVL` in seconds, `TCP_KEEPCNT` probes).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { KEEPALIVE_LIMITS } from "./keepalive.ts";
 *
 * assertEquals(KEEPALIVE_LIMITS.count, { min: 1, max: 127 });
 * ```
 */
export const KEEPALIVE_LIMITS = {
  idle: { min: 1, max: 32767 },
  interval: { min: 1, max: 32767 },
  count: { min: 1, max: 127 },
} as const;

function checkConfig(config: KeepAliveConfig): void {
  for (const key of ["idle", "interval", "count"] as const) {
    const value = config[key];
    if (value === undefined) continue;
    const { min, max } = KEEPALIVE_LIMITS[key];
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new KeepAliveError(
        "invalid",
        `keepalive ${key} must be a whole number from ${min} to ${max}, not ${value}`,
      );
    }
  }
}

function wantsTuning(config: KeepAliveConfig): boolean {
  return config.enable !== false &&
    (config.idle !== undefined || config.interval !== undefined ||
      config.count !== undefined);
}

/**
 * Checks, without a connection, that `config` can be applied here: values
 * in range and, when it tunes timing, Linux and FFI access to libc. A server calls it at start so a missing
 * `--allow-ffi` is one error line at once, not one per client.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { checkKeepAlive, KeepAliveError } from "./keepalive.ts";
 *
 * checkKeepAlive({}); // plain keepalive: always possible
 * assertThrows(
 *   () => checkKeepAlive({ count: 1000 }),
 *   KeepAliveError,
 *   "keepalive count must be a whole number from 1 to 127, not 1000",
 * );
 * ```
 */
export function checkKeepAlive(config: KeepAliveConfig): void {
  checkConfig(config);
  if (wantsTuning(config)) openLibC();
}

/** The 16 bytes of an IP address, IPv4 as IPv4-mapped IPv6. */
function ipBytes(hostname: string): Uint8Array | null {
  const host = stripBrackets(hostname).replace(/%.*$/, "");
  const out = new Uint8Array(16);
  const v4 = parseIPv4(host);
  if (v4) {
    out[10] = out[11] = 0xff;
    out.set(v4, 12);
    return out;
  }
  const groups = parseIPv6(host);
  if (!groups) return null;
  groups.forEach((group, i) => {
    out[2 * i] = group >> 8;
    out[2 * i + 1] = group & 0xff;
  });
  return out;
}

/** An endpoint as `sockaddr` compares it: 16 address bytes and a port. */
interface RawEndpoint {
  /** IPv4 as IPv4-mapped IPv6. */
  ip: Uint8Array;
  port: number;
  /** Whether `ip` is IPv4-mapped (only then can an `AF_INET` address match). */
  mapped: boolean;
}

/**
 * Whether the `sockaddr_in` / `sockaddr_in6` in `buffer` is `want`;
 * allocation-free, as it runs once per open descriptor.
 */
function sameEndpoint(buffer: Uint8Array, want: RawEndpoint): boolean {
  // sa_family is host-endian (little on x86_64 and arm64); the port is
  // big-endian in both layouts, at offset 2.
  const family = buffer[0] | (buffer[1] << 8);
  if (((buffer[2] << 8) | buffer[3]) !== want.port) return false;
  if (family === AF_INET) {
    // struct sockaddr_in: family, port, 4 address bytes at offset 4.
    if (!want.mapped) return false;
    for (let i = 0; i < 4; i++) {
      if (buffer[4 + i] !== want.ip[12 + i]) return false;
    }
    return true;
  }
  if (family === AF_INET6) {
    // struct sockaddr_in6: family, port, flowinfo, 16 bytes at offset 8.
    for (let i = 0; i < 16; i++) {
      if (buffer[8 + i] !== want.ip[i]) return false;
    }
    return true;
  }
  return false;
}

function netEndpoint(addr: Deno.Addr): RawEndpoint | null {
  if (addr.transport !== "tcp") return null;
  const ip = ipBytes(addr.hostname);
  if (!ip) return null;
  const mapped = ip.subarray(0, 10).every((byte) => byte === 0) &&
    ip[10] === 0xff && ip[11] === 0xff;
  return { ip, port: addr.port, mapped };
}

/** Where the last search found a connection: the next is often beside it. */
let lastFound = -1;

/**
 * The descriptor of `conn`: the socket whose local and peer addresses are
 * the connection's. The descriptor after the last one found, then that
 * one, are tried first (a server that grows gets one descriptor after
 * another; `getKeepAlive` after `setKeepAlive` asks for the same); then
 * every open descriptor in ascending order (the kernel hands out the
 * lowest free one, so after churn the new socket tends to be low): one
 * `getpeername` (about 1 µs) per descriptor in the worst case.
 */
function descriptorOf(c: LibC, conn: Deno.Conn): number {
  const local = netEndpoint(conn.localAddr);
  const remote = netEndpoint(conn.remoteAddr);
  if (!local || !remote) {
    throw new KeepAliveError(
      "not-found",
      "keepalive applies to TCP connections only",
    );
  }
  const address = new Uint8Array(128);
  const length = new Uint32Array(1);
  // The peer first: a server's connections all share their local address,
  // so the peer tells them apart in one call.
  const matches = (fd: number): boolean => {
    length[0] = address.byteLength;
    if (c.getpeername(fd, address, length) !== 0) return false;
    if (!sameEndpoint(address, remote)) return false;
    length[0] = address.byteLength;
    return c.getsockname(fd, address, length) === 0 &&
      sameEndpoint(address, local);
  };
  for (const fd of [lastFound + 1, lastFound]) {
    if (fd >= 0 && matches(fd)) return lastFound = fd;
  }
  try {
    for (const fd of openDescriptors(c)) {
      if (matches(fd)) return lastFound = fd;
    }
  } catch (error) {
    if (!(error instanceof DescriptorListError)) throw error;
    throw new KeepAliveError("not-found", error.message);
  }
  throw new KeepAliveError(
    "not-found",
    "cannot find the connection's socket (closed already?)",
  );
}

function setOption(
  c: LibC,
  fd: number,
  level: number,
  option: number,
  name: string,
  value: number,
): void {
  if (c.setsockopt(fd, level, option, new Int32Array([value]), 4) !== 0) {
    throw new KeepAliveError(
      "failed",
      `setsockopt(${name}, ${value}) failed on the connection's socket`,
    );
  }
}

function hasSetKeepAlive(conn: Deno.Conn): conn is Deno.TcpConn {
  return typeof (conn as Deno.TcpConn).setKeepAlive === "function";
}

/**
 * Turns TCP keepalive on (or off) for `conn` and, on Linux, tunes when the
 * first probe goes out (`idle`), how often the next ones do (`interval`)
 * and how many go unanswered before the kernel declares the peer dead
 * (`count`): a read then fails with `Deno.errors.TimedOut`
 * (see {@linkcode isKeepAliveTimeout}), about `idle + interval × count`
 * seconds after the peer went silent.
 *
 * `true` or a config without timing needs no extra permission on a
 * `TcpConn`; timing, or any keepalive on a `TlsConn` (which has no
 * `setKeepAlive`), needs FFI access to libc (see the module's
 * permissions). Throws {@linkcode KeepAliveError}.
 *
 * @example The seed's settings on an accepted connection
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { getKeepAlive, setKeepAlive } from "./keepalive.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ ...(listener.addr as Deno.NetAddr), transport: "tcp" });
 * using accepted = await listener.accept();
 * setKeepAlive(accepted, { idle: 1, interval: 1, count: 10 });
 * assertEquals(getKeepAlive(accepted), { enable: true, idle: 1, interval: 1, count: 10 });
 * ```
 */
export function setKeepAlive(
  conn: Deno.Conn,
  config: KeepAliveConfig | boolean = true,
): void {
  const settings = typeof config === "boolean" ? { enable: config } : config;
  checkConfig(settings);
  if (conn.remoteAddr.transport !== "tcp") {
    throw new KeepAliveError(
      "not-found",
      "keepalive applies to TCP connections only",
    );
  }
  const enable = settings.enable !== false;
  const native = hasSetKeepAlive(conn);
  if (native && !wantsTuning(settings)) {
    conn.setKeepAlive(enable);
    return;
  }
  const c = openLibC(
    wantsTuning(settings) ? "tuning keepalive" : "keepalive on TLS connections",
  );
  const fd = descriptorOf(c, conn);
  if (native) conn.setKeepAlive(enable);
  else setOption(c, fd, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", +enable);
  if (!enable) return;
  if (settings.idle !== undefined) {
    setOption(c, fd, IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", settings.idle);
  }
  if (settings.interval !== undefined) {
    setOption(
      c,
      fd,
      IPPROTO_TCP,
      TCP_KEEPINTVL,
      "TCP_KEEPINTVL",
      settings.interval,
    );
  }
  if (settings.count !== undefined) {
    setOption(c, fd, IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", settings.count);
  }
}

/**
 * Reads back the kernel's keepalive settings of `conn` (`getsockopt`), all
 * fields filled in. Linux only; needs the same FFI access as tuning.
 *
 * @example A fresh connection has keepalive off
 * ```ts
 * import { assertFalse } from "@std/assert";
 * import { getKeepAlive } from "./keepalive.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ ...(listener.addr as Deno.NetAddr), transport: "tcp" });
 * using accepted = await listener.accept();
 * assertFalse(getKeepAlive(client).enable);
 * ```
 */
export function getKeepAlive(conn: Deno.Conn): Required<KeepAliveConfig> {
  const c = openLibC();
  const fd = descriptorOf(c, conn);
  const read = (level: number, option: number, name: string): number => {
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    if (c.getsockopt(fd, level, option, value, length) !== 0) {
      throw new KeepAliveError("failed", `getsockopt(${name}) failed`);
    }
    return value[0];
  };
  return {
    enable: read(SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE") !== 0,
    idle: read(IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"),
    interval: read(IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"),
    count: read(IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"),
  };
}

/**
 * `true` when `error` (from a read or write) means the kernel gave up on
 * the peer: keepalive probes went unanswered (`ETIMEDOUT`).
 *
 * @example
 * ```ts
 * import { assert, assertFalse } from "@std/assert";
 * import { isKeepAliveTimeout } from "./keepalive.ts";
 *
 * assert(isKeepAliveTimeout(new Deno.errors.TimedOut("Connection timed out (os error 110)")));
 * assertFalse(isKeepAliveTimeout(new Deno.errors.ConnectionReset("reset")));
 * ```
 */
export function isKeepAliveTimeout(error: unknown): boolean {
  return error instanceof Deno.errors.TimedOut ||
    osErrorNumber(error) === 110;
}

/**
 * The formatted settings for a log line, e.g. `idle 1 s, interval 1 s,
 * 3 probes` (`system defaults` for the untuned parts).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { describeKeepAlive } from "./keepalive.ts";
 *
 * assertEquals(describeKeepAlive({ idle: 1, interval: 1, count: 3 }), "idle 1 s, interval 1 s, 3 probes");
 * assertEquals(describeKeepAlive({}), "system defaults");
 * ```
 */
export function describeKeepAlive(config: KeepAliveConfig): string {
  if (config.enable === false) return "off";
  const parts = [
    config.idle !== undefined && `idle ${config.idle} s`,
    config.interval !== undefined && `interval ${config.interval} s`,
    config.count !== undefined && `${config.count} probes`,
  ].filter(Boolean);
  return parts.length ? parts.join(", ") : "system defaults";
}

/**
 * Whether {@linkcode closeWithReset} can work here: Linux, and FFI access
 * to libc granted (asked without a prompt; libc is opened on the first
 * call).
 *
 * @example
 * ```ts
 * import { canCloseWithReset } from "./keepalive.ts";
 *
 * if (typeof canCloseWithReset() !== "boolean") throw new Error();
 * ```
 */
export function canCloseWithReset(): boolean {
  try {
    openLibC("a reset");
    return true;
  } catch {
    return false;
  }
}

/** `struct sockaddr` with `sa_family` `AF_UNSPEC`: what `connect` dissolves with. */
const UNSPEC_ADDRESS = new Uint8Array(16);

/**
 * Resets `conn` (a TCP connection, or TLS over one) and closes it: its
 * peer gets a reset (RST) and no FIN, as a forwarder passes on a reset
 * from the other side. Deno's `close()` always sends a FIN first (it shuts
 * the socket's writing down before closing it), so this dissolves the
 * connection first, through libc, with `connect(AF_UNSPEC)`, which sends
 * the reset and leaves nothing for the FIN. Needs FFI access to libc, as
 * tuning keepalive does; returns `false`, closing `conn` as usual, when it
 * cannot (no FFI, not Linux, not TCP, the socket not found).
 *
 * @example
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { canCloseWithReset, closeWithReset } from "./keepalive.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ ...(listener.addr as Deno.NetAddr), transport: "tcp" });
 * const accepted = await listener.accept();
 * if (closeWithReset(accepted)) {
 *   await assertRejects(() => client.read(new Uint8Array(1)), Deno.errors.ConnectionReset);
 * } else if (canCloseWithReset()) {
 *   throw new Error("no reset sent");
 * }
 * ```
 */
export function closeWithReset(conn: Deno.Conn): boolean {
  let reset = false;
  try {
    const c = openLibC("a reset");
    reset = c.connect(
      descriptorOf(c, conn),
      UNSPEC_ADDRESS,
      UNSPEC_ADDRESS.byteLength,
    ) === 0;
  } catch {
    // No FFI, not TCP, or the socket is gone: a plain close it is.
  }
  closeQuietly(conn);
  return reset;
}
