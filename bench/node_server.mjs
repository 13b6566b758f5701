// Node `net` servers for `deno task bench`, written as a Node user would.
//   node node_server.mjs echo PORT | node node_server.mjs daytime PORT
import net from "node:net";

const [mode, port] = process.argv.slice(2);
const server = net.createServer(
  mode === "daytime"
    ? (socket) => {
      socket.on("error", () => {});
      const line = new Date().toString(); // not ctime: same length is enough
      socket.end(line.slice(0, 24) + "\r\n");
    }
    : (socket) => {
      socket.on("error", () => {});
      socket.pipe(socket);
    },
);
server.listen(Number(port), "127.0.0.1", () => {
  console.error(`listening on 127.0.0.1:${server.address().port}`);
});
