/**
 * **sockets**: the classic C socket examples as small, safe Deno programs,
 * and the shared pieces they are built from.
 *
 * - Byte streams: {@linkcode readExact}, {@linkcode writeAll},
 *   {@linkcode LineReader} (bounded lines).
 * - Endpoints: {@linkcode parseEndpoint}, {@linkcode formatAddr}.
 * - The server life cycle: {@linkcode serve} (accept loop that survives
 *   errors, connection limit, idle timeout, graceful shutdown, logging).
 * - Addresses and clients: {@linkcode checkHost}, {@linkcode unmapIPv4},
 *   {@linkcode connectTcp} and {@linkcode readWithTimeout} (timeouts, one
 *   clear {@linkcode ConnectError} line for every failure).
 * - TCP keepalive, tuned like Go's `KeepAliveConfig`: {@linkcode setKeepAlive}.
 * - Clients: {@linkcode dialHost} (resolve, then Happy Eyeballs, RFC 8305),
 *   {@linkcode relay} (stdin/stdout to a socket, with half-close, as `nc`).
 * - The command-line conventions: {@linkcode runMain},
 *   {@linkcode parseCommandLine}, {@linkcode runServers}.
 *
 * The servers themselves live in `servers/` (each is a module too, e.g.
 * `serveEcho` from `servers/echo.ts`).
 *
 * @example An echo server inside a test
 * ```ts
 * import { readExact, writeAll } from "./mod.ts";
 * import { serveEcho } from "./servers/echo.ts";
 *
 * await using server = serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await writeAll(conn, new TextEncoder().encode("ping"));
 * const reply = new TextDecoder().decode(await readExact(conn, 4));
 * if (reply !== "ping") throw new Error(reply);
 * ```
 *
 * @module
 */

export * from "./lib/io.ts";
export * from "./lib/endpoint.ts";
export * from "./lib/log.ts";
export * from "./lib/unix.ts";
export * from "./lib/keepalive.ts";
export * from "./lib/server.ts";
export * from "./lib/cli.ts";
export * from "./lib/server_cli.ts";
export * from "./lib/access.ts";
export * from "./lib/tls.ts";
export * from "./lib/tls_client.ts";
export * from "./lib/address.ts";
export * from "./lib/client.ts";
export * from "./lib/simple.ts";
export * from "./lib/dial.ts";
export * from "./lib/relay.ts";
export * from "./lib/tz.ts";
export * from "./lib/workers.ts";
export * from "./lib/spawn.ts";
