/**
 * Binding a server's socket (TCP, UDP, or a Unix socket file made safely),
 * and saying why it failed in one line a user can act on: another port when
 * the address is in use, the command on INETD_BASE + port when a port below 1024
 * needs root, a certificate that does not fit its key.
 *
 * @module
 */

import { notePermission, rerunCommand } from "./main.ts";
import { formatAddr, joinHostPort } from "./endpoint.ts";
import { withoutOsError } from "./os_error.ts";
import { INETD_BASE } from "./simple.ts";
import type { ServerOptions, Service } from "./server_options.ts";
import type { TlsCertificate } from "./tls.ts";
import { checkTlsCertificate } from "./tls_node.ts";
import { createUnixSocket, prepareUnixPath } from "./unix.ts";

/**
 * Binding failed: the message says where and what to do about it (another
 * port, root for ports below 1024); `cause` is the system's error.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { ListenError } from "./bind.ts";
 * import { serve } from "./server.ts";
 * import { silentLog } from "./log.ts";
 *
 * const service = { name: "discard", defaultPort: 9, async stream() {} };
 * await using first = serve(service, { hostname: "127.0.0.1", port: 0, log: silentLog });
 * const { port } = first.addr as Deno.NetAddr;
 * assertThrows(
 *   () => serve(service, { hostname: "127.0.0.1", port, log: silentLog }),
 *   ListenError,
 *   `address 127.0.0.1:${port} is already in use (pick another port with --port)`,
 * );
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
export function bind<T>(
  listen: () => T,
  hostOrPath: string,
  port?: number,
  transport: "tcp" | "udp" = "tcp",
): T {
  try {
    return listen();
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const address = port === undefined
      ? hostOrPath
      : joinHostPort(hostOrPath, port);
    const reason = withoutOsError((error as Error).message);
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
        `need root or CAP_NET_BIND_SERVICE; ${
          userPortHint(hostOrPath, port, transport)
        }`;
    } else if (error instanceof Deno.errors.AddrNotAvailable) {
      message = `cannot listen on ${address}: no such address on this host`;
    } else if (error instanceof Deno.errors.InvalidData) {
      message =
        `cannot listen on ${address}: bad TLS certificate or key: ${reason}`;
    }
    throw new ListenError(message, address, error);
  }
}

/** The command that runs this script where inetd.ts would put the port. */
function userPortHint(
  hostname: string,
  port: number,
  transport: "tcp" | "udp",
): string {
  const user = String(INETD_BASE + port);
  const command = rerunCommand(
    transport === "udp"
      ? ["--unstable-net", "--allow-net"]
      : [`--allow-net=${joinHostPort(hostname, INETD_BASE + port)}`],
    { port: user },
  );
  return command ? `as a user: ${command}` : `as a user, pick --port ${user}`;
}

/** A server's socket as binding it gave it. */
export interface Binding<T> {
  /** The bound address (for `port: 0`, the real port), or the socket path. */
  readonly addr: Deno.Addr;
  /**
   * Settles once the socket may serve: at once for TCP and UDP, for a Unix
   * socket once a stale socket file was replaced, for TLS once the
   * certificate passed its check. Rejects when binding failed.
   */
  readonly ready: Promise<void>;
  /** The socket: at once for TCP and UDP, for a Unix one once `ready` settles. */
  socket(): T | undefined;
  /**
   * Unix: the inode of the socket file, once bound. While the socket is
   * open its inode cannot be reused: this number tells it from whatever
   * replaces it.
   */
  inode(): number | undefined;
}

/** The TCP or UDP address `options` name, with the service's defaults. */
function netAddress(
  service: Pick<Service, "defaultHostname" | "defaultPort">,
  options: ServerOptions,
): { hostname: string; port: number } {
  return {
    hostname: options.hostname ?? service.defaultHostname ?? "0.0.0.0",
    port: options.port ?? service.defaultPort,
  };
}

/**
 * Notes the permissions listening where `options` say needs (`main.ts`'s
 * `notePermission`), so that a later permission hint gives a command
 * that also listens. Binding notes them; a server that checks something
 * else first (exec.ts, its program) notes them before.
 *
 * @example
 * ```ts
 * import { noteListenPermissions } from "./bind.ts";
 *
 * noteListenPermissions({ defaultPort: 8000 }, { transport: "tcp" });
 * ```
 */
