/**
 * Accept server, from the seed's "Accepting connections on a blocking
 * socket" (the seed: the classic C socket examples page this toolkit
 * ports): listens on every IPv4 and IPv6 address (port 12345) and tells
 * each client which family it came over: prints `IPv4 client A.B.C.D` or
 * `IPv6 client ADDRESS` on stdout, sends the same line (ending in LF) back,
 * and closes. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) counts as
 * IPv4 and prints dotted.
 *
 * ```sh
 * $ deno run --allow-net=[::]:12345,0.0.0.0:12345 servers/accept.ts &
 * listening on [::]:12345 (IPv4 and IPv6)
 * $ socat - TCP:127.0.0.1:12345
 * IPv4 client 127.0.0.1
 * IPv4 client 127.0.0.1
 * accepted [::ffff:127.0.0.1]:32798
 * closed [::ffff:127.0.0.1]:32798 (0 bytes in, 22 bytes out)
 * $ socat - TCP:[::1]:12345
 * IPv6 client ::1
 * IPv6 client ::1
 * accepted [::1]:55856
 * closed [::1]:55856 (0 bytes in, 16 bytes out)
 * $ deno install -g -f -n sock-accept --config=deno.json --allow-net=[::]:12345,0.0.0.0:12345 servers/accept.ts
 * ...
 * $ sock-accept --help
 * usage: accept.ts [options]
 * ...
 * ```
 *
 * The seed binds `INADDR_ANY`, IPv4 only, and its `sockaddr_storage` test
 * never sees an IPv6 client. Here one socket on `::` takes both families
 * where the system makes it dual-stack (Linux's default,
 * `net.ipv6.bindv6only=0`: IPv4 clients arrive as `::ffff:A.B.C.D`); where
 * it is IPv6-only, a second socket on `0.0.0.0` takes IPv4. The server finds
 * out by binding `0.0.0.0` on the same port after `::`: in use means
 * dual-stack. Hence the permission for both. Without IPv6 on the host it
 * listens on `0.0.0.0` alone. `--hostname H` listens on H only.
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=[::]:12345,0.0.0.0:12345,127.0.0.1:9100 \
 *     servers/accept.ts --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on [::]:12345 (IPv4 and IPv6)
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="accept",transport="tcp"} 0
 * ```
 *
 * @module
 */

import {
  combineServers,
  flagsHelp,
  ListenError,
  type Log,
  parseCommandLine,
  parseIPv4,
  pickFlags,
  runMain,
  runServers,
  serve,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  type Service,
  stderrLog,
  TCP_SERVER_FLAG_NAMES,
  unmapIPv4,
  writeAll,
} from "../mod.ts";

/** The seed's port. */
export const ACCEPT_PORT = 12345;

/**
 * The line the server prints and sends for a client at `hostname` (LF
 * included): `IPv4 client A.B.C.D` (IPv4-mapped IPv6 too) or `IPv6 client
 * ADDRESS`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { clientLine } from "./accept.ts";
 *
 * assertEquals(clientLine("::ffff:192.0.2.1"), "IPv4 client 192.0.2.1\n");
 * assertEquals(clientLine("2001:db8::1"), "IPv6 client 2001:db8::1\n");
 * ```
 */
export function clientLine(hostname: string): string {
  const host = unmapIPv4(hostname);
  return `${parseIPv4(host) ? "IPv4" : "IPv6"} client ${host}\n`;
}

/**
 * The accept service, for {@linkcode serve}: print and send back
 * {@linkcode clientLine}, then close.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { acceptService } from "./accept.ts";
 *
 * assertEquals(acceptService().defaultPort, 12345);
 * ```
 */
export function acceptService(
  options: { output?: { write(p: Uint8Array): Promise<number> } } = {},
): Service {
  const output = options.output ?? Deno.stdout;
  const encoder = new TextEncoder();
  return {
    name: "accept",
    defaultPort: ACCEPT_PORT,
    async stream(conn, context) {
      const addr = context.remoteAddr;
      const line = encoder.encode(
        "hostname" in addr
          ? clientLine(addr.hostname)
          : `client ${context.peer}\n`,
      );
      await writeAll(output, line);
      await writeAll(conn, line);
      context.bytesOut += line.byteLength;
    },
  };
}

