/**
 * Unix socket files: replacing a stale one, refusing a live one, never
 * deleting anything that is not a socket, and, when a server stops, telling
 * its own socket from whatever replaced it.
 *
 * @module
 */

import process from "node:process";
import { osErrorNumber } from "./os_error.ts";

/**
 * The path given for a Unix socket cannot be used: it is something other
 * than a socket (never deleted), a symbolic link (never followed), or a
 * socket a live server is listening on.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { UnixPathError } from "./unix.ts";
 *
 * const error = new UnixPathError("/tmp/x is not a socket", "/tmp/x");
 * assertEquals([error.name, error.path], ["UnixPathError", "/tmp/x"]);
 * ```
 */
export class UnixPathError extends Error {
  /** The socket path in question. */
  readonly path: string;

  /** Builds the error for `path`. */
  constructor(message: string, path: string) {
    super(message);
    this.name = "UnixPathError";
    this.path = path;
  }
}

/**
 * Makes `path` free for a new Unix socket: nothing there is fine; a socket
 * nobody listens on (left by a crashed server) is removed; a live socket
 * rejects with {@linkcode Deno.errors.AddrInUse}; anything else (a file, a
 * directory, a symbolic link) rejects with {@linkcode UnixPathError} and is
 * left alone.
 *
 * Needs `--allow-net=unix:PATH --allow-read=PATH --allow-write=PATH`.
 *
 * @example
 * ```ts ignore
 * import { prepareUnixPath } from "./unix.ts";
 *
 * await prepareUnixPath("/tmp/echo.sock");
 * using listener = Deno.listen({ transport: "unix", path: "/tmp/echo.sock" });
 * ```
 */
export async function prepareUnixPath(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (info.isSymlink) {
    throw new UnixPathError(
      `${path} is a symbolic link; refusing to follow or remove it`,
      path,
    );
  }
  if (!info.isSocket) {
    throw new UnixPathError(
      `${path} exists and is not a socket; refusing to remove it`,
      path,
    );
  }
  if (await isLive(path)) {
    throw new Deno.errors.AddrInUse(
      `${path} is in use by a running server`,
    );
  }
  Deno.removeSync(path);
}

async function isLive(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionRefused) return false;
    if (error instanceof Deno.errors.NotFound) return false;
    // EPROTOTYPE: a live datagram socket answered a stream connect.
    if (osErrorNumber(error) === 91) {
      return true;
    }
    throw error;
  }
}

/**
 * Who has `path` now, for a server about to stop that created a socket
 * there with inode `inode`: `"ours"` (still that socket: remove it),
 * `"gone"` (nothing there), or `"other"` (a file, a link, or another
 * server's socket replaced it, or it cannot be looked at: not ours to
 * delete). While the server's
 * socket is open its inode cannot be reused, so the number identifies it.
 *
 * Needs `--allow-read=PATH`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { socketFileOwner } from "./unix.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * const path = `${dir}/echo.sock`;
 * const listener = Deno.listen({ transport: "unix", path });
 * const inode = Deno.lstatSync(path).ino ?? undefined;
 * assertEquals(socketFileOwner(path, inode), "ours");
 * listener.close(); // Deno removes the file
 * assertEquals(socketFileOwner(path, inode), "gone");
 * Deno.removeSync(dir);
 * ```
 */
export function socketFileOwner(
  path: string,
  inode: number | undefined,
): "ours" | "gone" | "other" {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (error) {
    // What cannot be looked at cannot be known to be ours.
    return error instanceof Deno.errors.NotFound ? "gone" : "other";
  }
  return info.isSocket && inode !== undefined && info.ino === inode
    ? "ours"
    : "other";
}

/** Mode of a new Unix socket file unless told otherwise: owner only. */
export const DEFAULT_UNIX_SOCKET_MODE = 0o600;

/**
 * Creates a Unix socket file at `path` with `bind` (a `Deno.listen` or
 * `Deno.listenDatagram` call) so that it carries exactly `mode` (default
 * {@linkcode DEFAULT_UNIX_SOCKET_MODE}; connecting needs write permission on
 * the file, so 0600 lets only its owner in).
 *
 * With `--allow-sys` the process umask is narrowed around `bind`, so the file
 * never exists with a wider mode. Without it (the least-privilege case) the
 * file is created with the umask's mode (0755 under the usual umask 022,
 * which lets nobody else connect either) and changed to `mode` in the same
 * step, before anything is accepted. A path that is not the new socket by
 * then (replaced meanwhile) is never changed: `chmod` would follow a link.
 *
 * Needs `--allow-write=PATH` besides what `bind` needs.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { createUnixSocket } from "./unix.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * const path = `${dir}/echo.sock`;
 * const listener = createUnixSocket(
 *   path,
 *   () => Deno.listen({ transport: "unix", path }),
 *   0o600,
 * );
 * assertEquals(Deno.lstatSync(path).mode! & 0o777, 0o600);
 * listener.close();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function createUnixSocket<T extends { close(): void }>(
  path: string,
  bind: () => T,
  mode: number = DEFAULT_UNIX_SOCKET_MODE,
): T {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    throw new RangeError(`invalid socket file mode ${mode}`);
  }
  const previous = narrowUmask(~mode & 0o777);
  let result: T;
  try {
    result = bind();
  } finally {
    if (previous !== undefined) process.umask(previous);
  }
  try {
    const info = Deno.lstatSync(path);
    if (info.isSocket && (info.mode! & 0o777) !== mode) {
      Deno.chmodSync(path, mode);
    }
  } catch (error) {
    result.close();
    throw error;
  }
  return result;
}

/** Sets the umask when allowed to; returns the old one, or `undefined`. */
function narrowUmask(mask: number): number | undefined {
  if (Deno.permissions.querySync({ name: "sys" }).state !== "granted") {
    return undefined;
  }
  try {
    return process.umask(mask);
  } catch {
    return undefined;
  }
}