export function noteListenPermissions(
  service: Pick<Service, "defaultHostname" | "defaultPort">,
  options: ServerOptions,
): void {
  const transport = options.transport ?? "tcp";
  if (transport === "unix" || transport === "unixpacket") {
    if (transport === "unixpacket") notePermission("--unstable-net");
    const path = options.path ?? "";
    notePermission("--allow-net", `unix:${path}`);
    notePermission("--allow-read", path);
    notePermission("--allow-write", path);
    return;
  }
  if (transport === "udp") {
    // A UDP server answers anyone: Deno checks each reply's destination.
    notePermission("--unstable-net");
    notePermission("--allow-net");
    return;
  }
  const { hostname, port } = netAddress(service, options);
  notePermission("--allow-net", joinHostPort(hostname, port));
}

/**
 * Binds a stream server's listener: TCP (`reusePort` for a worker group;
 * with TLS, `ready` waits for the certificate's check) or a Unix stream
 * socket.
 */
export function bindStream(
  service: Service,
  transport: "tcp" | "unix",
  options: ServerOptions,
  reusePort: boolean,
): Binding<Deno.Listener> {
  noteListenPermissions(service, { ...options, transport });
  if (transport === "unix") {
    if (options.tls) throw new TypeError("TLS is served over TCP only");
    return bindUnix(
      "unix",
      options,
      (path) => Deno.listen({ transport: "unix", path }),
    );
  }
  const { hostname, port } = netAddress(service, options);
  const listener = bind(
    () =>
      Deno.listen({
        transport: "tcp",
        hostname,
        port,
        ...(reusePort && { reusePort: true }),
      }),
    hostname,
    port,
  );
  const ready = options.tls
    ? checkCertificate(listener, options.tls)
    : Promise.resolve();
  return {
    addr: listener.addr,
    ready,
    socket: () => listener,
    inode: () => undefined,
  };
}

/** A key that does not fit its certificate fails here, once. */
function checkCertificate(
  listener: Deno.Listener,
  certificate: TlsCertificate,
): Promise<void> {
  const address = formatAddr(listener.addr);
  return checkTlsCertificate(certificate).catch((error) => {
    listener.close();
    throw new ListenError(
      `cannot serve TLS on ${address}: certificate and key do not work together (does the key match the certificate?): ${
        (error as Error).message.split("\n")[0]
      }`,
      address,
      error,
    );
  });
}

/** Binds a datagram server's socket: UDP or a Unix datagram socket. */
export function bindDatagram(
  service: Service,
  transport: "udp" | "unixpacket",
  options: ServerOptions,
): Binding<Deno.DatagramConn> {
  noteListenPermissions(service, { ...options, transport });
  if (transport === "unixpacket") {
    return bindUnix(
      "unixpacket",
      options,
      (path) => Deno.listenDatagram({ transport: "unixpacket", path }),
    );
  }
  const { hostname, port } = netAddress(service, options);
  const socket = bind(
    () => Deno.listenDatagram({ transport: "udp", hostname, port }),
    hostname,
    port,
    "udp",
  );
  return {
    addr: socket.addr,
    ready: Promise.resolve(),
    socket: () => socket,
    inode: () => undefined,
  };
}

/**
 * Binds a Unix socket at `options.path` once the path is free (a stale
 * socket replaced, anything else refused: see `prepareUnixPath`), with the
 * file mode `options.mode`.
 */
function bindUnix<T extends { close(): void }>(
  transport: "unix" | "unixpacket",
  options: ServerOptions,
  listen: (path: string) => T,
): Binding<T> {
  if (!options.path) throw new TypeError(`${transport} needs a socket path`);
  const path = options.path;
  let socket: T | undefined;
  let inode: number | undefined;
  const ready = prepareUnixPath(path).then(() => {
    socket = bind(
      () => createUnixSocket(path, () => listen(path), options.mode),
      path,
    );
    inode = Deno.lstatSync(path).ino ?? undefined;
  });
  return {
    addr: { transport, path },
    ready,
    socket: () => socket,
    inode: () => inode,
  };
}
