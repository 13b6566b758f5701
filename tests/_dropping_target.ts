/**
 * A target that drops every request unanswered, as one that dies in the
 * middle does: accepts, reads once, and closes, with `close` a FIN, with
 * `reset` a reset (`closeWithReset`, FFI to libc: Deno's own close sends a
 * FIN first, even with bytes left unread).
 *
 *     deno run --allow-net=127.0.0.2:0 --allow-ffi=/lib/x86_64-linux-gnu/libc.so.6 \
 *       tests/_dropping_target.ts 127.0.0.2 reset
 *
 * @module
 */

import { closeWithReset } from "../lib/keepalive.ts";

const [hostname, mode] = Deno.args;
if (mode !== "close" && mode !== "reset") {
  console.error("usage: _dropping_target.ts HOST close|reset");
  Deno.exit(2);
}
const listener = Deno.listen({ hostname, port: 0 });
console.error(`listening on ${hostname}:${listener.addr.port}`);
for await (const conn of listener) {
  (async () => {
    try {
      await conn.read(new Uint8Array(1024));
    } catch {
      // Gone already.
    }
    if (mode === "close") conn.close();
    else if (!closeWithReset(conn)) throw new Error("no reset sent (FFI?)");
    console.error("dropped a request");
  })();
}
