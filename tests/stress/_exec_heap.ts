/**
 * Run by exec_stress_test.ts with `--v8-flags=--expose-gc`: an exec server
 * (`serveExec`, `cat` per connection) in this process, 10,000 connections
 * 16 at a time, and the JS heap after a full GC at 1,000 and then every
 * 3,000 (with the process's RSS), printed as one JSON line.
 *
 *     deno run --v8-flags=--expose-gc --allow-net=127.0.0.1 --allow-run=cat \
 *       --allow-read=/usr/bin/cat tests/stress/_exec_heap.ts
 */
import { serveExec } from "../../servers/exec.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const server = serveExec({
  hostname: "127.0.0.1",
  port: 0,
  log: () => {},
  program: "cat",
  args: [],
  // One address, 16 at once: no rate or per-source limit.
  ratePerSecond: 0,
  perSource: 0,
});
await server.ready;
const { port } = server.addr as Deno.NetAddr;
const line = new TextEncoder().encode("hello\n");

async function once(): Promise<void> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(line);
  await conn.closeWrite();
  const buffer = new Uint8Array(64);
  let received = 0;
  for (let n; (n = await conn.read(buffer)) !== null;) received += n;
  if (received !== line.length) throw new Error(`echoed ${received} bytes`);
}

const samples: { connections: number; heapUsed: number; rss: number }[] = [];
let connections = 0;
for (const until of [1000, 4000, 7000, 10_000]) {
  for (; connections < until; connections += 16) {
    await Promise.all(Array.from({ length: 16 }, once));
  }
  // Let the last programs be reaped and their closures go.
  await new Promise((resolve) => setTimeout(resolve, 300));
  gc();
  gc();
  const { heapUsed, rss } = Deno.memoryUsage();
  samples.push({ connections, heapUsed, rss });
}
await server.shutdown();
console.log(JSON.stringify(samples));
