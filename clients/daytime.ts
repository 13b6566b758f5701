/**
 * Daytime client (RFC 867), from the seed's "TCP Daytime Client" (the
 * seed: the classic C socket examples page this toolkit ports): connects
 * to ADDRESS (a host name, an IPv4 or an IPv6 address) on port 13
 * (`--port`) and copies everything the server sends to stdout until it
 * closes.
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

import {
  clientFlags,
  connectTcp,
  flagsHelp,
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
 * Connects to a daytime server and reads until it closes; returns all it
 * sent, or copies it to `output` as it arrives. Rejects with a
 * `ConnectError` (from `mod.ts`) whose message is one clear line.
 *
 * @example Against an in-process server
 * ```ts
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
 * if (new TextDecoder().decode(bytes) !== "Tue Nov  4 09:05:01 2026\r\n") {
 *   throw new Error("wrong reply");
 * }
 * ```
 */
export async function fetchDaytime(
  options: DaytimeClientOptions,
): Promise<Uint8Array> {
  const port = options.port ?? DAYTIME_PORT;
  const timeoutMs = options.timeoutMs ?? DAYTIME_CLIENT_TIMEOUT_MS;
  const target = joinHostPort(stripBrackets(options.hostname), port);
  using conn = await connectTcp({
    hostname: options.hostname,
    port,
    timeoutMs,
  });
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(1024);
  while (true) {
    const n = await readWithTimeout(conn, buffer, timeoutMs, target);
    if (n === null) break;
    if (options.output) {
      await writeAll(options.output, buffer.subarray(0, n));
      continue;
    }
    chunks.push(buffer.slice(0, n));
    total += n;
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return all;
}

const FLAGS = clientFlags({
  port: DAYTIME_PORT,
  timeoutMs: DAYTIME_CLIENT_TIMEOUT_MS,
  zeroTimeout: "wait forever",
});

const USAGE = `usage: daytime.ts [options] ADDRESS

Daytime client (RFC 867): prints what the daytime server at ADDRESS sends.
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
