/**
 * Echo server (RFC 862), from the seed's "TCP Concurrent Echo Server" (the
 * seed: the classic C socket examples page this toolkit ports): sends back
 * every byte it receives, byte-exact, to many clients at once. Over TCP, a
 * Unix stream socket, UDP or a Unix datagram socket; `--print` also writes
 * what it receives to stdout, as the seed does.
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:15000 servers/echo.ts &
 * listening on 0.0.0.0:15000
 * $ printf 'hello\nworld\n' | socat - TCP:127.0.0.1:15000
 * hello
 * world
 * accepted 127.0.0.1:50354
 * closed 127.0.0.1:50354 (12 bytes in, 12 bytes out)
 * $ echo hi | deno task connect 127.0.0.1 15000
 * address 127.0.0.1:15000
 * connected to 127.0.0.1:15000
 * hi
 * ```
 *
 * UDP (each datagram goes back to its sender, up to 65,507 bytes, so it
 * needs host-wide net permission) and a Unix stream socket:
 *
 * ```sh
 * $ deno run --unstable-net --allow-net servers/echo.ts --udp &
 * listening on 0.0.0.0:15000
 * $ echo hi | socat - UDP:127.0.0.1:15000,sourceport=40000
 * hi
 * $ deno run --allow-net=unix:/tmp/echo.sock --allow-read=/tmp/echo.sock \
 *     --allow-write=/tmp/echo.sock servers/echo.ts --unix /tmp/echo.sock &
 * listening on /tmp/echo.sock
 * $ echo hi | socat - UNIX-CONNECT:/tmp/echo.sock
 * hi
 * ```
 *
 * Over UDP it never answers a source port below 1024 or another simple
 * service's or this toolkit's port, at most `--udp-rate` replies a second
 * go to one address, and its loop guard drops what only a loop between
 * two servers sends: its own replies coming back with no think time,
 * hundreds of rounds faster than the rate limit lets a client go
 * (`--help` gives the figures). A client repeating the same datagram is
 * answered like any other.
 *
 * A Unix datagram socket (replies go to each client's own socket path,
 * which Deno checks for net and write permission: here, clients bind in
 * /tmp), and several threads (one listener each on the same port,
 * SO_REUSEPORT, Linux; a worker loads the script again, hence the read
 * permission):
 *
 * ```sh
 * $ deno run --unstable-net --allow-net --allow-read=/tmp/echo.sock \
 *     --allow-write=/tmp servers/echo.ts --unixpacket /tmp/echo.sock &
 * listening on /tmp/echo.sock
 * $ echo hi | socat - UNIX-SENDTO:/tmp/echo.sock,bind=/tmp/client.sock
 * hi
 * $ deno run --allow-net=0.0.0.0:15000 --allow-read=servers/echo.ts,mod.ts,lib \
 *     servers/echo.ts --workers 2 &
 * listening on 0.0.0.0:15000
 * $ echo hi | socat - TCP:127.0.0.1:15000
 * hi
 * ```
 *
 * (Where `JSR_URL` points at a `file:` JSR mirror, a worker reads `@std`
 * modules from there too: add the mirror's directory to `--allow-read`.)
 *
 * TLS, with `cert.pem` and `key.pem` from the README's recipe (a server
 * certificate signed by `ca.pem`), and only for clients from 127.0.0.0/8
 * (`--allow`/`--deny` work on every transport with addresses); a client
 * that does not trust the certificate costs one log line:
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:15000 --allow-read=cert.pem,key.pem \
 *     servers/echo.ts --tls --cert cert.pem --key key.pem --allow 127.0.0.0/8 &
 * listening on 0.0.0.0:15000
 * $ echo hi | socat - OPENSSL:127.0.0.1:15000,cafile=ca.pem,commonname=localhost
 * hi
 * $ echo hi | deno task connect --tls 127.0.0.1 15000
 * address 127.0.0.1:15000
 * connected to 127.0.0.1:15000
 * error: TLS handshake with 127.0.0.1:15000 failed: certificate not trusted (unknown issuer): give --ca FILE with the CA that signed it, or --insecure to skip the check
 * TLS handshake failed: 127.0.0.1:33134: received fatal alert: UnknownCA
 * ```
 *
 * Installed as a command (every install line names `--config=deno.json`,
 * whose import map resolves `@std` and whose `"unstable": ["net"]` gives
 * UDP its API), and with the permission UDP needs:
 *
 * ```sh
 * $ deno install -g -f -n sock-echo --config=deno.json --allow-net=0.0.0.0:15000 servers/echo.ts
 * ...
 * $ sock-echo &
 * listening on 0.0.0.0:15000
 * $ deno install -g -f -n sock-echo-udp --config=deno.json --allow-net servers/echo.ts -- --udp
 * ...
 * $ sock-echo-udp &
 * listening on 0.0.0.0:15000
 * $ echo hi | socat - UDP:127.0.0.1:15000,sourceport=40000
 * hi
 * ```
 *
 * Unlike the seed, which forks a process per client and prints what it
 * reads, this echoes it back (`--print` prints it too), holds at most
 * `--max-connections` clients, and stops gracefully on SIGINT/SIGTERM.
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:15000,127.0.0.1:9100 servers/echo.ts \
 *     --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:15000
 * $ echo hi | socat - TCP:127.0.0.1:15000
 * hi
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_accepted'
 * sockets_connections_accepted_total{service="echo",transport="tcp"} 1
 * ```
 *
 * @module
 */

