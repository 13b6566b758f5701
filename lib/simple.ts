/**
 * What the RFC "simple services" (echo, discard, daytime, qotd, chargen,
 * time) share: their well-known ports, the ports a UDP reply must never go
 * to (CVE-1999-0103 loops), the 512-byte cap on a datagram reply, a service
 * that writes one reply and closes, and RFC 868's 32-bit time.
 *
 * @module
 */

import { writeAll } from "./io.ts";
import {
  serve,
  type Server,
  type ServerOptions,
  type Service,
} from "./server.ts";

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

/** The base port `servers/inetd.ts` adds the well-known ports to. */
export const INETD_BASE = 10000;

/**
 * Most bytes a simple service sends in one UDP reply (RFC 864 and 865 both
 * say 512), so a small spoofed request cannot buy a large answer.
 */
export const MAX_SIMPLE_DATAGRAM = 512;

/**
 * The source ports a simple service's UDP side never answers: every simple
 * service's port at each of `bases` (0 is the well-known ports), plus
 * `extra` (a server's own port: the same service elsewhere would answer
 * back). Replying to one of these can start an endless loop between two
 * services (CVE-1999-0103), even when low ports are otherwise allowed.
 *
 * @example
 * ```ts
 * import { simpleLoopPorts } from "./simple.ts";
 *
 * const ports = simpleLoopPorts([0, 10000]);
 * if (!ports.has(19) || !ports.has(10007) || ports.has(10001)) {
 *   throw new Error([...ports].join());
 * }
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
  for (const port of extra) if (port > 0) ports.add(port);
  return ports;
}

/**
 * Starts a simple service with its loop protection on: unless `options`
 * says otherwise, UDP datagrams from {@linkcode simpleLoopPorts} (the
 * well-known ports, inetd's default range and the server's own port) are
 * dropped, counted in the log.
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
 * import { replyService } from "./simple.ts";
 *
 * const service = replyService("hello", 4000, () => new TextEncoder().encode("hi\r\n"));
 * const reply = await service.datagram!(new Uint8Array(0), {
 *   transport: "udp",
 *   hostname: "127.0.0.1",
 *   port: 5000,
 * });
 * if (reply?.byteLength !== 4) throw new Error("no reply");
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

/** Seconds from 1900-01-01T00:00Z (RFC 868's epoch) to 1970-01-01T00:00Z. */
export const RFC868_EPOCH_OFFSET = 2_208_988_800;

const TWO_TO_32 = 2 ** 32;

/**
 * The RFC 868 value for `date`: whole seconds since 1900-01-01T00:00Z,
 * modulo 2^32, so it keeps counting (from 0 again) after
 * 2036-02-07T06:28:16Z.
 *
 * @example
 * ```ts
 * import { rfc868Seconds } from "./simple.ts";
 *
 * if (rfc868Seconds(new Date("1970-01-01T00:00:00Z")) !== 2208988800) throw new Error();
 * if (rfc868Seconds(new Date("2036-02-07T06:28:17Z")) !== 1) throw new Error();
 * ```
 */
export function rfc868Seconds(date: Date): number {
  const seconds = Math.floor(date.getTime() / 1000) + RFC868_EPOCH_OFFSET;
  return ((seconds % TWO_TO_32) + TWO_TO_32) % TWO_TO_32;
}

/**
 * The 4 bytes RFC 868 sends for `date`: {@linkcode rfc868Seconds} as a
 * 32-bit big-endian number.
 *
 * @example
 * ```ts
 * import { encodeRfc868 } from "./simple.ts";
 *
 * const bytes = encodeRfc868(new Date("1970-01-01T00:00:00Z"));
 * if (bytes.join() !== "131,170,126,128") throw new Error(bytes.join());
 * ```
 */
export function encodeRfc868(date: Date): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, rfc868Seconds(date));
  return bytes;
}

/**
 * The date an RFC 868 value stands for. The 32-bit value repeats every
 * 136 years, so of its candidates (one per era since 1900) this picks the
 * one nearest to `near` (default now), as NTP does: correct past 2036
 * for any clock that is right to within 68 years.
 *
 * @example
 * ```ts
 * import { dateFromRfc868 } from "./simple.ts";
 *
 * const near = new Date("2040-01-01T00:00:00Z");
 * const date = dateFromRfc868(1, near);
 * if (date.toISOString() !== "2036-02-07T06:28:17.000Z") throw new Error(date.toISOString());
 * ```
 */
export function dateFromRfc868(seconds: number, near: Date = new Date()): Date {
  if (!Number.isInteger(seconds) || seconds < 0 || seconds >= TWO_TO_32) {
    throw new RangeError(`not a 32-bit RFC 868 value: ${seconds}`);
  }
  const nearSeconds = Math.floor(near.getTime() / 1000) + RFC868_EPOCH_OFFSET;
  const era = Math.round((nearSeconds - seconds) / TWO_TO_32);
  return new Date(
    (seconds + era * TWO_TO_32 - RFC868_EPOCH_OFFSET) * 1000,
  );
}
