/**
 * libc through FFI, opened once per process, for what Deno has no API for:
 * keepalive timing and resets (`keepalive.ts`), the descriptor limit
 * (`descriptors.ts`). FFI runs native code outside Deno's sandbox: it
 * takes `--allow-ffi` for libc's path (see {@linkcode ffiFlag}), granted
 * only to programs you trust.
 *
 * @module
 */

/** Why libc could not be opened. */
export type LibcErrorReason = "unsupported" | "permission";

/**
 * libc could not be opened: `permission` (no `--allow-ffi` for it),
 * `unsupported` (not Linux, or no libc where FFI may look). The message is
 * one line naming the flag to add.
 *
 * @example
 * ```ts
 * import { LibcError } from "./libc.ts";
 *
 * const error = new LibcError("permission", "tuning keepalive needs --allow-ffi");
 * if (error.reason !== "permission") throw error;
 * ```
 */
export class LibcError extends Error {
  /** What went wrong. */
  readonly reason: LibcErrorReason;

  /** Builds the error; `message` is the line a user sees. */
  constructor(
    reason: LibcErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "LibcError";
    this.reason = reason;
  }
}

/** Where distributions keep glibc; the first that FFI may open wins. */
const LIBC_PATHS = [
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib/aarch64-linux-gnu/libc.so.6",
  "/usr/lib/x86_64-linux-gnu/libc.so.6",
  "/usr/lib/aarch64-linux-gnu/libc.so.6",
  "/lib64/libc.so.6",
  "/usr/lib64/libc.so.6",
  "/usr/lib/libc.so.6",
  "/lib/libc.so.6",
];

/**
 * The flag a user adds: scoped to libc where Debian and Ubuntu keep it for
 * this architecture, and how to find it elsewhere (Fedora's `/lib64`,
 * Arch's `/usr/lib`): without read permission there is no looking.
 *
 * @example
 * ```ts
 * import { ffiFlag } from "./libc.ts";
 *
 * if (!ffiFlag().startsWith("--allow-ffi=/lib/")) throw new Error(ffiFlag());
 * ```
 */
export function ffiFlag(): string {
  const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
  return `--allow-ffi=/lib/${arch}-linux-gnu/libc.so.6 (Debian, Ubuntu; ${LIBC_WHERE}), or --allow-ffi`;
}

/** How a user finds the path to grant. */
const LIBC_WHERE = "find yours with `ldconfig -p | grep libc.so.6`";

const SYMBOLS = {
  // Only `buffer` arguments: reading native memory (UnsafePointerView)
  // would need unscoped --allow-ffi.
  setsockopt: {
    parameters: ["i32", "i32", "i32", "buffer", "u32"],
    result: "i32",
  },
  getsockopt: {
    parameters: ["i32", "i32", "i32", "buffer", "buffer"],
    result: "i32",
  },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  getdents64: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

/** The libc functions this toolkit calls. */
export type LibC = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: LibC | undefined;

/**
 * Opens libc once per process (the handle is cached, never closed); `what`
 * names the feature in the error when FFI is not allowed. Throws
 * {@linkcode LibcError}.
 *
 * @example
 * ```ts
 * import { LibcError, openLibc } from "./libc.ts";
 *
 * try {
 *   openLibc("tuning keepalive").getrlimit(7, new BigUint64Array(2));
 * } catch (error) {
 *   if (!(error instanceof LibcError)) throw error; // no --allow-ffi
 * }
 * ```
 */
export function openLibc(what: string): LibC {
  if (libc) return libc;
  if (Deno.build.os !== "linux") {
    throw new LibcError(
      "unsupported",
      `${what} is supported on Linux only, not ${Deno.build.os}; plain keepalive on a TCP connection works everywhere`,
    );
  }
  const granted = (path?: string) => {
    try {
      return Deno.permissions.querySync({ name: "ffi", path }).state ===
        "granted";
    } catch {
      return false;
    }
  };
  // A scoped grant resolves a bare name against the working directory, so
  // ask for absolute paths first; the bare soname only with full access.
  const candidates = LIBC_PATHS.filter((path) => granted(path));
  if (granted()) candidates.push("libc.so.6");
  if (candidates.length === 0) {
    throw new LibcError(
      "permission",
      `${what} needs ${ffiFlag()}`,
    );
  }
  let lastError: unknown;
  for (const path of candidates) {
    try {
      libc = Deno.dlopen(path, SYMBOLS).symbols;
      return libc;
    } catch (error) {
      lastError = error;
    }
  }
  throw new LibcError(
    "unsupported",
    `${what}: cannot open libc at ${
      candidates.join(", ")
    }: grant this machine's libc with --allow-ffi=PATH (${LIBC_WHERE}), or --allow-ffi`,
    { cause: lastError },
  );
}
