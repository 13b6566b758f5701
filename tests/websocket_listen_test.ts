/**
 * The common server flags on servers/forward.ts's ws:// and wss:// LISTEN,
 * which now runs on the stream server like every listener: a PROXY
 * header from haproxy (`send-proxy`) or written by hand
 * (`--accept-proxy`), client certificates over wss:// (`--client-ca`),
 * `--stats`, and `--idle-timeout`, each through a real process and real
 * clients (Deno's WebSocket, a raw upgrade over TLS, haproxy).
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import {
  freePort,
  makeCertificates,
  missing,
  readAll,
  runCommand,
  startWebSocketBridge,
} from "./_helpers.ts";
import { startHaproxy } from "./_haproxy.ts";
import { echoBackend } from "./_echo_backend.ts";

const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

const UPGRADE = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n" +
  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
  "Sec-WebSocket-Version: 13\r\n\r\n";

/** Writes `request` on `conn` and reads until the head's end (or the end). */
async function askHead(conn: Deno.Conn, request: string): Promise<string> {
  await conn.write(encode(request));
  let head = "";
  const buffer = new Uint8Array(4096);
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    head += decode(buffer.subarray(0, n));
  }
  return head;
}

/** A masked binary frame of `payload` (under 126 bytes), key 0. */
function maskedFrame(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(6 + payload.length);
  frame.set([0x82, 0x80 | payload.length, 0, 0, 0, 0]);
  frame.set(payload, 6);
  return frame;
}

/** Opens a WebSocket and echoes `text` through it, then closes it with 1000. */
async function echoThrough(url: string, text: string): Promise<string> {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = (event) =>
      reject(new Error((event as ErrorEvent).message));
  });
  const reply = new Promise<string>((resolve) =>
    socket.onmessage = (event) => resolve(decode(new Uint8Array(event.data)))
  );
  socket.send(encode(text));
  const echoed = await reply;
  const closed = new Promise((resolve) => socket.onclose = resolve);
  socket.close(1000, "done");
  await closed;
  return echoed;
}

Deno.test({
  name:
    "forward.ts ws:// LISTEN --accept-proxy behind haproxy send-proxy: the closing line names the client haproxy carried",
  ignore: missing("haproxy"),
  async fn() {
    await using echo = echoBackend();
    await using bridge = await startWebSocketBridge([
      "--accept-proxy",
      "ws://127.0.0.1:0/",
      echo.target,
    ]);
    const front = freePort();
    await using _haproxy = await startHaproxy(
      front,
      `listen ws
  bind 127.0.0.1:${front}
  server bridge 127.0.0.1:${bridge.port} send-proxy
`,
    );
    assertEquals(
      await echoThrough(`ws://127.0.0.1:${front}/`, "through haproxy"),
      "through haproxy",
    );
    await bridge.proc.waitForStderr(
      /^closed 127\.0\.0\.1:\d+ \(15 bytes in, 15 bytes out\) for 127\.0\.0\.1:\d+ \(PROXY v1\) to 127\.0\.0\.1:\d+, [\d.]+ s, client closed first \(1000 done\)$/,
    );
  },
});

Deno.test("forward.ts ws:// LISTEN --accept-proxy --deny judges the header's client: refused with 403, another served", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "--accept-proxy",
    "--deny",
    "203.0.113.0/24",
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  const port = bridge.port;
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const head = await askHead(
      conn,
      `PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n${UPGRADE}`,
    );
    assertMatch(head, /^HTTP\/1\.1 403 /);
  }
  await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\) for 203\.0\.113\.7:5555 \(PROXY v1\): not allowed \(the address in its PROXY header\)$/,
  );
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = await askHead(
    conn,
    `PROXY TCP4 198.51.100.7 127.0.0.1 6666 80\r\n${UPGRADE}`,
  );
  assertMatch(head, /^HTTP\/1\.1 101 /);
  await conn.write(maskedFrame(encode("hi")));
  const reply = new Uint8Array(4);
  let got = 0;
  while (got < 4) got += (await conn.read(reply.subarray(got)))!;
  assertEquals([...reply], [0x82, 2, 104, 105]);
  conn.close();
  await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(2 bytes in, 2 bytes out\) for 198\.51\.100\.7:6666 \(PROXY v1\) to 127\.0\.0\.1:\d+, .*client gone without a close frame \(1006\)$/,
  );
});

