/**
 * Time server (RFC 868): sends the time as 32-bit big-endian seconds since
 * 1900-01-01T00:00Z and closes. The count is taken modulo 2^32, so it wraps
 * to 0 on 2036-02-07T06:28:16Z and stays correct after it (clients pick the
 * era nearest their clock). With `--udp`, any datagram gets the 4 bytes.
 * No seed example: one of the RFC simple services the seed's servers are
 * the start of (the seed: the classic C socket examples page this toolkit
 * ports).
 *
 * As a user, on port 10037, where inetd puts it (`deno task time`), asked
 * by `od`, `rdate` and the time client:
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10037 servers/time.ts --port=10037 &
 * listening on 0.0.0.0:10037
 * $ socat -u TCP:127.0.0.1:10037 - | od -An -tx1
 *  ee b1 76 41
 * accepted 127.0.0.1:50540
 * closed 127.0.0.1:50540 (0 bytes in, 4 bytes out)
 * $ rdate -p -o 10037 127.0.0.1
 * Wed Nov 25 14:59:13 UTC 2026
 * $ deno task time-client 127.0.0.1
 * 2026-11-25T14:59:13Z
 * ```
 *
 * UDP (replies go to whoever sent, so it needs host-wide net permission);
 * port 37 itself needs root:
 *
 * ```sh
 * $ deno run --unstable-net --allow-net servers/time.ts --udp --port=10037 &
 * listening on 0.0.0.0:10037
 * $ rdate -p -u -o 10037 127.0.0.1
 * Wed Nov 25 14:59:13 UTC 2026
 * $ deno run --allow-net=0.0.0.0:37 servers/time.ts &   # as root
 * listening on 0.0.0.0:37
 * $ deno install -g -f -n sock-time --config=deno.json --allow-net=0.0.0.0:10037 servers/time.ts -- --port=10037
 * ...
 * $ sock-time --help
 * usage: time.ts [options]
 * ...
 * ```
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10037,127.0.0.1:9100 servers/time.ts \
 *     --port=10037 --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:10037
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="time",transport="tcp"} 0
 * ```
 *
 * @module
 */

import {
  encodeRfc868,
  flagsHelp,
  replyService,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  serveSimple,
  type Service,
  SIMPLE_SERVICE_PORTS,
  udpGuardHelp,
  userPortHelp,
} from "../mod.ts";
import { runServerScript } from "../lib/server_cli.ts";

/**
 * The RFC 868 time service, for {@linkcode serveSimple} or an inetd. `now`
 * is for tests.
 *
 * @example The 4 bytes for 2040, after the 2036 wrap
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { timeService } from "./time.ts";
 *
 * const service = timeService(() => new Date("2040-01-01T00:00:00Z"));
 * const reply = await service.datagram!(new Uint8Array(0), {
 *   transport: "udp",
 *   hostname: "127.0.0.1",
 *   port: 5000,
 * });
 * const seconds = new DataView(reply!.buffer).getUint32(0);
 * // 1900 to 2040 is 4417977600 s; modulo 2^32 that is 123010304.
 * assertEquals(seconds, 123010304);
 * ```
 */
export function timeService(now: () => Date = () => new Date()): Service {
  return replyService(
    "time",
    SIMPLE_SERVICE_PORTS.time,
    () => encodeRfc868(now()),
  );
}

/**
 * Starts a time server (default TCP on 0.0.0.0:37).
 *
 * @example
 * ```ts
 * import { assertAlmostEquals } from "@std/assert";
 * import { serveTime } from "./time.ts";
 * import { dateFromRfc868, readExact } from "../mod.ts";
 *
 * await using server = serveTime({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * const bytes = await readExact(conn, 4);
 * const date = dateFromRfc868(new DataView(bytes.buffer).getUint32(0));
 * assertAlmostEquals(date.getTime(), Date.now(), 5000);
 * ```
 */
export function serveTime(options: ServerOptions = {}): Server {
  return serveSimple(timeService(), options);
}

const FLAGS = {
  ...serverFlags({ port: SIMPLE_SERVICE_PORTS.time }),
};

const USAGE = `usage: time.ts [options]

Time server (RFC 868): sends seconds since 1900 (32-bit, big-endian, modulo
2^32) and closes; with --udp, answers each datagram.

${flagsHelp(FLAGS)}

${udpGuardHelp()}

${userPortHelp("time")}
Permissions: --allow-net=HOST:PORT for TCP; for --udp, --unstable-net and
--allow-net (replies go to any sender).`;

if (import.meta.main) {
  await runServerScript(
    USAGE,
    FLAGS,
    (values) => serveTime(serverOptionsFromFlags(values)),
  );
}
