// A minimal WebSocket bridge with Node's `ws` library, as a Node user
// writes one, for `deno task bench --family websocket` (which installs
// `ws` beside a copy of this file):  node node_ws_bridge.mjs PORT TARGET_PORT
import { createRequire } from "node:module";
import net from "node:net";

// Required, not imported: `deno check` would resolve an import of "ws"
// (installed only beside the copy the bench runs) and fail.
const { WebSocketServer } = createRequire(import.meta.url)("ws");

const [port, targetPort] = process.argv.slice(2).map(Number);
const server = new WebSocketServer({ host: "127.0.0.1", port });
server.on("listening", () => {
  console.error(`listening on 127.0.0.1:${server.address().port}`);
});
server.on("connection", (socket) => {
  const target = net.connect(targetPort, "127.0.0.1");
  target.setNoDelay(true);
  socket.on("message", (data) => target.write(data));
  target.on("data", (data) => socket.send(data));
  const end = () => {
    target.destroy();
    socket.terminate();
  };
  socket.on("close", end);
  socket.on("error", end);
  target.on("close", end);
  target.on("error", end);
});
