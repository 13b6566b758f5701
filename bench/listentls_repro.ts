/**
 * Two behaviours of `Deno.listenTls` worth reporting upstream, each the
 * reason the servers here accept plain TCP and start TLS themselves
 * (`lib/tls_node.ts`). Standalone: only Deno and the certificates of the
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
