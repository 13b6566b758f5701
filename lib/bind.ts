/**
 * Binding a server's socket, and saying why it failed in one line a user
 * can act on: another port when the address is in use, the command on
 * port + 10000 when a port below 1024 needs root, a bad TLS certificate.
 *
 * @module
 */

import { rerunCommand } from "./cli.ts";
import { joinHostPort, type Transport } from "./endpoint.ts";
import type { ServerOptions } from "./server_options.ts";

/**
 * Binding failed: the message says where and what to do about it (another
 * port, root for ports below 1024); `cause` is the system's error.
 *
 * @example
 * ```ts
 * import { ListenError } from "./bind.ts";
 * import { serve } from "./server.ts";
 * import { silentLog } from "./log.ts";
 *
 * const service = { name: "discard", defaultPort: 9, async stream() {} };
 * await using first = serve(service, { hostname: "127.0.0.1", port: 0, log: silentLog });
 * const { port } = first.addr as Deno.NetAddr;
 * try {
 *   serve(service, { hostname: "127.0.0.1", port, log: silentLog });
 *   throw new Error("bound twice");
 * } catch (error) {
 *   if (!(error instanceof ListenError)) throw error;
 * }
 * ```
 */
export class ListenError extends Error {
  /** Where the server tried to listen (`0.0.0.0:13`, or a socket path). */
  readonly address: string;

  /** Builds the error; `cause` is the system's error. */
  constructor(message: string, address: string, cause: unknown) {
    super(message, { cause });
    this.name = "ListenError";
    this.address = address;
  }
}

/**
 * Runs `listen` (a `Deno.listen` or `Deno.listenDatagram` call for
 * `hostOrPath` and `port`); a failure becomes a {@linkcode ListenError}
 * saying what to do, except a missing permission, which keeps Deno's
 * message naming the flag.
 */
export function bind<T>(listen: () => T, hostOrPath: string, port?: number): T {
  try {
    return listen();
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const address = port === undefined
      ? hostOrPath
      : joinHostPort(hostOrPath, port);
    const reason = (error as Error).message.replace(/ \(os error \d+\)$/, "");
    let message = `cannot listen on ${address}: ${reason}`;
    if (error instanceof Deno.errors.AddrInUse) {
      message = `address ${address} is already in use${
        port === undefined ? "" : " (pick another port with --port)"
      }`;
    } else if (
      error instanceof Deno.errors.PermissionDenied && port !== undefined &&
      port < 1024
    ) {
      message = `permission denied listening on ${address}: ports below 1024 ` +
        `need root or CAP_NET_BIND_SERVICE; ${userPortHint(hostOrPath, port)}`;
    } else if (error instanceof Deno.errors.AddrNotAvailable) {
      message = `cannot listen on ${address}: no such address on this host`;
    } else if (error instanceof Deno.errors.InvalidData) {
      message =
        `cannot listen on ${address}: bad TLS certificate or key: ${reason}`;
    }
    throw new ListenError(message, address, error);
  }
}

/** The command that runs this script on port + 10000, as inetd would. */
function userPortHint(hostname: string, port: number): string {
  const user = String(port + 10000);
  const udp = Deno.args.includes("--udp");
  const command = rerunCommand(
    udp
      ? ["--unstable-net", "--allow-net"]
      : [`--allow-net=${joinHostPort(hostname, port + 10000)}`],
    { port: user },
  );
  return command ? `as a user: ${command}` : `as a user, pick --port ${user}`;
}

/** The socket path of a Unix server, which it cannot do without. */
export function unixPath(transport: Transport, options: ServerOptions): string {
  if (!options.path) throw new TypeError(`${transport} needs a socket path`);
  return options.path;
}
