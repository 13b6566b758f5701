/**
 * Time client (RFC 868): asks ADDRESS (a name or an IPv4/IPv6 literal) for
 * the time and prints it as ISO 8601 UTC to the second
 * (`2026-11-25T13:40:42Z`). Over TCP it reads the 4 bytes the server sends
 * before closing; with `--udp` it sends an empty datagram and reads the
 * 4-byte reply. Values past 2036 are read in the era nearest the local
 * clock, so the answer stays right after the 32-bit counter wraps. No seed
 * example: the client side of the RFC time service (the seed: the classic
 * C socket examples page this toolkit ports).
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
  checkHost,
  clientFlags,
  ConnectError,
  connectTcp,
  dateFromRfc868,
  describeConnectFailure,
  flag,
  flagsHelp,
  formatSeconds,
  joinHostPort,
  parseCommandLine,
  readWithTimeout,
  runMain,
  SIMPLE_SERVICE_PORTS,
  stripBrackets,
} from "../mod.ts";

/**
 * Asking a time server failed; the message is the one line a user sees.
 *
 * @example A server that closes before sending the 4 bytes
 * ```ts
 * import { queryTime, TimeQueryError } from "./time.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * const closing = listener.accept().then((conn) => conn.close());
 * try {
 *   await queryTime({ hostname: "127.0.0.1", port, timeoutMs: 2000 });
 *   throw new Error("no error");
 * } catch (error) {
 *   if (!(error instanceof TimeQueryError)) throw error;
 * }
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
// Over UDP the empty request is sent again this often until the timeout,
// in case one datagram is lost.
const UDP_RESEND_MS = 1000;

/**
 * `date` as the client prints it: ISO 8601 UTC to the second.
 *
 * @example
 * ```ts
 * import { formatIsoSeconds } from "./time.ts";
 *
 * const text = formatIsoSeconds(new Date("2026-11-25T13:40:42.789Z"));
 * if (text !== "2026-11-25T13:40:42Z") throw new Error(text);
 * ```
 */
export function formatIsoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function decode(bytes: Uint8Array): Date {
  return dateFromRfc868(
    new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0),
  );
}

/**
 * Asks an RFC 868 time server for the time. Rejects with a one-line error
 * naming the server: `ConnectError` (bad address, no such host, refused,
 * timed out...) or {@linkcode TimeQueryError} (no UDP reply, short reply).
 *
 * @example
 * ```ts
 * import { queryTime } from "./time.ts";
 * import { serveTime } from "../servers/time.ts";
 *
 * await using server = serveTime({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * const date = await queryTime({ hostname: "127.0.0.1", port });
 * if (Math.abs(date.getTime() - Date.now()) > 5000) throw new Error(date.toISOString());
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
  const deadline = Date.now() + timeoutMs;
  const target = joinHostPort(stripBrackets(host), port);
  using conn = await connectTcp({ hostname: host, port, timeoutMs });
  const bytes = new Uint8Array(4);
  let filled = 0;
  while (filled < 4) {
    let n: number | null;
    try {
      n = await readWithTimeout(
        conn,
        bytes.subarray(filled),
        Math.max(1, deadline - Date.now()),
        target,
      );
    } catch (error) {
      // Name the whole --timeout, not what was left of it for this read.
      if (error instanceof ConnectError && error.kind === "timeout") {
        throw new ConnectError(
          `timed out after ${
            formatSeconds(timeoutMs)
          } waiting for the time from ${target}`,
          "timeout",
          target,
          error,
        );
      }
      throw error;
    }
    if (n === null) {
      throw new TimeQueryError(
        `${target} closed after ${filled} of the 4 bytes of an RFC 868 time`,
      );
    }
    filled += n;
  }
  return decode(bytes);
}

async function queryUdp(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<Date> {
  const hostname = stripBrackets(host);
  const target = joinHostPort(hostname, port);
  let family: 4 | 6 | "name";
  try {
    family = checkHost(host);
  } catch (error) {
    throw new ConnectError(
      (error as Error).message,
      "invalid-address",
      target,
      error,
    );
  }
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: family === 6 ? "::" : "0.0.0.0",
    port: 0,
  });
  const destination: Deno.NetAddr = { transport: "udp", hostname, port };
  let timedOut = false;
  let resend: ReturnType<typeof setInterval> | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    socket.close();
  }, timeoutMs);
  try {
    // RFC 868: "send an empty datagram to port 37".
    const request = new Uint8Array(0);
    await socket.send(request, destination);
    resend = setInterval(() => {
      socket.send(request, destination).catch(() => {});
    }, UDP_RESEND_MS);
    const buffer = new Uint8Array(64);
    while (true) {
      const [data, source] = await socket.receive(buffer);
      // Only the server's port may answer; a stray datagram is skipped.
      if ((source as Deno.NetAddr).port !== port) continue;
      if (data.byteLength !== 4) {
        throw new TimeQueryError(
          `${target} sent ${data.byteLength} bytes; an RFC 868 time is 4`,
        );
      }
      return decode(data);
    }
  } catch (error) {
    if (error instanceof TimeQueryError) throw error;
    if (timedOut) {
      throw new TimeQueryError(
        `no reply from ${target} within ${formatSeconds(timeoutMs)} (UDP)`,
        error,
      );
    }
    throw describeConnectFailure(error, target, hostname);
  } finally {
    clearTimeout(timer);
    clearInterval(resend);
    if (!timedOut) socket.close();
  }
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
