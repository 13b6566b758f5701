/**
 * Whether a server's configuration fits the process's limit on open
 * descriptors (`RLIMIT_NOFILE`, what `ulimit -n` shows; Deno raises its
 * soft limit to the hard one at start, as Go does since 1.19). Each
 * connection holds its socket, a second descriptor with TLS (the
 * runtime's TLS engine works on a duplicate: see `tls_native.ts`), and
 * what its service adds (exec: a pidfd and three pipes; forward: the
 * target's socket). Past the limit, accepting and spawning fail with
 * "Too many open files": {@linkcode descriptorShortfall} says so once, at
 * start, instead.
 *
 * The limit is read through libc (`getrlimit`), so only where FFI to libc
 * is granted (`--allow-ffi`, as for tuned keepalive or passing resets on):
 * Deno lets a program read `/proc/self/limits` only with `--allow-all`.
 *
 * @module
 */

import { type LibC, openLibc } from "./libc.ts";

/** `RLIMIT_NOFILE` on Linux. */
// (open(2) flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC.)
const O_RDONLY_DIRECTORY_CLOEXEC = 0o200000 | 0o2000000;
const RLIMIT_NOFILE = 7;

/**
 * Descriptors a server holds before its first client: the runtime's own
 * (measured: 25 for `servers/exec.ts` listening), its listener, stdio,
 * with room to spare.
 */
export const BASE_DESCRIPTORS = 32;

/**
 * The process's limit on open descriptors (the soft `RLIMIT_NOFILE`), or
 * `undefined` when it cannot be read: not Linux, or no FFI to libc.
 *
 * @example
 * ```ts
 * import { openFileLimit } from "./descriptors.ts";
 *
 * const limit = openFileLimit(); // a number with --allow-ffi for libc
 * if (limit !== undefined && limit < 1) throw new Error(String(limit));
 * ```
 */
export function openFileLimit(): number | undefined {
  try {
    const limits = new BigUint64Array(2); // struct rlimit: soft, hard
    if (
      openLibc("reading the descriptor limit").getrlimit(
        RLIMIT_NOFILE,
        limits,
      ) !== 0
    ) {
      return undefined;
    }
    // RLIM_INFINITY is all ones: no limit worth a warning.
    return limits[0] > BigInt(Number.MAX_SAFE_INTEGER)
      ? Number.MAX_SAFE_INTEGER
      : Number(limits[0]);
  } catch {
    return undefined;
  }
}

/** What {@linkcode descriptorShortfall} weighs. */
export interface DescriptorNeeds {
  /** Connections at once (`--max-connections`). */
  maxConnections: number;
  /** Descriptors each holds: its socket, TLS's duplicate, its service's own. */
  perConnection: number;
  /** What each holds, for the line: `TLS`, `a program's pidfd and pipes`. */
  what?: string;
  /** The limit. Default: the process's ({@linkcode openFileLimit}). */
  limit?: number;
}

/**
 * The one line to log when `maxConnections` connections of
 * `perConnection` descriptors each (plus {@linkcode BASE_DESCRIPTORS})
 * cannot all be open under the limit, saying how many can; `undefined`
 * when they fit or the limit is unknown.
 *
 * @example 4096 TLS connections under `ulimit -n 1024`
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { descriptorShortfall } from "./descriptors.ts";
 *
 * assertEquals(
 *   descriptorShortfall({ maxConnections: 4096, perConnection: 2, what: "TLS", limit: 1024 }),
 *   "descriptors: 4096 connections at 2 descriptors each (TLS) need up to 8224 open files, over this process's limit of 1024: past 496 connections, new ones fail with \"Too many open files\"; raise the limit (ulimit -n) or lower --max-connections to 496",
 * );
 * assertEquals(descriptorShortfall({ maxConnections: 64, perConnection: 5, limit: 1024 }), undefined);
 * ```
 */
export function descriptorShortfall(
  needs: DescriptorNeeds,
): string | undefined {
  const limit = needs.limit ?? openFileLimit();
  if (limit === undefined) return undefined;
  const { maxConnections, perConnection } = needs;
  const needed = BASE_DESCRIPTORS + maxConnections * perConnection;
  if (needed <= limit) return undefined;
  const fit = Math.max(
    0,
    Math.floor((limit - BASE_DESCRIPTORS) / perConnection),
  );
  return `descriptors: ${maxConnections} connections at ${perConnection} descriptor${
    perConnection === 1 ? "" : "s"
  } each${
    needs.what ? ` (${needs.what})` : ""
  } need up to ${needed} open files, over this process's limit of ${limit}: past ${fit} connections, new ones fail with "Too many open files"; raise the limit (ulimit -n) or lower --max-connections to ${fit}`;
}

/**
 * `/proc/self/fd` could not be listed (not Linux, no `/proc`).
 *
 * @example
 * ```ts
 * import { DescriptorListError } from "./descriptors.ts";
 *
 * const error = new DescriptorListError("cannot list /proc/self/fd");
 * if (error.name !== "DescriptorListError") throw error;
 * ```
 */
export class DescriptorListError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "DescriptorListError";
  }
}

/**
 * This process's open descriptors, from `/proc/self/fd`, in ascending
 * order, read a chunk at a time so a caller that stops early reads less:
 * through libc, as Deno lets a program list `/proc/self/fd` only with
 * `--allow-all`. Throws {@linkcode DescriptorListError} when it cannot
 * be listed.
 *
 * @example
 * ```ts ignore
 * import { openDescriptors } from "./descriptors.ts";
 * import { openLibc } from "./libc.ts";
 *
 * const fds = [...openDescriptors(openLibc("listing descriptors"))];
 * ```
 */
export function* openDescriptors(c: LibC): Generator<number> {
  const dir = c.open(
    new TextEncoder().encode("/proc/self/fd\0"),
    O_RDONLY_DIRECTORY_CLOEXEC,
  );
  if (dir < 0) {
    throw new DescriptorListError("cannot list /proc/self/fd");
  }
  const buffer = new Uint8Array(16 * 1024);
  const size = BigInt(buffer.byteLength);
  try {
    while (true) {
      const n = Number(c.getdents64(dir, buffer, size));
      if (n <= 0) break;
      // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type,
      // then the NUL-terminated name: here a decimal number, or . and ..
      for (let offset = 0; offset < n;) {
        let fd = 0;
        let at = offset + 19;
        for (; buffer[at] >= 0x30 && buffer[at] <= 0x39; at++) {
          fd = fd * 10 + buffer[at] - 0x30;
        }
        if (at > offset + 19 && buffer[at] === 0 && fd !== dir) yield fd;
        offset += buffer[offset + 16] | (buffer[offset + 17] << 8);
      }
    }
  } finally {
    c.close(dir);
  }
}

/**
 * How many descriptors this process has open, or `undefined` when they
 * cannot be counted: not Linux, or no FFI to libc (asked, never prompted
 * for).
 *
 * @example
 * ```ts
 * import { openDescriptorCount } from "./descriptors.ts";
 *
 * const open = openDescriptorCount(); // a number with --allow-ffi for libc
 * if (open !== undefined && open < 3) throw new Error(String(open));
 * ```
 */
export function openDescriptorCount(): number | undefined {
  try {
    let count = 0;
    for (const _ of openDescriptors(openLibc("counting open descriptors"))) {
      count++;
    }
    return count;
  } catch {
    return undefined;
  }
}
