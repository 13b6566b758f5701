/**
 * Three behaviours of `Deno.listenTls` worth reporting upstream: (a) and
 * (b) are the reason the servers here accept plain TCP and start TLS
 * themselves (`lib/tls_node.ts`); (c) is why a minimal `Deno.listenTls`
 * echo serves ~20 handshakes a second one at a time (`deno task bench
 * --family handshake`). Standalone: only Deno and the certificates of the
 * README's recipe (`cert.pem`, `key.pem`, and `ca.pem` that signed them).
 *
 *     deno run --allow-net=127.0.0.1 --allow-read=cert.pem,key.pem,ca.pem \
 *       bench/listentls_repro.ts cert.pem key.pem ca.pem
 *
 * (a) A client connects and sends nothing; the server accepts it and
 *     closes it at once: the client is still connected 3 s later (a plain
 *     `Deno.listen` server's close reaches it at once).
 * (b) A client's ClientHello is waiting when the server accepts; the
 *     server refuses it right after `accept()` (an access list would) by
 *     closing it: the client has its handshake done all the same, the
 *     server's certificate received and verified, as `accept()` had
 *     started the handshake.
 *
 * (c) A client finishes its handshake, sends one byte and waits for its
 *     echo: the echo comes 40 ms late or more (a C OpenSSL client with
 *     TCP_NODELAY: 48 ms a connection; this script's Deno client, Nagle
 *     on too: 90). After the client's Finished
 *     the server sends its TLS 1.3 session tickets, then the echo; the
 *     accepted socket has Nagle's algorithm on (no TCP_NODELAY, and a
 *     `Deno.TlsConn` has no `setNoDelay`), so the echo waits for the ACK
 *     of the tickets, which the client delays (it has nothing to send)
 *     by the kernel's delayed-ACK timer, 40 ms on Linux (seen with
 *     tcpdump: tickets at 100.8 ms, the client's bare ACK at 144.1 ms,
 *     the echo 0.01 ms after it). The servers here drive a socket handle
 *     with TCP_NODELAY set, and Node's echo sets it (`setNoDelay`).
 *
 * @module
 */

const [certFile, keyFile, caFile] = Deno.args;
if (!caFile) {
  console.error("usage: listentls_repro.ts CERT KEY CA");
  Deno.exit(2);
}
const cert = Deno.readTextFileSync(certFile);
const key = Deno.readTextFileSync(keyFile);
const ca = Deno.readTextFileSync(caFile);
const WAIT_MS = 3000;

const delay = (ms: number) => new Promise((done) => setTimeout(done, ms));

/**
 * How `conn` ends within `ms`: `"closed"` (EOF or reset) or `"open"`; the
 * connection is closed after.
 */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reading = conn.read(new Uint8Array(1024)).then(
    () => "closed",
    () => "closed",
  );
  const state = await Promise.race([
    reading,
    new Promise<string>((done) => timer = setTimeout(() => done("open"), ms)),
  ]);
  clearTimeout(timer);
  conn.close(); // Ends a read still pending.
  await reading;
  return state;
}

/** (a), and the same with a plain `Deno.listen` server for contrast. */
async function silentClient(tls: boolean): Promise<string> {
  using listener = tls
    ? Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  const conn = await listener.accept();
  conn.close();
  return await closedWithin(client, WAIT_MS);
}

/** (b): whether the refused client completes its handshake. */
async function refusedClient(): Promise<string> {
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
  });
  const client = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: listener.addr.port,
    caCerts: [ca],
  });
  const handshake = client.handshake().then(
    () => "yes",
    (error) => `no (${error.message.split("\n")[0]})`,
  );
  await delay(200); // The ClientHello is there before accept().
  const conn = await listener.accept();
  conn.close(); // Refused.
  const done = await Promise.race([handshake, delay(WAIT_MS).then(() => "no")]);
  client.close();
  await handshake;
  return done;
}

/** (c): how long one byte's echo takes right after the handshake, in ms. */
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
  for (let i = 0; i < 10; i++) {
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
console.log(
  `(a) Deno.listenTls, a silent client closed after accept(): client still connected after ${
    WAIT_MS / 1000
  } s: ${(await silentClient(true)) === "open" ? "yes" : "no"}`,
);
console.log(
  `    Deno.listen, the same: client still connected after ${
    WAIT_MS / 1000
  } s: ${(await silentClient(false)) === "open" ? "yes" : "no"}`,
);
console.log(
  `(b) Deno.listenTls, a client closed right after accept(): its handshake done, the server's certificate received and verified: ${await refusedClient()}`,
);
const echoes = await echoAfterHandshake();
console.log(
  `(c) Deno.listenTls echo, one byte right after the handshake, 10 clients: median ${
    echoes[5].toFixed(1)
  } ms, ${echoes.filter((ms) => ms >= 30).length} of 10 took 30 ms or more`,
);
