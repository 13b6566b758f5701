/**
 * Time client (RFC 868): asks ADDRESS (a name or an IPv4/IPv6 literal) for
 * the time and prints it as ISO 8601 UTC to the second
 * (`2026-11-25T13:40:42Z`). Over TCP it reads the 4 bytes the server sends
 * before closing; with `--udp` it sends an empty datagram (again about
 * every second until `--timeout`) and reads the 4-byte reply. Anything
 * else is not a time and is refused with one error line: fewer bytes, or
 * more (a daytime or chargen server on the port), over TCP as over UDP.
 * Values past 2036 are read in the era nearest the local clock, so the
 * answer stays right after the 32-bit counter wraps. No seed example: the
 * client side of the RFC time service (the seed: the classic C socket
 * examples page this toolkit ports).
 *
 * `deno task time-client ADDRESS` asks port 10037, where `deno task time`
 * and `servers/inetd.ts` serve it; port 37 is the default otherwise:
 *
 * ```sh
 * $ deno run --allow-net=127.0.0.1:10037 clients/time.ts --port=10037 127.0.0.1
 * error: connection refused by 127.0.0.1:10037
 * $ deno task inetd --only time &
 * listening on 0.0.0.0:10037 (time/tcp)
 * listening on 0.0.0.0:10037 (time/udp)
 * $ deno task time-client 127.0.0.1
 * 2026-11-25T14:59:13Z
 * $ deno run --unstable-net --allow-net=0.0.0.0:0,127.0.0.1:10037 \
 *     clients/time.ts 127.0.0.1 --port 10037 --udp
 * 2026-11-25T14:59:13Z
 * $ deno run --allow-net=127.0.0.1:37 clients/time.ts 127.0.0.1
 * error: connection refused by 127.0.0.1:37
 * $ deno install -g -f -n sock-time-client --config=deno.json --allow-net=127.0.0.1:10037 clients/time.ts -- --port=10037
 * ...
 * $ sock-time-client 127.0.0.1
 * 2026-11-25T14:59:13Z
 * ```
 *
 * The other side: `servers/time.ts`, `servers/inetd.ts`, or xinetd's
 * internal `time` service.
 *
 * @module
 */

import {
  clientFlags,
  ConnectError,
  dateFromRfc868,
  describeConnectFailure,
  dialHost,
  flag,
  flagsHelp,
  formatSeconds,
  joinHostPort,
  parseCommandLine,
  readExact,
  requestDatagram,
  runMain,
  SIMPLE_SERVICE_PORTS,
  stripBrackets,
  UnexpectedEofError,
} from "../mod.ts";

/**
 * A time server answered with something that is not an RFC 868 time: it
 * closed before the 4 bytes, or sent more (a daytime or chargen server
 * answering on the time port). The message is the one line a user sees.
 * (No reply at all over UDP is a `NoReplyError`, as for every UDP client.)
 *
 * @example A server that closes before sending the 4 bytes
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { queryTime, TimeQueryError } from "./time.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * const closing = listener.accept().then((conn) => conn.close());
 * await assertRejects(
 *   () => queryTime({ hostname: "127.0.0.1", port, timeoutMs: 2000 }),
 *   TimeQueryError,
 * );
 * await closing;
 * ```
 */
export class TimeQueryError extends Error {
  /** Builds the error; `cause` is the system's error, if any. */
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "TimeQueryError";
  }
}

