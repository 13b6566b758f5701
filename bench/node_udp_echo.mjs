// Node `dgram` UDP echo server for `deno task bench --family udp`, written
// as a Node user would: each datagram sent back to its sender.
//   node node_udp_echo.mjs PORT
import dgram from "node:dgram";

const socket = dgram.createSocket("udp4");
socket.on("message", (message, from) => {
  socket.send(message, from.port, from.address);
});
socket.bind(Number(process.argv[2]), "127.0.0.1", () => {
  console.error(`listening on 127.0.0.1:${socket.address().port}`);
});