/** Options for {@linkcode serveAccept}. */
export interface AcceptOptions extends Omit<ServerOptions, "transport"> {
  /** Where the client lines go. Default stdout. */
  output?: { write(p: Uint8Array): Promise<number> };
}

/** The servers {@linkcode serveAccept} started: one or two sockets. */
export interface AcceptServer extends Server {
  /** Each listening socket, labelled `IPv6`/`IPv4` when there are two. */
  readonly sockets: { server: Server; label: string }[];
  /** `true` when one `::` socket takes IPv4 clients too. */
  readonly dualStack: boolean;
}

/**
 * Starts the accept server on every IPv4 and IPv6 address (or on
 * `options.hostname` only): one dual-stack `::` socket, or `::` and
 * `0.0.0.0` where IPv6 sockets are IPv6-only, or `0.0.0.0` alone without
 * IPv6.
 *
 * @example Both families on one port
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serveAccept } from "./accept.ts";
 *
 * const output = { write: (p: Uint8Array) => Promise.resolve(p.length) };
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * listener.close();
 * await using server = serveAccept({ port, output, log: () => {} });
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * const reply = new Uint8Array(64);
 * const n = await conn.read(reply);
 * const line = new TextDecoder().decode(reply.subarray(0, n ?? 0));
 * assertEquals(line, "IPv4 client 127.0.0.1\n");
 * ```
 */
export function serveAccept(options: AcceptOptions = {}): AcceptServer {
  const service = acceptService({ output: options.output });
  const tcp = { ...options, transport: "tcp" as const };
  const log: Log = options.log ?? stderrLog;
  if (options.hostname !== undefined) {
    return group([{ server: serve(service, tcp), label: "" }], false);
  }
  let v6: Server;
  try {
    v6 = serve(service, { ...tcp, hostname: "::" });
  } catch (error) {
    if (!(error instanceof ListenError) || !ipv6Unavailable(error.cause)) {
      throw error;
    }
    log(`IPv6 unavailable (${(error.cause as Error).message}): IPv4 only`);
    return group([{
      server: serve(service, { ...tcp, hostname: "0.0.0.0" }),
      label: "",
    }], false);
  }
  const port = (v6.addr as Deno.NetAddr).port;
  try {
    const v4 = serve(service, { ...tcp, hostname: "0.0.0.0", port });
    return group([
      { server: v6, label: "IPv6" },
      { server: v4, label: "IPv4" },
    ], false);
  } catch (error) {
    if (
      error instanceof ListenError &&
      error.cause instanceof Deno.errors.AddrInUse
    ) {
      // `::` already holds the IPv4 side of this port: dual-stack.
      return group([{ server: v6, label: "" }], true);
    }
    v6.shutdown();
    throw error;
  }
}

function ipv6Unavailable(cause: unknown): boolean {
  return !(cause instanceof Deno.errors.AddrInUse) &&
    !(cause instanceof Deno.errors.PermissionDenied) &&
    !(cause instanceof Deno.errors.NotCapable);
}

function group(
  sockets: { server: Server; label: string }[],
  dualStack: boolean,
): AcceptServer {
  return {
    ...combineServers(sockets.map((s) => s.server)),
    sockets,
    dualStack,
  };
}

const FLAGS = {
  ...pickFlags(
    serverFlags({ port: ACCEPT_PORT, hostname: ":: and 0.0.0.0" }),
    ...TCP_SERVER_FLAG_NAMES,
  ),
};

const USAGE = `usage: accept.ts [options]

Accept server: listens on all IPv4 and IPv6 addresses, prints "IPv4 client
A.B.C.D" or "IPv6 client ADDRESS" for each client, sends that line back and
closes.

${flagsHelp(FLAGS)}

Permissions: --allow-net=[::]:PORT,0.0.0.0:PORT (default port ${ACCEPT_PORT});
with --port 0: --allow-net=[::]:0,0.0.0.0.`;

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
    });
    const server = serveAccept(serverOptionsFromFlags(values));
    await runServers(
      server.sockets.map(({ server, label }) => ({ server, label })),
      server.dualStack
        ? (line) => stderrLog(`${line} (IPv4 and IPv6)`)
        : stderrLog,
    );
  });
}
