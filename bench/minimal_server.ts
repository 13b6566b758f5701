/**
 * The least a Deno server can do, for `deno task bench`: what the runtime
 * allows, so a gap between ours and C can be split into the runtime's part
 * and ours. No limits, no logging, no timers.
 *
 *     deno run --allow-net=127.0.0.1 bench/minimal_server.ts echo PORT
 *     deno run --allow-net=127.0.0.1 bench/minimal_server.ts daytime PORT
 *
 * echo: a bare `Deno.listen` loop, one reused 64 KiB buffer a connection,
 * read then write all. daytime: one write of a 26-byte line, then close.
 *
 * @module
 */

const [mode, portText] = Deno.args;
const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(portText) });
console.error(`listening on 127.0.0.1:${listener.addr.port}`);
const line = new TextEncoder().encode("Tue Dec  1 15:00:00 2026\r\n");

async function echo(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n; (n = await conn.read(buffer)) !== null;) {
      for (let off = 0; off < n;) {
        off += await conn.write(buffer.subarray(off, n));
      }
    }
  } catch {
    // Reset by the client.
  } finally {
    conn.close();
  }
}

async function daytime(conn: Deno.TcpConn): Promise<void> {
  try {
    await conn.write(line);
  } catch {
    // Reset by the client.
  } finally {
    conn.close();
  }
}

const serve = mode === "daytime" ? daytime : echo;
for await (const conn of listener) serve(conn);
