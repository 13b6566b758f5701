/**
 * Daytime server (RFC 867), from the seed's "TCP Daytime Iterative Server"
 * (the seed: the classic C socket examples page this toolkit ports): on
 * each connection, writes the local time as C's `ctime()` prints it, cut to
 * 24 characters, plus CRLF (`Tue Nov  4 09:05:01 2026\r\n`), then closes.
 * With `--udp`, any datagram is answered with the same line.
 *
 * Port 13 needs root, so the command a user runs puts it where inetd
 * does, on 10013 (`deno task daytime` runs this one):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10013 --allow-env=TZ servers/daytime.ts --port=10013 &
 * listening on 0.0.0.0:10013
 * $ socat - TCP:127.0.0.1:10013
 * Wed Nov 25 14:59:03 2026
 * accepted 127.0.0.1:50380
 * closed 127.0.0.1:50380 (0 bytes in, 26 bytes out)
 * $ deno task daytime-client 127.0.0.1
 * Wed Nov 25 14:59:03 2026
 * ```
 *
 * The time zone is the process's: `TZ` names (`Europe/Paris`) need nothing
 * more; POSIX rule strings (`TZ=CET-1CEST,M3.5.0,M10.5.0/3`) need
 * `--allow-env=TZ` (in the command above) to be applied as C applies them.
 * A `TZ` that is neither is one log line (`TZ='...' is neither a zone name
 * ... : local time is UTC`); an unset one, the host's zone, none.
 *
 * Port 13 itself needs root; as a user, the error gives the command above:
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:13 servers/daytime.ts
 * error: permission denied listening on 0.0.0.0:13: ports below 1024 need root or CAP_NET_BIND_SERVICE; as a user: deno run --allow-net=0.0.0.0:10013 servers/daytime.ts --port 10013
 * $ deno run --allow-net=0.0.0.0:13 servers/daytime.ts &   # as root
 * listening on 0.0.0.0:13
 * ```
 *
 * UDP (a reply goes to whoever sent, so it needs host-wide net permission),
 * and as an installed command:
 *
 * ```sh
 * $ deno run --unstable-net --allow-net servers/daytime.ts --udp --port=10013 &
 * listening on 0.0.0.0:10013
 * $ echo | socat - UDP:127.0.0.1:10013,sourceport=40000
 * Wed Nov 25 14:59:03 2026
 * $ deno install -g -f -n sock-daytime --config=deno.json --allow-net=0.0.0.0:10013 --allow-env=TZ servers/daytime.ts -- --port=10013
 * ...
 * $ sock-daytime --help
 * usage: daytime.ts [options]
 * ...
 * ```
 *
 * Unlike the seed, which serves one client at a time and dies on the first
 * failed `accept`, this serves many at once, survives accept errors, gives
 * the command to run as a user when port 13 needs root, and protects its
 * UDP side against loops and floods.
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10013,127.0.0.1:9100 servers/daytime.ts \
 *     --port=10013 --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:10013
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="daytime",transport="tcp"} 0
 * ```
 *
 * @module
 */

import {
  flagsHelp,
  type PosixTimeZone,
  posixZoneDateMisses,
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

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
];

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

let processZone: PosixTimeZone | null | undefined;

/**
 * `date` in local time as C's `ctime()` prints it, without its newline:
 * `Tue Nov  4 09:05:01 2026` (day of month padded with a space), always
 * 24 characters (cut, as the seed cuts it, for years past 9999). Local
 * time is the process's `TZ`, as `Date` reads it; a POSIX rule string that
 * `Date` does not know (`CET-1CEST,M3.5.0,M10.5.0/3`) is applied as C
 * applies it when `--allow-env=TZ` is granted (see `posixZoneDateMisses`),
 * or pass `zone` to choose.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { ctime } from "./daytime.ts";
 * import { parsePosixTimeZone } from "../mod.ts";
 *
 * assertEquals(ctime(new Date(2026, 10, 4, 9, 5, 1)), "Wed Nov  4 09:05:01 2026");
 * const india = parsePosixTimeZone("IST-5:30");
 * const utc = new Date("2026-11-04T03:35:01Z");
 * assertEquals(ctime(utc, india), "Wed Nov  4 09:05:01 2026");
 * ```
 */
