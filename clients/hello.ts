/**
 * Hello client, from the seed's "TCP client snippet" (the seed: the
 * classic C socket examples page this toolkit ports): connects to
 * 127.0.0.1:3500, sends `hello` (or MESSAGE), and writes the reply (up to
 * 512 bytes, or until the server closes) to stdout, with a newline after
 * it if it did not end its line. The other side:
 * `servers/hello.ts`, or any listener, e.g. `nc -l 127.0.0.1 3500`.
 *
 * ```sh
 * $ deno task hello --once &
 * listening on 127.0.0.1:3500
 * $ deno run --allow-net=127.0.0.1:3500 clients/hello.ts 'hi there'
 * hello
 * Client with IP 127.0.0.1 connected
 * accepted 127.0.0.1:50420
 * hi thereclosed 127.0.0.1:50420 (8 bytes in, 5 bytes out)
 * $ deno install -g -f -n sock-hello-client --config=deno.json --allow-net=127.0.0.1:3500 clients/hello.ts
 * ...
 * $ sock-hello-client 'hi there'
 * error: connection refused by 127.0.0.1:3500
 * ```
 *
 * Unlike the snippet (which closes an undeclared `client_sock`), after
 * sending it half-closes its side, so a server that reads to end of stream
 * knows the message is complete; and every failure (refused, no such host,
 * no reply within `--timeout` seconds, default 10) is one `error:` line,
 * exit 1.
 *
 * @module
 */

import {
  clientFlags,
  ConnectError,
  describeConnectFailure,
  dialHost,
  flag,
  flagsHelp,
  joinHostPort,
  parseCommandLine,
  readWithTimeout,
  runMain,
  stripBrackets,
  writeAll,
} from "../mod.ts";

/** The snippet's server port. */
export const HELLO_PORT = 3500;

/** The server address asked by default (the seed's). */
export const HELLO_HOSTNAME = "127.0.0.1";

/** The most of the reply that is kept (the snippet's `BUFSIZE`). */
export const HELLO_REPLY_SIZE = 512;

/** The default `--timeout`, in ms. */
export const HELLO_CLIENT_TIMEOUT_MS = 10_000;

/** Options for {@linkcode sayHello}. */
export interface HelloClientOptions {
  /** Server host name or IP literal. Default `127.0.0.1`. */
  hostname?: string;
  /** Server port. Default 3500. */
  port?: number;
  /** What to send. Default `hello`. */
  message?: string | Uint8Array;
  /**
   * Gives up when connecting, or waiting for the reply, takes longer than
   * this many ms; 0 waits forever. Default 10000.
   */
  timeoutMs?: number;
}

/**
 * Sends the message and returns the reply: what the server sends until it
 * closes, at most 512 bytes (a reply that stops without the server closing
 * ends after `timeoutMs` of silence). Rejects with a `ConnectError` (from `mod.ts`)
 * whose message is one clear line.
 *
 * @example Against the hello server
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { sayHello } from "./hello.ts";
 * import { serveHello } from "../servers/hello.ts";
 *
 * const output = { write: (p: Uint8Array) => Promise.resolve(p.length) };
 * await using server = serveHello({ port: 0, output, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * const reply = await sayHello({ port, message: "hi" });
 * assertEquals(new TextDecoder().decode(reply), "hello");
 * ```
 */
export async function sayHello(
  options: HelloClientOptions = {},
): Promise<Uint8Array> {
  const hostname = options.hostname ?? HELLO_HOSTNAME;
  const port = options.port ?? HELLO_PORT;
  const timeoutMs = options.timeoutMs ?? HELLO_CLIENT_TIMEOUT_MS;
  const target = joinHostPort(stripBrackets(hostname), port);
  const message = typeof options.message === "string"
    ? new TextEncoder().encode(options.message)
    : options.message ?? new TextEncoder().encode("hello");
  using conn = await dialHost(hostname, port, { timeoutMs });
  await writeAll(conn, message).catch((error) => {
    throw describeConnectFailure(error, target);
  });
  try {
    await conn.closeWrite();
  } catch {
    // The server closed first: its reply (if any) is still readable.
  }
  const reply = new Uint8Array(HELLO_REPLY_SIZE);
  let total = 0;
  while (total < reply.byteLength) {
    let n: number | null;
    try {
      n = await readWithTimeout(conn, reply.subarray(total), timeoutMs, target);
    } catch (error) {
      // A server that replied and then fell silent without closing has
      // still replied: keep what came.
      if (total > 0 && error instanceof ConnectError) break;
      throw error;
    }
    if (n === null) break;
    total += n;
  }
  return reply.slice(0, total);
}

const FLAGS = {
  hostname: flag.string("H", "server address", { default: HELLO_HOSTNAME }),
  ...clientFlags({
    port: HELLO_PORT,
    timeoutMs: HELLO_CLIENT_TIMEOUT_MS,
    zeroTimeout: "wait forever",
    timeoutHelp:
      "give up when connecting or waiting for the reply takes\nlonger than S seconds",
  }),
};

const USAGE = `usage: hello.ts [options] [MESSAGE]

Hello client (the seed's TCP client snippet): sends MESSAGE (default "hello")
and prints the reply (up to ${HELLO_REPLY_SIZE} bytes, or until the server closes).

${flagsHelp(FLAGS)}

Permissions: --allow-net=HOST:PORT (default ${HELLO_HOSTNAME}:${HELLO_PORT}).`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
      positionals: ["MESSAGE"],
      min: 0,
    });
    const reply = await sayHello({
      hostname: values.hostname,
      port: values.port,
      timeoutMs: values.timeout,
      message: positionals[0],
    });
    // The reply's last line ends with a newline, so what a terminal shows
    // next (the prompt) starts on a line of its own; the bytes before it
    // are the reply's, as they came.
    const ended = reply.length === 0 || reply.at(-1) === 0x0a;
    await writeAll(
      Deno.stdout,
      ended ? reply : new Uint8Array([...reply, 0x0a]),
    );
  });
}
