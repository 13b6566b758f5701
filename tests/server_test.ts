/**
 * `lib/server.ts`'s `serve()`: what its `Server` promises about its socket,
 * through real sockets.
 */

import { assertEquals, assertRejects } from "@std/assert";
import { silentLog } from "../lib/log.ts";
import { serve } from "../lib/server.ts";
import { readToEof } from "./_exec.ts";

const encoder = new TextEncoder();

/** Echoes a connection's bytes, and a datagram. */
const echo = {
  name: "echo",
  defaultPort: 0,
  async stream(conn: Deno.Conn) {
    const buffer = new Uint8Array(1024);
    for (let n; (n = await conn.read(buffer)) !== null;) {
      await conn.write(buffer.subarray(0, n));
    }
  },
  datagram: (data: Uint8Array) => data,
};

Deno.test("serve(): socketClosed settles once a TCP port, its accept pending, can be bound again, while a connection goes on", async () => {
  const server = serve(echo, {
    hostname: "127.0.0.1",
    port: 0,
    log: silentLog,
  });
  const { port } = server.addr as Deno.NetAddr;
  using inFlight = await Deno.connect({ hostname: "127.0.0.1", port });
  await inFlight.write(encoder.encode("before "));
  const finished = server.shutdown({ gracePeriodMs: Infinity });
  await server.socketClosed;
  // Bound at once, not a tick later: nothing holds the old socket.
  Deno.listen({ hostname: "127.0.0.1", port }).close();
  await inFlight.write(encoder.encode("and after"));
  await inFlight.closeWrite();
  assertEquals(
    new TextDecoder().decode(await readToEof(inFlight)),
    "before and after",
  );
  await finished;
});

Deno.test("serve(): socketClosed settles once a UDP port, its receive pending, can be bound again", async () => {
  const server = serve(echo, {
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
    log: silentLog,
  });
  const { port } = server.addr as Deno.NetAddr;
  const finished = server.shutdown();
  await server.socketClosed;
  Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port })
    .close();
  await finished;
});

Deno.test("serve(): socketClosed settles when binding failed", async () => {
  const path = await Deno.makeTempFile(); // A file, not a socket: refused.
  try {
    const server = serve(echo, { transport: "unix", path, log: silentLog });
    await assertRejects(() => server.ready);
    await server.socketClosed;
  } finally {
    await Deno.remove(path);
  }
});
