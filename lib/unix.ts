/**
 * Unix socket files: replacing a stale one, refusing a live one, and never
 * deleting anything that is not a socket.
 *
 * @module
 */

/**
 * The path given for a Unix socket cannot be used: it is something other
 * than a socket (never deleted), a symbolic link (never followed), or a
 * socket a live server is listening on.
 *
 * @example
 * ```ts
 * import { UnixPathError } from "./unix.ts";
 *
 * const error = new UnixPathError("/tmp/x is not a socket", "/tmp/x");
 * if (error.path !== "/tmp/x") throw new Error("wrong path");
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
    if (error instanceof Error && /os error 91\b/.test(error.message)) {
      return true;
    }
    throw error;
  }
}
