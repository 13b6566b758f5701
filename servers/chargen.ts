/**
 * Character generator server (RFC 864): sends 72-character lines plus CRLF
 * cut from the ring of the 95 printable ASCII characters (space to `~`),
 * the first starting at `!`, each next one character further on, until the
 * client goes away. What the client sends is read and thrown away. No seed
 * example: one of the RFC simple services the seed's servers are the start
 * of (the seed: the classic C socket examples page this toolkit ports).
 *
 * As a user, on port 10019, where inetd puts it (`deno task chargen`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10019 servers/chargen.ts --port=10019 &
 * listening on 0.0.0.0:10019
 * $ socat -u TCP:127.0.0.1:10019 - 2>/dev/null | head -n 3
 * !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefgh
 * "#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghi
 * #$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghij
 * accepted 127.0.0.1:50524
 * ```
 *
 * The stream is written as fast as the client reads and no faster: each
 * write waits for the kernel to take the last one (backpressure), so a slow
 * reader costs one buffer, not a growing queue.
 *
 * UDP: each datagram is answered with one datagram of pattern, 444 bytes
 * (six lines; RFC 864 caps it at 512). Replies go to whoever sent, so it
 * needs host-wide net permission. Port 19 itself needs root:
 *
 * ```sh
 * $ deno run --unstable-net --allow-net servers/chargen.ts --udp --port=10019 &
 * listening on 0.0.0.0:10019
 * $ echo | socat - UDP:127.0.0.1:10019,sourceport=40000 | wc -c
 * 444
 * $ deno run --allow-net=0.0.0.0:19 servers/chargen.ts &   # as root
 * listening on 0.0.0.0:19
 * $ deno install -g -f -n sock-chargen --config=deno.json --allow-net=0.0.0.0:10019 servers/chargen.ts -- --port=10019
 * ...
 * $ sock-chargen --help
 * usage: chargen.ts [options]
 * ...
 * ```
 *
 * The UDP side never answers another simple service's port and limits
 * replies per source (CVE-1999-0103: chargen's UDP side was the classic
 * amplifier).
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10019,127.0.0.1:9100 servers/chargen.ts \
 *     --port=10019 --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:10019
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="chargen",transport="tcp"} 0
 * ```
 *
 * @module
 */

import {
  closeQuietly,
  type ConnectionContext,
  flagsHelp,
  MAX_SIMPLE_DATAGRAM,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  serveSimple,
  type Service,
  SIMPLE_SERVICE_PORTS,
  udpGuardHelp,
  userPortHelp,
  writeAll,
} from "../mod.ts";
import { runServerScript } from "../lib/server_cli.ts";

/** Characters in each line before its CRLF (RFC 864). */
export const CHARGEN_LINE_LENGTH = 72;

/** The ring: the 95 printable ASCII characters, space to `~`. */
const RING_SIZE = 95;
const RING_FIRST = 0x20;
const LINE_BYTES = CHARGEN_LINE_LENGTH + 2;

/**
 * `count` lines of the RFC 864 pattern, each 72 characters plus CRLF,
 * starting with line `first` (line 0 starts at `!`). The pattern repeats
 * every 95 lines.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { chargenLines } from "./chargen.ts";
 *
 * const [one, two] = new TextDecoder().decode(chargenLines(0, 2)).split("\r\n");
 * assertEquals(one, `!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_\`abcdefgh`);
 * assertEquals(two.slice(0, 5), `"#$%&`); // each line starts one further
 * ```
 */
export function chargenLines(first: number, count: number): Uint8Array {
  const out = new Uint8Array(count * LINE_BYTES);
  for (let line = 0; line < count; line++) {
    // Line 0 starts at '!', one past the ring's first character (space).
    const start = (first + line + 1) % RING_SIZE;
    const at = line * LINE_BYTES;
    for (let i = 0; i < CHARGEN_LINE_LENGTH; i++) {
      out[at + i] = RING_FIRST + (start + i) % RING_SIZE;
    }
    out[at + CHARGEN_LINE_LENGTH] = 0x0d;
    out[at + CHARGEN_LINE_LENGTH + 1] = 0x0a;
  }
  return out;
}

// Nine whole cycles of 95 lines (63 270 bytes): writing this block again
// and again continues the pattern exactly, with few large writes.
const STREAM_BLOCK = chargenLines(0, RING_SIZE * 9);
// As many whole lines as fit in one datagram reply (6 lines, 444 bytes).
const DATAGRAM_REPLY = chargenLines(
  0,
  Math.floor(MAX_SIMPLE_DATAGRAM / LINE_BYTES),
);

/**
 * The RFC 864 chargen service, for {@linkcode serveSimple} or an inetd.
 *
 * @example
 * ```ts
 * import { assert } from "@std/assert";
 * import { chargenService } from "./chargen.ts";
 *
 * const reply = await chargenService().datagram!(new Uint8Array(1), {
 *   transport: "udp",
 *   hostname: "127.0.0.1",
 *   port: 5000,
 * });
 * assert(reply && reply.byteLength <= 512); // RFC 864: at most 512 bytes
 * ```
 */
export function chargenService(): Service {
  return {
    name: "chargen",
    defaultPort: SIMPLE_SERVICE_PORTS.chargen,
    stream: chargenStream,
    datagram: () => DATAGRAM_REPLY,
  };
}

function isPeerGone(error: unknown): boolean {
  return error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted;
}

async function chargenStream(
  conn: Deno.Conn,
  context: ConnectionContext,
): Promise<void> {
  // RFC 864: "data sent by the client is thrown away". Reading it keeps a
  // chatty client from stalling on a full window; EOF only means the
  // client has nothing more to say, not that it stopped reading.
  const discarding = (async () => {
    const sink = new Uint8Array(16 * 1024);
    try {
      for (let n; (n = await conn.read(sink)) !== null;) {
        context.bytesIn += n;
        context.active();
      }
    } catch {
      // The connection closed under us: the writer notices too.
    }
  })();
  try {
    while (true) {
      await writeAll(conn, STREAM_BLOCK);
      context.bytesOut += STREAM_BLOCK.byteLength;
      context.active();
    }
  } catch (error) {
    // The client going away is how every chargen session ends.
    if (!isPeerGone(error)) throw error;
  } finally {
    closeQuietly(conn); // The server's idle sweep or shutdown may have.
    await discarding;
  }
}

/**
 * Starts a chargen server (default TCP on 0.0.0.0:19).
 *
 * @example
 * ```ts
 * import { assertMatch } from "@std/assert";
 * import { serveChargen } from "./chargen.ts";
 * import { readExact } from "../mod.ts";
 *
 * await using server = serveChargen({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * const line = new TextDecoder().decode(await readExact(conn, 74));
 * assertMatch(line, /^!"#\$.{68}\r\n$/);
 * ```
 */
export function serveChargen(options: ServerOptions = {}): Server {
  return serveSimple(chargenService(), options);
}

const FLAGS = {
  ...serverFlags({ port: SIMPLE_SERVICE_PORTS.chargen }),
};

const USAGE = `usage: chargen.ts [options]

Character generator (RFC 864): sends 72-character lines of the printable
ASCII ring until the client goes away; with --udp, one datagram of at most
512 bytes per datagram received.

${flagsHelp(FLAGS)}

${udpGuardHelp()}

${userPortHelp("chargen")}
Permissions: --allow-net=HOST:PORT for TCP; for --udp, --unstable-net and
--allow-net (replies go to any sender).`;

if (import.meta.main) {
  await runServerScript(
    USAGE,
    FLAGS,
    (values) => serveChargen(serverOptionsFromFlags(values)),
  );
}
