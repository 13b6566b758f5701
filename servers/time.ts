/**
 * Time server (RFC 868): sends the time as 32-bit big-endian seconds since
 * 1900-01-01T00:00Z and closes. The count is taken modulo 2^32, so it wraps
 * to 0 on 2036-02-07T06:28:16Z and stays correct after it (clients pick the
 * era nearest their clock). With `--udp`, any datagram gets the 4 bytes.
 *
 *     deno run --allow-net=0.0.0.0:37 servers/time.ts        # as root
 *     deno run --allow-net=0.0.0.0:10037 servers/time.ts --port 10037
 *     deno run --allow-net=127.0.0.1:10037 clients/time.ts 127.0.0.1 --port 10037
 *     rdate -p -o 10037 127.0.0.1
 *
 * UDP (replies go to whoever sent, so it needs host-wide net permission):
 *
 *     deno run --unstable-net --allow-net servers/time.ts --udp --port 10037
 *     rdate -p -u -o 10037 127.0.0.1
 *
 * @module
 */

import {
  encodeRfc868,
  flagsHelp,
  parseCommandLine,
  replyService,
  runMain,
  runServers,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  serveSimple,
  type Service,
  SIMPLE_SERVICE_PORTS,
} from "../mod.ts";

/**
 * The RFC 868 time service, for {@linkcode serveSimple} or an inetd. `now`
 * is for tests.
 *
 * @example The 4 bytes for 2040, after the 2036 wrap
 * ```ts
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
 * if (seconds !== 123010304) throw new Error(String(seconds));
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
 * import { serveTime } from "./time.ts";
 * import { dateFromRfc868, readExact } from "../mod.ts";
 *
 * await using server = serveTime({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * const bytes = await readExact(conn, 4);
 * const date = dateFromRfc868(new DataView(bytes.buffer).getUint32(0));
 * if (Math.abs(date.getTime() - Date.now()) > 5000) throw new Error(date.toISOString());
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

Port 37 needs root; as a user, pick one above 1023 (--port 10037).
Permissions: --allow-net=HOST:PORT for TCP; for --udp, --unstable-net and
--allow-net (replies go to any sender).`;

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
    });
    await runServers([{ server: serveTime(serverOptionsFromFlags(values)) }]);
  });
}
