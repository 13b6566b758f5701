// Node's TLS echo for `deno task bench`, written as a Node user would; with
// CA, it asks every client for a certificate that CA signed and refuses the
// rest (requestCert, rejectUnauthorized).
//   node node_tls_server.mjs PORT CERT KEY [CA]
import { readFileSync } from "node:fs";
import { createServer } from "node:tls";

const [port, cert, key, ca] = process.argv.slice(2);
const server = createServer({
  cert: readFileSync(cert),
  key: readFileSync(key),
  ...(ca &&
    { ca: readFileSync(ca), requestCert: true, rejectUnauthorized: true }),
}, (socket) => {
  socket.on("error", () => {});
  socket.setNoDelay(true);
  socket.pipe(socket);
});
server.on("tlsClientError", () => {});
server.listen(Number(port), "127.0.0.1", () => {
  console.error(`listening on 127.0.0.1:${server.address().port}`);
});
