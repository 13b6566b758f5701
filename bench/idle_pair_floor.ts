/**
 * What Deno itself takes for an idle forwarded pair: N pairs of connected
 * TCP sockets, each socket with one pending `read` into a buffer of
 * `SPLICE_IDLE_BUFFER_BYTES` (256), and no other state. A forwarder holds
 * two such sockets a pair (the client's and its own to the target), so
 * this is the floor for `servers/forward.ts`'s idle memory, as one socket
 * is for an echo connection's. Standalone, no imports:
 *
 *     deno run --allow-net=127.0.0.1 --v8-flags=--expose-gc bench/idle_pair_floor.ts 4000
 *
 * It prints the JS heap, external memory and RSS a pair, measured after
 * GC, against the same process before the pairs were opened (and after
 * opening and closing as many once, so the heap has grown as a server's
 * has: the RSS figure is then mostly what that left free, and varies).
 * Measured with Deno 2.9.6: 4,454 B of heap a pair, about 2.2 KB a socket
 * (the `TcpConn`, its two address objects, its set of pending reads, the
 * pending read's async function and promises), and the two 256 B buffers
 * outside it. The same count for `servers/forward.ts` in front of an echo
 * target, in-process after GC: 6,058 B of heap a pair; for an echo
 * server's connection, 3,091 B.
 *
 * @module
 */

const pairs = Number(Deno.args[0] ?? 4000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });

/** Opens `count` connected pairs, each socket with a pending read. */
async function open(count: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < count; i++) {
    const accepting = listener.accept();
    const client = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    const server = await accepting;
    for (const conn of [client, server]) {
      // Nothing is kept but the read itself (it fails once closed).
      conn.read(new Uint8Array(256)).catch(() => {});
    }
    conns.push(client, server);
  }
  return conns;
}

async function settle(): Promise<
  { heap: number; external: number; rss: number }
> {
  for (let i = 0; i < 5; i++) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const { heapUsed, external, rss } = Deno.memoryUsage();
  return { heap: heapUsed, external, rss };
}

for (const conn of await open(pairs)) conn.close();
const before = await settle();
const conns = await open(pairs);
const after = await settle();
// The array of connections is the script's, not a pair's: 16 B a pair.
const perPair = (key: keyof typeof before) =>
  Math.round((after[key] - before[key]) / pairs);
console.log(
  `${pairs} idle pairs: ${perPair("heap")} B of JS heap, ${
    perPair("external")
  } B external, ${perPair("rss")} B of RSS a pair`,
);
for (const conn of conns) conn.close();
listener.close();
