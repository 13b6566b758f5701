/**
 * Daytime client (RFC 867), from the seed's "TCP Daytime Client" (the
 * seed: the classic C socket examples page this toolkit ports): connects
 * to ADDRESS (a host name, an IPv4 or an IPv6 address) on port 13
 * (`--port`) and copies everything the server sends to stdout until it
 * closes, at most 64 KiB: a daytime answer is one line, so more (chargen
 * on the port) is an error, not an endless stream.
 *
 * The permission names exactly the server asked for (`HOST:PORT`, IPv6 in
 * brackets). `deno task daytime-client ADDRESS` asks 127.0.0.1 on 10013,
 * where `deno task daytime` and `servers/inetd.ts` serve it:
 *
 * ```sh
 * $ deno run --allow-net=127.0.0.1:10013 clients/daytime.ts --port=10013 127.0.0.1
 * error: connection refused by 127.0.0.1:10013
 * $ socat TCP-LISTEN:10013,reuseaddr,fork SYSTEM:date &
 * $ deno task daytime-client 127.0.0.1
 * Wed Nov 25 15:10:00 UTC 2026
 * $ deno run --allow-net=[::1]:10013 clients/daytime.ts ::1 --port 10013
 * error: connection refused by [::1]:10013
 * $ deno run --allow-net=127.0.0.1:13 clients/daytime.ts 127.0.0.1
 * error: connection refused by 127.0.0.1:13
 * $ deno install -g -f -n sock-daytime-client --config=deno.json --allow-net=127.0.0.1:10013 clients/daytime.ts -- --port=10013
 * ...
 * $ sock-daytime-client 127.0.0.1
 * Wed Nov 25 15:10:00 UTC 2026
 * ```
 *
 * (The last but one asks port 13, where a system daytime service, xinetd's
 * for one, would answer.) Unlike the seed, which ignores the results of
 * `inet_pton` and `connect` (a bad address or a refused connection reads
 * as silence), every failure is one `error:` line and exit 1: an invalid
 * address, no such host, connection refused, network unreachable, or no
 * answer within `--timeout` seconds (default 10), while connecting or
 * while waiting for data.
 *
 * @module
 */

import { concat } from "@std/bytes";
import { LimitedBytesTransformStream } from "@std/streams";
import {
  clientFlags,
  dialHost,
  flagsHelp,
  formatBytes,
  joinHostPort,
  parseCommandLine,
  readWithTimeout,
  runMain,
  stripBrackets,
  writeAll,
} from "../mod.ts";

/** The daytime service's well-known port (RFC 867). */
export const DAYTIME_PORT = 13;

/** The default `--timeout`, in ms. */
export const DAYTIME_CLIENT_TIMEOUT_MS = 10_000;

/**
 * The most a daytime answer may be, in bytes: RFC 867's answer is one line;
 * what sends more (chargen answering on the daytime port) is cut off with
 * a {@linkcode DaytimeReplyTooLongError} instead of filling memory or the
 * terminal.
 */
export const DAYTIME_MAX_BYTES = 64 * 1024;

/**
 * The server sent more than {@linkcode DAYTIME_MAX_BYTES}: not a daytime
 * answer. The message is the one line a user sees.
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { DaytimeReplyTooLongError } from "./daytime.ts";
 *
 * const error = new DaytimeReplyTooLongError("127.0.0.1:13", 65536);
 * assertStringIncludes(error.message, "127.0.0.1:13 sent more than 64 KiB,");
 * ```
 */
export class DaytimeReplyTooLongError extends Error {
  /** The server, as `host:port`. */
  readonly target: string;
  /** The limit that was passed, in bytes. */
  readonly maxBytes: number;

  /** Builds the error for `target`, past `maxBytes`. */
  constructor(target: string, maxBytes: number, cause?: unknown) {
    super(
      `${target} sent more than ${
        formatBytes(maxBytes)
      }, so it is not a daytime server (its answer is one line): check the address and --port`,
      { cause },
    );
    this.name = "DaytimeReplyTooLongError";
    this.target = target;
    this.maxBytes = maxBytes;
  }
}

