// The minimal Deno.listenTls echo for `deno task bench`: what Deno's own
// TLS does, with nothing of ours in the way (no access checks, no limits).
//   deno run --allow-net --allow-read tls_echo_deno.ts PORT CERT KEY
const [port, cert, key] = Deno.args;
const listener = Deno.listenTls({
  hostname: "127.0.0.1",
  port: Number(port),
  cert: Deno.readTextFileSync(cert),
  key: Deno.readTextFileSync(key),
});
console.error(`listening on 127.0.0.1:${port}`);

async function echo(conn: Deno.TlsConn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n; (n = await conn.read(buffer)) !== null;) {
      for (let at = 0; at < n;) at += await conn.write(buffer.subarray(at, n));
    }
  } catch {
    // The client went away.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

for await (const conn of listener) echo(conn);
