/**
 * The least a Deno WebSocket bridge can be, for `deno task bench --family
 * websocket`: `Deno.serve` upgrades each request, connects to the target,
 * and copies messages to it and its bytes back as binary messages. No
 * limits, no logging, no backpressure, no errors handled beyond closing:
 * the runtime's ceiling that `servers/forward.ts ws://` is measured
 * against.
 *
 *     deno run --allow-net=127.0.0.1:8080,127.0.0.1:15000 bench/minimal_ws_bridge.ts 8080 15000
 *
 * @module
 */

const [listenPort, targetPort] = Deno.args.map(Number);

Deno.serve({
  hostname: "127.0.0.1",
  port: listenPort,
  onListen: ({ port }) => console.error(`listening on 127.0.0.1:${port}`),
}, async (request) => {
  const target = await Deno.connect({
    hostname: "127.0.0.1",
    port: targetPort,
  });
  target.setNoDelay(true);
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.binaryType = "arraybuffer";
  // Writes in order: one after another.
  let writing = Promise.resolve();
  socket.onmessage = (event) => {
    const bytes = new Uint8Array(event.data as ArrayBuffer);
    writing = writing.then(async () => {
      for (let done = 0; done < bytes.length;) {
        done += await target.write(bytes.subarray(done));
      }
    }).catch(() => {});
  };
  socket.onopen = async () => {
    try {
      for (;;) {
        const buffer = new Uint8Array(64 * 1024);
        const n = await target.read(buffer);
        if (n === null) break;
        socket.send(buffer.subarray(0, n));
      }
    } catch {
      // Closed.
    }
    if (socket.readyState === WebSocket.OPEN) socket.close();
  };
  socket.onclose = () => {
    try {
      target.close();
    } catch {
      // Closed.
    }
  };
  return response;
});