export function ctime(date: Date, zone?: PosixTimeZone | null): string {
  if (zone === undefined) {
    // Looked up once: `??=` would look again on every call while it is null.
    if (processZone === undefined) processZone = posixZoneDateMisses();
    zone = processZone;
  }
  let fields: Date = date;
  let utc = false;
  if (zone) {
    fields = new Date(date.getTime() + zone.offsetSecondsAt(date) * 1000);
    utc = true;
  }
  const day = utc ? fields.getUTCDate() : fields.getDate();
  const weekday = utc ? fields.getUTCDay() : fields.getDay();
  const month = utc ? fields.getUTCMonth() : fields.getMonth();
  const year = utc ? fields.getUTCFullYear() : fields.getFullYear();
  const hours = utc ? fields.getUTCHours() : fields.getHours();
  const minutes = utc ? fields.getUTCMinutes() : fields.getMinutes();
  const seconds = utc ? fields.getUTCSeconds() : fields.getSeconds();
  const text = `${DAYS[weekday]} ${MONTHS[month]} ${
    day < 10 ? ` ${day}` : day
  } ${pad2(hours)}:${pad2(minutes)}:${pad2(seconds)} ${year}`;
  return text.slice(0, 24);
}

/**
 * The RFC 867 daytime service: {@linkcode ctime} of now plus CRLF, for
 * {@linkcode serveSimple} or an inetd. `now` is for tests.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { daytimeService } from "./daytime.ts";
 *
 * const service = daytimeService(() => new Date(2026, 0, 2, 3, 4, 5));
 * const reply = await service.datagram!(new Uint8Array(0), {
 *   transport: "udp",
 *   hostname: "127.0.0.1",
 *   port: 5000,
 * });
 * assertEquals(new TextDecoder().decode(reply!), "Fri Jan  2 03:04:05 2026\r\n");
 * ```
 */
export function daytimeService(now: () => Date = () => new Date()): Service {
  const encoder = new TextEncoder();
  // The line changes once a second: formatted and encoded once a second,
  // not once a connection (the bytes are only ever read).
  let second = NaN;
  let line = new Uint8Array(0);
  return replyService("daytime", SIMPLE_SERVICE_PORTS.daytime, () => {
    const date = now();
    const current = Math.floor(date.getTime() / 1000);
    if (current !== second) {
      line = encoder.encode(`${ctime(date)}\r\n`);
      second = current;
    }
    return line;
  });
}

/**
 * Starts a daytime server (default TCP on 0.0.0.0:13).
 *
 * @example
 * ```ts
 * import { assertMatch } from "@std/assert";
 * import { serveDaytime } from "./daytime.ts";
 * import { readExact } from "../mod.ts";
 *
 * await using server = serveDaytime({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * const line = new TextDecoder().decode(await readExact(conn, 26));
 * assertMatch(line, /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n$/);
 * ```
 */
export function serveDaytime(options: ServerOptions = {}): Server {
  return serveSimple(daytimeService(), options);
}

const FLAGS = {
  ...serverFlags({ port: SIMPLE_SERVICE_PORTS.daytime }),
};

const USAGE = `usage: daytime.ts [options]

Daytime server (RFC 867): sends the local time as C's ctime() prints it
(TZ honoured), CRLF, then closes; with --udp, answers each datagram.

${flagsHelp(FLAGS)}

${udpGuardHelp()}

${userPortHelp("daytime")}
Permissions: --allow-net=HOST:PORT for TCP; for --udp, --unstable-net and
--allow-net (replies go to any sender). TZ names (Europe/Paris) need nothing
more; POSIX rule strings (TZ=CET-1CEST,M3.5.0,M10.5.0/3) need
--allow-env=TZ, or they are read as UTC.`;

if (import.meta.main) {
  await runServerScript(
    USAGE,
    FLAGS,
    (values) => serveDaytime(serverOptionsFromFlags(values)),
  );
}