Deno.test("forward.ts wss:// LISTEN --client-ca: a client certificate the CA signed is upgraded and named; none, or a stranger's, is refused", async () => {
  await using echo = echoBackend();
  await using certs = await makeCertificates();
  await using bridge = await startWebSocketBridge(
    [
      "--tls",
      "--cert",
      certs.cert,
      "--key",
      certs.key,
      "--client-ca",
      certs.ca,
      "wss://127.0.0.1:0/",
      echo.target,
    ],
    ["--allow-net=127.0.0.1", `--allow-read=${certs.dir}`],
  );
  const caCerts = [await Deno.readTextFile(certs.ca)];
  const connect = async (cert?: string, key?: string) =>
    await Deno.connectTls({
      hostname: "localhost",
      port: bridge.port,
      caCerts,
      ...(cert && key && {
        cert: await Deno.readTextFile(cert),
        key: await Deno.readTextFile(key),
      }),
    });
  {
    using alice = await connect(certs.clientCert, certs.clientKey);
    assertMatch(await askHead(alice, UPGRADE), /^HTTP\/1\.1 101 /);
  }
  await bridge.proc.waitForStderr(
    /^accepted 127\.0\.0\.1:\d+ \(certificate C=DE, O="Example, Inc\.", CN=alice\)$/,
  );
  await bridge.proc.waitForStderr(
    /^upgraded 127\.0\.0\.1:\d+ \(WebSocket \/, binary\)$/,
  );
  for (
    const [cert, key, line] of [
      [
        undefined,
        undefined,
        /TLS handshake failed: .*(certificate|no client)/i,
      ],
      [
        certs.strangerCert,
        certs.strangerKey,
        /^refused 127\.0\.0\.1:\d+: client certificate CN=mallory refused: not signed by a client CA/,
      ],
    ] as const
  ) {
    const conn = await connect(cert, key);
    try {
      const head = await askHead(conn, UPGRADE).catch((error) =>
        `error: ${error.message}`
      );
      assert(!head.startsWith("HTTP/1.1 101"), head);
    } finally {
      try {
        conn.close();
      } catch {
        // Closed by the refusal.
      }
    }
    await bridge.proc.waitForStderr(line);
  }
  assertEquals(
    bridge.proc.stderrLines.filter((l) => l.startsWith("upgraded")).length,
    1,
  );
});