/** Options for {@linkcode fetchDaytime}. */
export interface DaytimeClientOptions {
  /** Server: host name or IP literal (IPv6 with or without brackets). */
  hostname: string;
  /** Server port. Default 13. */
  port?: number;
  /**
   * Gives up when connecting, or waiting for the next bytes, takes longer
   * than this many ms; 0 waits forever. Default 10000.
   */
  timeoutMs?: number;
  /**
   * Where the server's bytes go as they arrive; then they are not kept and
   * the result is empty. Default: kept and returned.
   */
  output?: { write(p: Uint8Array): Promise<number> };
}

/**
 * Connects to a daytime server and reads until it closes, at most
 * {@linkcode DAYTIME_MAX_BYTES}; returns all it sent, or copies it to
 * `output` as it arrives. Rejects with a `ConnectError` (from `mod.ts`)
 * whose message is one clear line, or {@linkcode DaytimeReplyTooLongError}.
 *
 * @example Against an in-process server
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { fetchDaytime } from "./daytime.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * const serving = listener.accept().then(async (conn) => {
 *   await conn.write(new TextEncoder().encode("Tue Nov  4 09:05:01 2026\r\n"));
 *   conn.close();
 * });
 * const bytes = await fetchDaytime({ hostname: "127.0.0.1", port });
 * await serving;
 * assertEquals(new TextDecoder().decode(bytes), "Tue Nov  4 09:05:01 2026\r\n");
 * ```
 */
export async function fetchDaytime(
  options: DaytimeClientOptions,
): Promise<Uint8Array> {
  const port = options.port ?? DAYTIME_PORT;
  const timeoutMs = options.timeoutMs ?? DAYTIME_CLIENT_TIMEOUT_MS;
  const target = joinHostPort(stripBrackets(options.hostname), port);
  using conn = await dialHost(options.hostname, port, { timeoutMs });
  const buffer = new Uint8Array(16 * 1024);
  const received = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const n = await readWithTimeout(conn, buffer, timeoutMs, target);
      if (n === null) controller.close();
      else controller.enqueue(buffer.slice(0, n));
    },
  }, { highWaterMark: 0 });
  const chunks: Uint8Array[] = [];
  try {
    for await (
      const chunk of received.pipeThrough(
        new LimitedBytesTransformStream(DAYTIME_MAX_BYTES, { error: true }),
      )
    ) {
      if (options.output) await writeAll(options.output, chunk);
      else chunks.push(chunk);
    }
  } catch (error) {
    // Only the limit throws a RangeError here.
    if (error instanceof RangeError) {
      throw new DaytimeReplyTooLongError(target, DAYTIME_MAX_BYTES, error);
    }
    throw error;
  }
  return concat(chunks);
}

const FLAGS = clientFlags({
  port: DAYTIME_PORT,
  timeoutMs: DAYTIME_CLIENT_TIMEOUT_MS,
  zeroTimeout: "wait forever",
});

const USAGE = `usage: daytime.ts [options] ADDRESS

Daytime client (RFC 867): prints what the daytime server at ADDRESS sends,
at most ${
  formatBytes(DAYTIME_MAX_BYTES)
} (more is an error: not a daytime server).
ADDRESS is a host name, an IPv4 address or an IPv6 address.

${flagsHelp(FLAGS)}

Permissions: --allow-net=ADDRESS:PORT (IPv6 in brackets: --allow-net=[::1]:13).
deno task daytime-client ADDRESS asks 127.0.0.1 only, on port 10013, where
deno task daytime and servers/inetd.ts serve daytime as a user.`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
      positionals: ["ADDRESS"],
    });
    await fetchDaytime({
      hostname: positionals[0],
      port: values.port,
      timeoutMs: values.timeout,
      output: Deno.stdout,
    });
  });
}
