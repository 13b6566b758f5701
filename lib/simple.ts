/**
 * What the RFC "simple services" (echo, discard, daytime, qotd, chargen,
 * time) share: their well-known ports, the ports a UDP reply must never go
 * to (CVE-1999-0103 loops), the 512-byte cap on a datagram reply, and a
 * service that writes one reply and closes. (RFC 868's 32-bit time is in
 * `rfc868.ts`.)
 *
 * @module
 */

import { writeAll } from "./io.ts";
import { serve } from "./server.ts";
import type { Server, ServerOptions, Service } from "./server_options.ts";

/** The well-known port of each simple service (RFC 862-868). */
export const SIMPLE_SERVICE_PORTS: Readonly<
  Record<"echo" | "discard" | "daytime" | "qotd" | "chargen" | "time", number>
> = Object.freeze({
  echo: 7,
  discard: 9,
  daytime: 13,
  qotd: 17,
  chargen: 19,
  time: 37,
});

/**
 * The default ports of this toolkit's own UDP servers that answer any
 * datagram (`servers/echo.ts`, `servers/udp.ts`): one of them there would
 * answer back, so the simple services never answer these ports either.
 */
export const TOOLKIT_UDP_PORTS: Readonly<Record<"echo" | "udpHello", number>> =
  Object.freeze({ echo: 15000, udpHello: 3500 });

/** The base port `servers/inetd.ts` adds the well-known ports to. */
export const INETD_BASE = 10000;

/**
 * The paragraph of a simple service's `--help` on running it without root:
 * its well-known port is below 1024, so a user takes the port inetd's base
 * gives it ({@linkcode INETD_BASE} + the port), with the command and the
 * task that runs it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { userPortHelp } from "./simple.ts";
 *
 * assertEquals(
 *   userPortHelp("daytime"),
 *   "Port 13 needs root; as a user, use 10013 (as inetd does):\n" +
 *     "deno run --allow-net=0.0.0.0:10013 servers/daytime.ts --port 10013\n" +
 *     "(deno task daytime runs that).",
 * );
 * ```
 */
export function userPortHelp(name: keyof typeof SIMPLE_SERVICE_PORTS): string {
  const port = SIMPLE_SERVICE_PORTS[name];
  const user = INETD_BASE + port;
  return [
    `Port ${port} needs root; as a user, use ${user} (as inetd does):`,
    `deno run --allow-net=0.0.0.0:${user} servers/${name}.ts --port ${user}`,
    `(deno task ${name} runs that).`,
  ].join("\n");
}

/**
 * Most bytes a simple service sends in one UDP reply (RFC 864 and 865 both
 * say 512), so a small spoofed request cannot buy a large answer.
 */
export const MAX_SIMPLE_DATAGRAM = 512;

/**
 * The source ports a simple service's UDP side never answers: every simple
 * service's port at each of `bases` (0 is the well-known ports), this
 * toolkit's own ({@linkcode TOOLKIT_UDP_PORTS}), plus `extra` (a server's
 * own port: the same service elsewhere would answer back). Replying to one
 * of these can start an endless loop between two services
 * (CVE-1999-0103), even when low ports are otherwise allowed.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { simpleLoopPorts } from "./simple.ts";
 *
 * assertEquals(
 *   [...simpleLoopPorts([0, 10000], [20000])].sort((a, b) => a - b),
 *   [7, 9, 13, 17, 19, 37, 3500, 10007, 10009, 10013, 10017, 10019, 10037, 15000, 20000],
 * );
 * ```
 */
export function simpleLoopPorts(
  bases: readonly number[] = [0, INETD_BASE],
  extra: readonly number[] = [],
): Set<number> {
  const ports = new Set<number>();
  for (const base of bases) {
    for (const port of Object.values(SIMPLE_SERVICE_PORTS)) {
      if (base + port <= 65535) ports.add(base + port);
    }
  }
  for (const port of Object.values(TOOLKIT_UDP_PORTS)) ports.add(port);
  for (const port of extra) if (port > 0) ports.add(port);
  return ports;
}

/**
 * Starts a simple service with its loop protection on: unless `options`
 * says otherwise, UDP datagrams from {@linkcode simpleLoopPorts} (the
 * well-known ports, inetd's default range, this toolkit's own servers'
 * ports and the server's own port) are dropped, counted in the log.
 *
 * @example
 * ```ts
 * import { serveSimple } from "./simple.ts";
 * import { silentLog } from "./log.ts";
 *
 * await using server = serveSimple(
 *   { name: "discard", defaultPort: 9, datagram: () => null },
 *   { transport: "udp", hostname: "127.0.0.1", port: 0, log: silentLog },
 * );
 * ```
 */
export function serveSimple(
  service: Service,
  options: ServerOptions = {},
): Server {
  const port = options.port ?? service.defaultPort;
  return serve(service, {
    dropSourcePorts: simpleLoopPorts([0, INETD_BASE], [port]),
    ...options,
  });
}

/**
 * A service that answers every connection and every datagram with
 * `reply()` (computed afresh each time) and nothing else: the shape of
 * daytime, qotd and time. A connection is closed once the reply is written;
 * anything the client sends is ignored.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { replyService } from "./simple.ts";
 *
 * const service = replyService("hello", 4000, () => new TextEncoder().encode("hi\r\n"));
 * const reply = await service.datagram!(new Uint8Array(0), {
 *   transport: "udp",
 *   hostname: "127.0.0.1",
 *   port: 5000,
 * });
 * assertEquals(reply, new TextEncoder().encode("hi\r\n"));
 * ```
 */
export function replyService(
  name: string,
  defaultPort: number,
  reply: () => Uint8Array,
): Service {
  return {
    name,
    defaultPort,
    async stream(conn, context) {
      const bytes = reply();
      await writeAll(conn, bytes);
      context.bytesOut += bytes.byteLength;
    },
    datagram: () => reply(),
  };
}
