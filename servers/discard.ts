/**
 * Discard server (RFC 863): reads everything a client sends and throws it
 * away, with backpressure; the connection stays open until the client
 * closes it. With `--udp`, datagrams are read and never answered. No seed
 * example: it is one of the RFC simple services the seed's echo and
 * daytime servers are the start of (the seed: the classic C socket
 * examples page this toolkit ports).
 *
 * As a user, on port 10009, where inetd puts it (`deno task discard`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10009 servers/discard.ts --port=10009 &
 * listening on 0.0.0.0:10009
 * $ head -c 100000 /dev/zero | socat -u - TCP:127.0.0.1:10009
 * accepted 127.0.0.1:33492
 * closed 127.0.0.1:33492 (100000 bytes in, 0 bytes out)
 * ```
 *
 * Port 9 itself needs root; UDP needs binding only, since nothing is ever
 * sent; installed as a command:
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:9 servers/discard.ts &   # as root
 * listening on 0.0.0.0:9
 * $ deno run --unstable-net --allow-net=0.0.0.0:10009 servers/discard.ts --udp --port=10009 &
 * listening on 0.0.0.0:10009
 * $ echo hello | socat - UDP:127.0.0.1:10009
 * $ deno install -g -f -n sock-discard --config=deno.json --allow-net=0.0.0.0:10009 servers/discard.ts -- --port=10009
 * ...
 * $ sock-discard --help
 * usage: discard.ts [options]
 * ...
 * ```
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10009,127.0.0.1:9100 servers/discard.ts \
 *     --port=10009 --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:10009
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="discard",transport="tcp"} 0
 * ```
 *
 * @module
 */

import {
  type ConnectionContext,
  flagsHelp,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  serveSimple,
  type Service,
  SIMPLE_SERVICE_PORTS,
  userPortHelp,
} from "../mod.ts";
import { runServerScript } from "../lib/server_cli.ts";

/**
 * The RFC 863 discard service, for {@linkcode serveSimple} or an inetd.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { discardService } from "./discard.ts";
 *
 * const reply = await discardService().datagram!(new Uint8Array(3), {
 *   transport: "udp",
 *   hostname: "127.0.0.1",
 *   port: 5000,
 * });
 * assertEquals(reply, null); // discard never answers
 * ```
 */
export function discardService(): Service {
  return {
    name: "discard",
    defaultPort: SIMPLE_SERVICE_PORTS.discard,
    stream: discardStream,
    datagram: () => null,
  };
}

async function discardStream(
  conn: Deno.Conn,
  context: ConnectionContext,
): Promise<void> {
  const sink = new Uint8Array(64 * 1024);
  for (let n; (n = await conn.read(sink)) !== null;) {
    context.bytesIn += n;
    context.active();
  }
}

/**
 * Starts a discard server (default TCP on 0.0.0.0:9).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serveDiscard } from "./discard.ts";
 * import { writeAll } from "../mod.ts";
 *
 * await using server = serveDiscard({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await writeAll(conn, new Uint8Array(100_000));
 * await conn.closeWrite();
 * assertEquals(await conn.read(new Uint8Array(1)), null); // not a byte back
 * ```
 */
export function serveDiscard(options: ServerOptions = {}): Server {
  return serveSimple(discardService(), options);
}

const FLAGS = {
  ...serverFlags({ port: SIMPLE_SERVICE_PORTS.discard }),
};

const USAGE = `usage: discard.ts [options]

Discard server (RFC 863): reads and throws away everything it receives.

${flagsHelp(FLAGS)}

${userPortHelp("discard")}
Permissions: --allow-net=HOST:PORT (TCP), plus --unstable-net for --udp.`;

if (import.meta.main) {
  await runServerScript(
    USAGE,
    FLAGS,
    (values) => serveDiscard(serverOptionsFromFlags(values)),
  );
}