import {
  type ConnectionContext,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_UDP_RATE,
  flag,
  flagsHelp,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  serveSimple,
  type Service,
  stderrLogNow,
  stdoutAfterLog,
  TOOLKIT_UDP_PORTS,
  udpGuardHelp,
  writeAll,
} from "../mod.ts";
import { runServerScript } from "../lib/server_cli.ts";

/** Options for {@linkcode serveEcho}. */
export interface EchoOptions extends ServerOptions {
  /** Also write every received byte to stdout, as the seed does. */
  print?: boolean;
}

/** The echo service's well-known port in this toolkit (the seed's). */
export const ECHO_PORT: number = TOOLKIT_UDP_PORTS.echo;

const SMALL_BUFFER = 256;
const LARGE_BUFFER = 64 * 1024;

/**
 * The RFC 862 echo service, for {@linkcode serve} or an inetd.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { echoService } from "./echo.ts";
 *
 * assertEquals(echoService().name, "echo");
 * ```
 */
export function echoService(
  options: { print?: boolean; defaultPort?: number } = {},
): Service {
  const print = options.print ?? false;
  // Its log lines keep their place among the payloads it prints.
  const printed = print ? stdoutAfterLog() : Deno.stdout;
  return {
    name: "echo",
    defaultPort: options.defaultPort ?? ECHO_PORT,
    stream: (conn, context) =>
      echoStream(conn, context, print ? printed : undefined),
    // Without --print, the reply at once: no promise, no turn of the loop.
    datagram: print
      ? async (data) => {
        await writeAll(printed, data);
        return data;
      }
      : (data) => data,
  };
}

/**
 * Echoes one stream connection until the peer half-closes: one reused
 * buffer, read then write-all, so a client that does not read stops the
 * server reading from it (backpressure) instead of growing a queue. Measured
 * (`deno task bench`): this loop costs about a third of the CPU per round
 * trip of `conn.readable.pipeTo(conn.writable)`, which allocates a chunk per
 * read.
 */
async function echoStream(
  conn: Deno.Conn,
  context: ConnectionContext,
  printed?: { write(p: Uint8Array): Promise<number> },
): Promise<void> {
  // An echo client waits for its bytes: send each reply at once rather than
  // let Nagle hold a small write behind an unacknowledged one (Go's default).
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  // Idle clients hold a small buffer (an idle connection costs memory, not
  // CPU); a read that fills it earns the large one for good.
  let buffer = new Uint8Array(SMALL_BUFFER);
  // The bytes read, as a view kept while reads keep the same length (a
  // ping-pong client, a full buffer): no allocation per chunk.
  let chunk = buffer;
  for (let n; (n = await conn.read(buffer)) !== null;) {
    context.active();
    context.bytesIn += n;
    if (chunk.byteLength !== n || chunk.buffer !== buffer.buffer) {
      chunk = n === buffer.byteLength ? buffer : buffer.subarray(0, n);
    }
    if (printed) await writeAll(printed, chunk);
    // One write nearly always takes it all; loop only when it does not.
    const written = await conn.write(chunk);
    if (written < n) await writeAll(conn, chunk.subarray(written));
    context.bytesOut += n;
    context.active();
    if (n === buffer.byteLength && n < LARGE_BUFFER) {
      buffer = new Uint8Array(LARGE_BUFFER);
    }
  }
}

/**
 * Starts an echo server (default TCP on 0.0.0.0:15000).
 *
 * @example An echo server on a free port, stopped by `await using`
 * ```ts
 * import { serveEcho } from "./echo.ts";
 *
 * await using server = serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("hi"));
 * const reply = new Uint8Array(2);
 * await conn.read(reply);
 * ```
 */
export function serveEcho(options: EchoOptions = {}): Server {
  // UDP: never answers another simple service's port (echo <-> chargen
  // loops, CVE-1999-0103), even with allowLowPorts.
  return serveSimple(echoService({ print: options.print }), options);
}

const FLAGS = {
  print: flag.boolean("also write what is received to stdout"),
  ...serverFlags({ port: ECHO_PORT }),
};

const USAGE = `usage: echo.ts [options]

Echo server (RFC 862): sends back every byte it receives.

${flagsHelp(FLAGS)}

Limits: at most --max-connections clients (default ${DEFAULT_MAX_CONNECTIONS}) with one buffer
each (${SMALL_BUFFER} bytes, ${
  LARGE_BUFFER / 1024
} KiB once busy); a client that does not read is
not read from either (no queue grows); no line limit (bytes are not parsed);
UDP datagrams up to 65507 bytes, replies limited by --udp-rate (default
${DEFAULT_UDP_RATE}/s per source).

${udpGuardHelp()}

Permissions: --allow-net=HOST:PORT for TCP; for --unix PATH,
--allow-net=unix:PATH --allow-read=PATH --allow-write=PATH; for --udp,
--unstable-net and --allow-net (replies go to any sender); for
--unixpacket PATH, --unstable-net --allow-net --allow-read=PATH and
--allow-write for the directory where clients bind their sockets; for
--tls, also --allow-read=CERT,KEY (and the --client-ca FILE).`;

if (import.meta.main) {
  await runServerScript(USAGE, FLAGS, (values) =>
    serveEcho({
      ...serverOptionsFromFlags(values),
      print: values.print,
      // Printed, the data and the log lines keep their order.
      ...(values.print && { log: stderrLogNow }),
    }));
}
