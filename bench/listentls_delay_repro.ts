/**
 * A third behaviour of `Deno.listenTls` worth reporting upstream (the
 * other two: `bench/listentls_repro.ts`), and why a minimal
 * `Deno.listenTls` echo serves only ~20 full handshakes a second one at a
 * time (`deno task bench --family handshake`). Standalone: only Deno and
 * the certificates of the README's recipe (`cert.pem`, `key.pem`, and
 * `ca.pem` that signed them).
 *
 *     deno run --allow-net=127.0.0.1 --allow-read=cert.pem,key.pem,ca.pem \
 *       bench/listentls_delay_repro.ts cert.pem key.pem ca.pem
 *
 * A client finishes its handshake, sends one byte and waits for its echo:
 * the echo comes 40 ms late or more (a C OpenSSL client with TCP_NODELAY:
 * 48 ms a connection; this script's Deno client, whose socket has Nagle's
 * algorithm on too: about 90). After the client's Finished the server
 * sends its TLS 1.3 session tickets, then the echo; the accepted socket
 * has Nagle's algorithm on (Deno sets no TCP_NODELAY on it, and a
 * `Deno.TlsConn` has no `setNoDelay`), so the echo waits for the ACK of
 * the tickets, which the client delays, having nothing to send, by the
 * kernel's delayed-ACK timer (40 ms on Linux). Seen with tcpdump: the
 * tickets leave at 100.8 ms, the client's bare ACK comes at 144.1 ms, the
 * echo 0.01 ms after it. The servers here drive a socket handle that has
 * TCP_NODELAY (their echo leaves before that ACK), and Node's echo sets it.
 *
 * @module
 */

const [certFile, keyFile, caFile] = Deno.args;
if (!caFile) {
  console.error("usage: listentls_delay_repro.ts CERT KEY CA");
  Deno.exit(2);
}
const cert = Deno.readTextFileSync(certFile);
const key = Deno.readTextFileSync(keyFile);
const ca = Deno.readTextFileSync(caFile);
const CLIENTS = 10;

/** How long one byte's echo takes right after each client's handshake, in ms. */
async function echoAfterHandshake(): Promise<number[]> {
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
  });
  const serving = (async () => {
    for await (const conn of listener) {
      const buffer = new Uint8Array(16);
      (async () => {
        try {
          for (let n; (n = await conn.read(buffer)) !== null;) {
            await conn.write(buffer.subarray(0, n));
          }
        } catch {
          // The client left.
        } finally {
          conn.close();
        }
      })();
    }
  })().catch(() => {});
  const times: number[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    using client = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: listener.addr.port,
      caCerts: [ca],
    });
    await client.handshake();
    const started = performance.now();
    await client.write(new Uint8Array([42]));
    await client.read(new Uint8Array(1));
    times.push(performance.now() - started);
  }
  listener.close();
  await serving;
  return times.sort((a, b) => a - b);
}

console.log(`Deno ${Deno.version.deno}`);
const echoes = await echoAfterHandshake();
console.log(
  `Deno.listenTls echo, one byte right after the handshake, ${CLIENTS} clients: median ${
    echoes[CLIENTS / 2].toFixed(1)
  } ms; ${
    echoes.filter((ms) => ms >= 30).length
  } of ${CLIENTS} took 30 ms or more`,
);
