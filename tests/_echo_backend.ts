/**
 * An echo backend in this process, for tests of the WebSocket bridge: a
 * TCP listener that sends back what each connection sends, counting the
 * connections it took.
 *
 * @module
 */

/** An echo backend in this process, counting the connections it took. */
export function echoBackend() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    for await (const conn of listener) {
      accepted++;
      conns.add(conn);
      conn.readable.pipeTo(conn.writable).catch(() => {}).finally(() =>
        conns.delete(conn)
      );
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    target: `tcp://127.0.0.1:${listener.addr.port}`,
    accepted: () => accepted,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Closed by its pipe.
        }
      }
      await loop;
    },
  };
}