Deno.test({
  name:
    "forward.ts ws:// LISTEN --stats counts a bridged client: accepted, its bytes, and a refusal",
  ignore: missing("socat"),
  async fn() {
    await using echo = echoBackend();
    await using bridge = await startWebSocketBridge([
      "--stats",
      "127.0.0.1:0",
      "--deny",
      "127.0.0.9",
      "ws://127.0.0.1:0/",
      echo.target,
    ]);
    const [, statsPort] = await bridge.proc.waitForStderr(
      /^stats on http:\/\/127\.0\.0\.1:(\d+)\/$/,
    );
    assertEquals(
      await echoThrough(`ws://127.0.0.1:${bridge.port}/`, "counted"),
      "counted",
    );
    await bridge.proc.waitForStderr(/^closed 127\.0\.0\.1:\d+ \(7 bytes in/);
    // A client from 127.0.0.9, which --deny names: socat binds it; it gets
    // the 403 and its refusal is counted.
    const refused = await runCommand("socat", [
      "-t",
      "5",
      "-",
      `TCP:127.0.0.1:${bridge.port},bind=127.0.0.9`,
    ], UPGRADE);
    assertMatch(decode(refused.stdout), /^HTTP\/1\.1 403 /);
    await bridge.proc.waitForStderr(/^refused 127\.0\.0\.9:\d+: not allowed$/);
    const text = await (await fetch(`http://127.0.0.1:${statsPort}/metrics`))
      .text();
    const value = (series: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${series} `));
      return line === undefined ? undefined : Number(line.split(" ").at(-1));
    };
    const service = 'service="forward",transport="tcp"';
    assertEquals(value(`sockets_connections_accepted_total{${service}}`), 1);
    assertEquals(value(`sockets_received_bytes_total{${service}}`), 7);
    assertEquals(value(`sockets_sent_bytes_total{${service}}`), 7);
    assertEquals(
      value(`sockets_connections_refused_total{${service},reason="access"}`),
      1,
    );
  },
});

Deno.test("forward.ts ws:// LISTEN --idle-timeout closes an upgraded client that sends nothing", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "--idle-timeout",
    "1",
    "--ping",
    "0",
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: bridge.port });
  assertMatch(await askHead(conn, UPGRADE), /^HTTP\/1\.1 101 /);
  // The server ends it: the read ends without a byte from us.
  await readAll(conn);
  await bridge.proc.waitForStderr(
    /^idle timeout: closing 127\.0\.0\.1:\d+ after 1 s$/,
  );
});

Deno.test({
  name:
    "forward.ts ws:// LISTEN --keepalive on: an upgraded client's socket has keepalive, as ss sees it",
  ignore: missing("ss"),
  async fn() {
    await using echo = echoBackend();
    await using bridge = await startWebSocketBridge([
      "--keepalive",
      "on",
      "ws://127.0.0.1:0/",
      echo.target,
    ]);
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: bridge.port,
    });
    assertMatch(await askHead(conn, UPGRADE), /^HTTP\/1\.1 101 /);
    const ss = await runCommand("ss", [
      "-tnoH",
      "state",
      "established",
      `( sport = :${bridge.port} )`,
    ]);
    assertMatch(decode(ss.stdout), /timer:\(keepalive,/);
  },
});

/** Deno's `JSR_URL`, when a `file:` mirror, which each worker reads too. */
const JSR_MIRROR = Deno.env.get("JSR_URL")?.startsWith("file:")
  ? `,${new URL(Deno.env.get("JSR_URL")!).pathname}`
  : "";

const NO_FILE_MIRROR = JSR_MIRROR === ""
  ? "JSR_URL is not a file: mirror (workers then load JSR over https)"
  : undefined;
if (NO_FILE_MIRROR) console.error(`SKIP: ws:// --workers: ${NO_FILE_MIRROR}`);

Deno.test({
  name:
    "forward.ts ws:// LISTEN --workers 2: the bridge on two threads, each upgraded line named by the thread that accepted its client",
  ignore: NO_FILE_MIRROR !== undefined,
}, async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge(
    ["--workers", "2", "ws://127.0.0.1:0/", echo.target],
    [
      "--allow-net=127.0.0.1",
      `--allow-read=servers/forward.ts,mod.ts,lib${JSR_MIRROR}`,
    ],
  );
  const url = `ws://127.0.0.1:${bridge.port}/`;
  for (let i = 0; i < 8; i++) {
    assertEquals(await echoThrough(url, `hi ${i}`), `hi ${i}`);
  }
  await bridge.proc.until(
    () =>
      bridge.proc.stderrLines.filter((l) => / closed 127\.0\.0\.1:/.test(l))
        .length === 8,
    "eight closing lines",
  );
  const upgraded = bridge.proc.stderrLines.filter((l) => / upgraded /.test(l));
  assertEquals(upgraded.length, 8);
  for (const line of upgraded) {
    const [, worker, peer] = /^worker (\d): upgraded (\S+) /.exec(line) ?? [];
    assert(worker !== undefined, `not named by its thread: ${line}`);
    assert(
      bridge.proc.stderrLines.includes(`worker ${worker}: accepted ${peer}`),
      `${line}: accepted by another thread`,
    );
  }
});
