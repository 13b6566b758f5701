/**
 * Hello server, from the seed's "TCP server snippet" (the seed: the
 * classic C socket examples page this toolkit ports): for each client it
 * prints `Client with IP ADDRESS connected` on stdout, sends `hello`, reads
 * what the client sends (one read, up to 512 bytes) and writes it to
 * stdout, as it came (no newline added). `--once` serves one client and
 * exits 0, as the snippet does. The other side: `clients/hello.ts`, from
 * the seed's "TCP client snippet".
 *
 * ```sh
 * $ deno run --allow-net=127.0.0.1:3500 servers/hello.ts &
 * listening on 127.0.0.1:3500
 * $ echo 'hi there' | socat - TCP:127.0.0.1:3500
 * hello
 * Client with IP 127.0.0.1 connected
 * accepted 127.0.0.1:50410
 * hi there
 * closed 127.0.0.1:50410 (9 bytes in, 5 bytes out)
 * $ deno task hello-client
 * hello
 * Client with IP 127.0.0.1 connected
 * accepted 127.0.0.1:50412
 * helloclosed 127.0.0.1:50412 (5 bytes in, 5 bytes out)
 * $ deno install -g -f -n sock-hello --config=deno.json --allow-net=127.0.0.1:3500 servers/hello.ts
 * ...
 * $ sock-hello --help
 * usage: hello.ts [options]
 * ...
 * ```
 *
 * (The payload goes to stdout as it came: without a newline, the log line
 * that follows on stderr runs on from it in a terminal, as above.)
 *
 * The seed's bugs are fixed: it `send`s and `recv`s on the listening socket
 * instead of the accepted one (both fail with ENOTCONN), and it formats the
 * peer with `inet_ntoa` on the listening address. Here the greeting goes to
 * the client, and a client on an IPv6 socket prints its own address (an
 * IPv4-mapped one dotted, as IPv4).
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=127.0.0.1:3500,127.0.0.1:9100 servers/hello.ts \
 *     --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 127.0.0.1:3500
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="hello",transport="tcp"} 0
 * ```
 *
 * @module
 */

import {
  flag,
  flagsHelp,
  pickFlags,
  serve,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  type Service,
  stderrLogNow,
  stdoutAfterLog,
  TCP_SERVER_FLAG_NAMES,
  unmapIPv4,
  writeAll,
} from "../mod.ts";
import { runServerScript } from "../lib/server_cli.ts";

/** The snippet's port. */
export const HELLO_PORT = 3500;

/** The snippet's address: loopback only. */
export const HELLO_HOSTNAME = "127.0.0.1";

/** The most the server reads from a client (the snippet's `BUFSIZE`). */
export const HELLO_READ_SIZE = 512;

const GREETING = new TextEncoder().encode("hello");

/** Options for {@linkcode serveHello}. */
export interface HelloOptions extends ServerOptions {
  /**
   * Serve one client, then stop (`finished` resolves), as the snippet does;
   * others arriving meanwhile are refused. Default `false`.
   */
  once?: boolean;
  /** Where the `Client with IP` lines and payloads go. Default stdout. */
  output?: { write(p: Uint8Array): Promise<number> };
}

/**
 * The hello service, for {@linkcode serve}: greet, read once, print.
 * `onClientDone` runs after each client is served.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { helloService } from "./hello.ts";
 *
 * assertEquals(helloService().defaultPort, 3500);
 * ```
 */
export function helloService(
  options: {
    output?: { write(p: Uint8Array): Promise<number> };
    log?: (line: string) => void;
    onClientDone?: () => void;
  } = {},
): Service {
  // Its log lines keep their place among the payloads it prints.
  const output = options.output ?? stdoutAfterLog();
  const log = options.log ?? stderrLogNow;
  const encoder = new TextEncoder();
  return {
    name: "hello",
    defaultPort: HELLO_PORT,
    defaultHostname: HELLO_HOSTNAME,
    async stream(conn, context) {
      try {
        const client = context.remoteAddr;
        const ip = "hostname" in client
          ? unmapIPv4(client.hostname)
          : context.peer;
        await writeAll(
          output,
          encoder.encode(`Client with IP ${ip} connected\n`),
        );
        await writeAll(conn, GREETING);
        context.bytesOut += GREETING.byteLength;
        context.active();
        const buffer = new Uint8Array(HELLO_READ_SIZE);
        const n = await conn.read(buffer);
        if (n === null) {
          log(`${context.peer} closed the connection without sending anything`);
          return;
        }
        context.bytesIn += n;
        await writeAll(output, buffer.subarray(0, n));
      } finally {
        options.onClientDone?.();
      }
    },
  };
}

/**
 * Starts a hello server (default TCP on 127.0.0.1:3500).
 *
 * @example One client, then the server stops by itself
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serveHello } from "./hello.ts";
 *
 * const chunks: Uint8Array[] = [];
 * const output = { write: (p: Uint8Array) => (chunks.push(p.slice()), Promise.resolve(p.length)) };
 * const server = serveHello({ port: 0, once: true, output, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * const greeting = new Uint8Array(5);
 * await conn.read(greeting);
 * await conn.write(new TextEncoder().encode("hi"));
 * await server.finished;
 * assertEquals(new TextDecoder().decode(greeting), "hello");
 * assertEquals(chunks.map((chunk) => new TextDecoder().decode(chunk)), [
 *   "Client with IP 127.0.0.1 connected\n",
 *   "hi",
 * ]);
 * ```
 */
export function serveHello(options: HelloOptions = {}): Server {
  const once: { server?: Server } = {};
  const service = helloService({
    output: options.output,
    log: options.log,
    onClientDone: options.once ? () => server?.shutdown() : undefined,
  });
  const server = serve(service, {
    // Its log lines keep their place among the payloads it prints.
    log: stderrLogNow,
    ...options,
    maxConnections: options.once ? 1 : options.maxConnections,
  });
  once.server = server;
  return server;
}

const FLAGS = {
  once: flag.boolean("serve one client, then exit 0"),
  ...pickFlags(
    serverFlags({ port: HELLO_PORT, hostname: HELLO_HOSTNAME }),
    ...TCP_SERVER_FLAG_NAMES,
  ),
};

const USAGE = `usage: hello.ts [options]

Hello server (the seed's TCP server snippet): prints "Client with IP ADDRESS
connected", sends "hello", reads up to ${HELLO_READ_SIZE} bytes once and writes
them to stdout.

${flagsHelp(FLAGS)}

Permissions: --allow-net=HOST:PORT (default ${HELLO_HOSTNAME}:${HELLO_PORT}).`;

if (import.meta.main) {
  await runServerScript(
    USAGE,
    FLAGS,
    (values) =>
      serveHello({ ...serverOptionsFromFlags(values), once: values.once }),
  );
}
