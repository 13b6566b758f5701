/**
 * UDP hello server, from the seed's "UDP server snippet" (the seed: the
 * classic C socket examples page this toolkit ports): for each datagram it
 * prints `Client with IP ADDRESS sent datagram` on stdout, writes the
 * payload to stdout (as it came) and replies `hello`. `--once` answers one
 * datagram and exits 0, as the snippet does. The other side:
 * `clients/udp.ts`.
 *
 * ```sh
 * $ deno run --unstable-net --allow-net=127.0.0.1 servers/udp.ts &
 * listening on 127.0.0.1:3500
 * $ deno task udp-client hi
 * hello
 * Client with IP 127.0.0.1 sent datagram
 * hi
 * $ echo hi | socat - UDP:127.0.0.1:3500,sourceport=40000
 * hello
 * $ deno install -g -f -n sock-udp --config=deno.json --unstable-net --allow-net=127.0.0.1 servers/udp.ts
 * ...
 * $ sock-udp --help
 * usage: udp.ts [options]
 * ...
 * ```
 *
 * A reply goes to whoever sent, so the permission names the host without a
 * port (`--allow-net=127.0.0.1`: bind port 3500, answer any port there).
 *
 * Unlike the snippet, it keeps the protections every UDP server here has
 * (CVE-1999-0103): no reply to a source port below 1024 (a loop with
 * another service), at most `--udp-rate` replies per second to one
 * source, counted log lines for what it drops; and `--allow`/`--deny`.
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --unstable-net --allow-net=127.0.0.1 servers/udp.ts \
 *     --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 127.0.0.1:3500
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_datagrams_received_total'
 * sockets_datagrams_received_total{service="udp",transport="udp"} 0
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
  TOOLKIT_UDP_PORTS,
  udpGuardHelp,
  unmapIPv4,
  writeAll,
} from "../mod.ts";
import { runServerScript } from "../lib/server_cli.ts";

/** The snippet's port. */
export const UDP_HELLO_PORT: number = TOOLKIT_UDP_PORTS.udpHello;

/** The snippet's address: loopback only. */
export const UDP_HELLO_HOSTNAME = "127.0.0.1";

const GREETING = new TextEncoder().encode("hello");

/** Options for {@linkcode serveUdpHello}. */
export interface UdpHelloOptions extends Omit<ServerOptions, "transport"> {
  /** Answer one datagram, then stop (`finished` resolves). Default `false`. */
  once?: boolean;
  /** Where the `Client with IP` lines and payloads go. Default stdout. */
  output?: { write(p: Uint8Array): Promise<number> };
}

/**
 * The UDP hello service, for {@linkcode serve}: print who sent and what,
 * reply `hello`. `onDatagram` runs for each datagram handled.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { udpHelloService } from "./udp.ts";
 *
 * assertEquals(udpHelloService().defaultPort, 3500);
 * ```
 */
export function udpHelloService(
  options: {
    output?: { write(p: Uint8Array): Promise<number> };
    onDatagram?: () => void;
  } = {},
): Service {
  // Its log lines keep their place among the payloads it prints.
  const output = options.output ?? stdoutAfterLog();
  const encoder = new TextEncoder();
  return {
    name: "udp",
    defaultPort: UDP_HELLO_PORT,
    defaultHostname: UDP_HELLO_HOSTNAME,
    async datagram(data, source) {
      const ip = "hostname" in source ? unmapIPv4(source.hostname) : "";
      await writeAll(
        output,
        encoder.encode(`Client with IP ${ip} sent datagram\n`),
      );
      await writeAll(output, data);
      options.onDatagram?.();
      return GREETING;
    },
  };
}

/**
 * Starts a UDP hello server (default 127.0.0.1:3500). Needs
 * `--unstable-net`.
 *
 * @example One datagram, then the server stops by itself
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serveUdpHello } from "./udp.ts";
 *
 * const output = { write: (p: Uint8Array) => Promise.resolve(p.length) };
 * const server = serveUdpHello({ port: 0, once: true, output, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * const client = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * await client.send(new TextEncoder().encode("hi"), { transport: "udp", hostname: "127.0.0.1", port });
 * const [reply] = await client.receive();
 * client.close();
 * await server.finished;
 * assertEquals(new TextDecoder().decode(reply), "hello");
 * ```
 */
export function serveUdpHello(options: UdpHelloOptions = {}): Server {
  const once: { server?: Server } = {};
  const service = udpHelloService({
    output: options.output,
    // The reply to this datagram is still sent: a datagram server answers
    // the datagram in flight before it closes.
    onDatagram: options.once ? () => once.server?.shutdown() : undefined,
  });
  // Its log lines keep their place among the datagrams it prints.
  const server = serve(service, {
    log: stderrLogNow,
    ...options,
    transport: "udp",
  });
  once.server = server;
  return server;
}

const FLAGS = {
  once: flag.boolean("answer one datagram, then exit 0"),
  ...pickFlags(
    serverFlags({ port: UDP_HELLO_PORT, hostname: UDP_HELLO_HOSTNAME }),
    "hostname",
    "port",
    "allow-low-ports",
    "udp-rate",
    "allow",
    "deny",
    "grace",
    "stats",
    "stats-allow",
  ),
};

const USAGE = `usage: udp.ts [options]

UDP hello server (the seed's UDP server snippet): for each datagram prints
"Client with IP ADDRESS sent datagram" and the payload, and replies "hello".

${flagsHelp(FLAGS)}

${udpGuardHelp({ servicePorts: false })}

Permissions: --unstable-net --allow-net=HOST (replies go to any port there;
default ${UDP_HELLO_HOSTNAME}).`;

if (import.meta.main) {
  await runServerScript(USAGE, FLAGS, (values) =>
    serveUdpHello({
      ...serverOptionsFromFlags({ ...values, udp: true }),
      once: values.once,
    }));
}