/** What {@linkcode queryTime} asks, and how. */
export interface TimeQueryOptions {
  /** Server name or IP literal (IPv6 with or without brackets). */
  hostname: string;
  /** Server port. Default 37. */
  port?: number;
  /** `tcp` (default) or `udp`. */
  transport?: "tcp" | "udp";
  /** Gives up after this many ms. Default 5000. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 5000;
// Over UDP the empty request is sent again about this often until the
// timeout, in case one datagram is lost.
const UDP_RESEND_MS = 1000;
/** RFC 868: the time is a 32-bit number, 4 bytes. */
const TIME_BYTES = 4;

/**
 * `date` as the client prints it: ISO 8601 UTC to the second.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { formatIsoSeconds } from "./time.ts";
 *
 * assertEquals(formatIsoSeconds(new Date("2026-11-25T13:40:42.789Z")), "2026-11-25T13:40:42Z");
 * ```
 */
export function formatIsoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function decode(bytes: Uint8Array, target: string): Date {
  if (bytes.byteLength !== TIME_BYTES) {
    throw new TimeQueryError(
      `${target} sent ${bytes.byteLength} bytes; an RFC 868 time is ${TIME_BYTES}`,
    );
  }
  return dateFromRfc868(
    new DataView(bytes.buffer, bytes.byteOffset, TIME_BYTES).getUint32(0),
  );
}

/**
 * Asks an RFC 868 time server for the time. Rejects with a one-line error
 * naming the server: `ConnectError` (bad address, no such host, refused,
 * timed out, and `NoReplyError` for no UDP reply) or
 * {@linkcode TimeQueryError} (a reply that is not 4 bytes).
 *
 * @example
 * ```ts
 * import { assertAlmostEquals } from "@std/assert";
 * import { queryTime } from "./time.ts";
 * import { serveTime } from "../servers/time.ts";
 *
 * await using server = serveTime({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * const date = await queryTime({ hostname: "127.0.0.1", port });
 * assertAlmostEquals(date.getTime(), Date.now(), 5000);
 * ```
 */
export function queryTime(options: TimeQueryOptions): Promise<Date> {
  const port = options.port ?? SIMPLE_SERVICE_PORTS.time;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return options.transport === "udp"
    ? queryUdp(options.hostname, port, timeoutMs)
    : queryTcp(options.hostname, port, timeoutMs);
}

async function queryTcp(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<Date> {
  const target = joinHostPort(stripBrackets(host), port);
  // One deadline for connecting and reading: the whole --timeout.
  const began = performance.now();
  using conn = await dialHost(host, port, { timeoutMs });
  const controller = new AbortController();
  const timer = setTimeout(
    () =>
      controller.abort(
        new ConnectError(
          `timed out after ${
            formatSeconds(timeoutMs)
          } waiting for the time from ${target}`,
          "timeout",
          target,
        ),
      ),
    Math.max(1, timeoutMs - (performance.now() - began)),
  );
  try {
    const { signal } = controller;
    let bytes: Uint8Array;
    try {
      bytes = await readExact(conn, TIME_BYTES, { signal });
    } catch (error) {
      if (error instanceof UnexpectedEofError) {
        throw new TimeQueryError(
          `${target} closed after ${error.bytesRead} of the 4 bytes of an RFC 868 time`,
        );
      }
      throw describeConnectFailure(error, target);
    }
    // RFC 868: the server sends the 4 bytes and closes. More is not a time
    // (a daytime or chargen server on the time port): refuse, as over UDP.
    const more = await readExact(conn, 1, { signal }).then(
      () => true,
      (error) => {
        if (error instanceof UnexpectedEofError) return false;
        // The 4 bytes came and nothing more before the deadline: a server
        // slow to close still gave the time.
        if (signal.aborted) return false;
        throw describeConnectFailure(error, target);
      },
    );
    if (more) {
      throw new TimeQueryError(
        `${target} sent more than 4 bytes, so it is not an RFC 868 time server: check the address and --port`,
      );
    }
    return decode(bytes, target);
  } finally {
    clearTimeout(timer);
  }
}

async function queryUdp(
  hostname: string,
  port: number,
  timeoutMs: number,
): Promise<Date> {
  // RFC 868: "send an empty datagram to port 37". Resent about every
  // second, all attempts together taking the whole timeout.
  const attempts = Math.max(1, Math.ceil(timeoutMs / UDP_RESEND_MS));
  const reply = await requestDatagram({
    hostname,
    port,
    message: new Uint8Array(0),
    timeoutMs: timeoutMs / attempts,
    retries: attempts - 1,
  });
  return decode(reply, joinHostPort(stripBrackets(hostname), port));
}

const FLAGS = {
  ...clientFlags({
    port: SIMPLE_SERVICE_PORTS.time,
    timeoutMs: DEFAULT_TIMEOUT_MS,
    timeoutHelp: "give up after S seconds",
  }),
  udp: flag.boolean("ask over UDP (needs --unstable-net)"),
};

const USAGE = `usage: time.ts [options] ADDRESS

Asks an RFC 868 time server for the time and prints it as ISO 8601 UTC.

${flagsHelp(FLAGS)}

Permissions: --allow-net=ADDRESS:PORT; with --udp, also 0.0.0.0:0 (or
[::]:0 for IPv6) to bind the local socket.
deno task time-client ADDRESS asks 127.0.0.1 only, on port 10037, where
deno task time and servers/inetd.ts serve time as a user.`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
      positionals: ["ADDRESS"],
    });
    const date = await queryTime({
      hostname: positionals[0],
      port: values.port,
      transport: values.udp ? "udp" : "tcp",
      timeoutMs: values.timeout,
    });
    console.log(formatIsoSeconds(date));
  });
}
