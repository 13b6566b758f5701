/**
 * WebSocket endpoints: servers/forward.ts with a ws:// or wss:// LISTEN
 * (the bridge, websockify's job) and TARGET (websocat's job), and
 * clients/connect.ts with a ws:// URL, run as subprocesses with the
 * permissions a user gives, against echo backends in this process and
 * Deno's own WebSocket client and server.
 */

import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertStringIncludes,
} from "@std/assert";
import { concat } from "@std/bytes";
import {
  assertSameBytes,
  assertUsageError,
  makeCertificates,
  pseudoRandomBytes,
  readAll,
  startServer,
  startWebSocketBridge,
} from "./_helpers.ts";
import { runClient, text } from "./_connect.ts";
import { echoBackend } from "./_echo_backend.ts";

const FORWARD = "servers/forward.ts";
const encode = (s: string) => new TextEncoder().encode(s);

/** Opens a WebSocket and waits until it is open. */
async function openSocket(
  url: string,
  options: { protocols?: string[]; client?: Deno.HttpClient } = {},
): Promise<WebSocket> {
  const socket = new WebSocket(url, options);
  socket.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = (event) =>
      reject(new Error((event as ErrorEvent).message));
  });
  socket.onerror = null;
  return socket;
}

/** Collects `socket`'s messages; `until` waits for a count or a total length. */
function collect(socket: WebSocket) {
  const messages: (ArrayBuffer | string)[] = [];
  let closed: CloseEvent | undefined;
  let wake = () => {};
  socket.addEventListener("message", (event) => {
    messages.push(event.data);
    wake();
  });
  socket.addEventListener("close", (event) => {
    closed = event;
    wake();
  });
  const bytes = () =>
    concat(
      messages.map((m) =>
        typeof m === "string" ? encode(m) : new Uint8Array(m)
      ),
    );
  return {
    messages,
    bytes,
    closed: () => closed,
    /** Waits until `done()` holds; fails if the socket closes first. */
    async until(done: () => boolean, what: string): Promise<void> {
      while (!done()) {
        if (closed) {
          throw new Error(`closed (${closed.code}) before ${what}`);
        }
        await new Promise<void>((resolve) => wake = resolve);
      }
    },
    /** Waits for the close event. */
    async closeEvent(): Promise<CloseEvent> {
      while (!closed) await new Promise<void>((resolve) => wake = resolve);
      return closed;
    },
  };
}

/** Sends a raw HTTP upgrade request; returns the status line and headers. */
async function rawUpgrade(
  port: number,
  headers: Record<string, string> = {},
  path = "/",
): Promise<{ head: string; after: Uint8Array; conn: Deno.TcpConn }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = [
    `GET ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  await conn.write(encode(lines.join("\r\n") + "\r\n\r\n"));
  // Bytes, not text: a busy test may read the first frames with the head
  // (a ping sent 0.5 s after the 101 came in the same read once).
  let got = new Uint8Array(0);
  const buffer = new Uint8Array(4096);
  let end = -1;
  while (end < 0) {
    const n = await conn.read(buffer);
    if (n === null) break;
    const more = new Uint8Array(got.length + n);
    more.set(got);
    more.set(buffer.subarray(0, n), got.length);
    got = more;
    end = new TextDecoder("latin1").decode(got).indexOf("\r\n\r\n");
  }
  const headLength = end < 0 ? got.length : end + 4;
  return {
    head: new TextDecoder().decode(got.subarray(0, headLength)),
    after: got.subarray(headLength),
    conn,
  };
}

/**
 * An echo target, a bridge to it with `flags` before its endpoints, and one
 * client of the bridge with what it receives; disposing ends all three.
 */
async function bridgedClient(flags: string[]) {
  const echo = echoBackend();
  try {
    const bridge = await startWebSocketBridge([
      ...flags,
      "ws://127.0.0.1:0/",
      echo.target,
    ]);
    const socket = await openSocket(`ws://127.0.0.1:${bridge.port}/`);
    return {
      echo,
      bridge,
      socket,
      received: collect(socket),
      async [Symbol.asyncDispose]() {
        await bridge[Symbol.asyncDispose]();
        await echo[Symbol.asyncDispose]();
      },
    };
  } catch (error) {
    await echo[Symbol.asyncDispose]();
    throw error;
  }
}

Deno.test("forward.ts ws:// LISTEN joins each WebSocket client to a target connection of its own, binary frames both ways", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "ws://127.0.0.1:0/echo",
    echo.target,
  ]);
  const url = `ws://127.0.0.1:${bridge.port}/echo`;
  const payloads = [
    pseudoRandomBytes(100_000, 1),
    pseudoRandomBytes(70_000, 2),
  ];
  await Promise.all(payloads.map(async (payload) => {
    const socket = await openSocket(url);
    const received = collect(socket);
    for (let at = 0; at < payload.length; at += 30_000) {
      socket.send(payload.subarray(at, at + 30_000));
    }
    await received.until(
      () => received.bytes().length >= payload.length,
      "the echo",
    );
    assert(received.messages.every((m) => m instanceof ArrayBuffer));
    assertSameBytes(received.bytes(), payload);
    socket.close(1000, "bye");
    await received.closeEvent();
  }));
  assertEquals(echo.accepted(), 2);
  const closing = await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(100000 bytes in, 100000 bytes out\) to 127\.0\.0\.1:\d+, [\d.]+ s, client closed first \(1000 bye\)$/,
  );
  assert(closing);
  await bridge.proc.waitForStderr(
    /^upgraded 127\.0\.0\.1:\d+ \(WebSocket \/echo, binary\)$/,
  );
});

Deno.test("forward.ts ws:// LISTEN: a client offering base64 gets base64 text frames; one offering binary too gets binary", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  const url = `ws://127.0.0.1:${bridge.port}/`;
  const old = await openSocket(url, { protocols: ["base64"] });
  assertEquals(old.protocol, "base64");
  const oldReceived = collect(old);
  const bytes = new Uint8Array([0, 1, 2, 255, 254, 10, 13]);
  old.send(bytes.toBase64());
  await oldReceived.until(() => oldReceived.messages.length > 0, "a reply");
  const reply = oldReceived.messages.join("");
  assertEquals(typeof oldReceived.messages[0], "string");
  assertEquals(Uint8Array.fromBase64(reply), bytes);
  old.close();
  await oldReceived.closeEvent();

  const both = await openSocket(url, { protocols: ["binary", "base64"] });
  assertEquals(both.protocol, "binary");
  const received = collect(both);
  both.send(bytes);
  await received.until(
    () => received.bytes().length >= bytes.length,
    "a reply",
  );
  assert(received.messages[0] instanceof ArrayBuffer);
  assertEquals(received.bytes(), bytes);
  both.close();
  await received.closeEvent();
});

Deno.test("forward.ts ws:// LISTEN --ws-frames text sends text frames; text frames from a client are taken as UTF-8", async () => {
  await using client = await bridgedClient(["--ws-frames", "text"]);
  const { socket, received } = client;
  socket.send("héllo\n");
  await received.until(
    () => received.messages.join("") === "héllo\n",
    "the echo",
  );
  assert(received.messages.every((m) => typeof m === "string"));
  socket.close();
  await received.closeEvent();
});

Deno.test("forward.ts ws:// LISTEN --ws-frames text: bytes from the target that are not UTF-8 close the client with 1011, never a U+FFFD in their place", async () => {
  await using client = await bridgedClient(["--ws-frames", "text"]);
  const { bridge, socket, received } = client;
  // A binary message's bytes go to the target as they are; the echo sends
  // them back, and text frames cannot carry them.
  socket.send(new Uint8Array([0x6f, 0x6b, 0xff, 0xfe]));
  const closed = await received.closeEvent();
  assertEquals(closed.code, 1011);
  assert(
    received.messages.every((m) =>
      typeof m !== "string" || !m.includes("\ufffd")
    ),
    `a replacement character was sent: ${JSON.stringify(received.messages)}`,
  );
  await bridge.proc.waitForStderr(/not UTF-8/);
});

Deno.test("forward.ts ws:// LISTEN --origin refuses another Origin with 403 before the upgrade; the target is never dialled", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "--origin",
    "https://good.example",
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  const refused = await rawUpgrade(bridge.port, {
    Origin: "https://evil.example",
  });
  refused.conn.close();
  assertMatch(refused.head, /^HTTP\/1\.1 403 /);
  const none = await rawUpgrade(bridge.port);
  none.conn.close();
  assertMatch(none.head, /^HTTP\/1\.1 403 /);
  await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\): Origin 'https:\/\/evil\.example' not allowed \(403\)$/,
  );
  assertEquals(echo.accepted(), 0);
  const allowed = await rawUpgrade(bridge.port, {
    Origin: "https://good.example",
  });
  allowed.conn.close();
  assertMatch(allowed.head, /^HTTP\/1\.1 101 /);
});

Deno.test("forward.ts ws:// LISTEN: --deny answers 403, --per-source and --max-connections 503, before the upgrade", async () => {
  await using echo = echoBackend();
  {
    await using bridge = await startWebSocketBridge([
      "--deny",
      "127.0.0.0/8",
      "ws://127.0.0.1:0/",
      echo.target,
    ]);
    const { head, conn } = await rawUpgrade(bridge.port);
    conn.close();
    assertMatch(head, /^HTTP\/1\.1 403 /);
    await bridge.proc.waitForStderr(/^refused 127\.0\.0\.1:\d+: not allowed$/);
  }
  for (const flag of ["--per-source", "--max-connections"]) {
    await using bridge = await startWebSocketBridge([
      flag,
      "1",
      "ws://127.0.0.1:0/",
      echo.target,
    ]);
    const url = `ws://127.0.0.1:${bridge.port}/`;
    const first = await openSocket(url);
    const firstEvents = collect(first);
    const { head, conn } = await rawUpgrade(bridge.port);
    conn.close();
    assertMatch(head, /^HTTP\/1\.1 503 /, flag);
    await bridge.proc.waitForStderr(
      /^refused 127\.0\.0\.1:\d+: too many connections/,
    );
    first.close();
    await firstEvents.closeEvent();
    // Its slot is given back: the next client gets in.
    await bridge.proc.waitForStderr(/^closed 127\.0\.0\.1:\d+ \(0 bytes in/);
    const again = await openSocket(url);
    const againEvents = collect(again);
    again.close();
    await againEvents.closeEvent();
  }
  assertEquals(echo.accepted(), 4);
});

Deno.test("forward.ts ws:// LISTEN --max-message closes a client whose message is larger with 1009", async () => {
  await using client = await bridgedClient(["--max-message", "1000"]);
  const { bridge, socket, received } = client;
  socket.send(new Uint8Array(1000));
  await received.until(() => received.bytes().length === 1000, "the echo");
  socket.send(new Uint8Array(1001));
  const closed = await received.closeEvent();
  assertEquals(closed.code, 1009);
  await bridge.proc.waitForStderr(
    /^closed .* a message of 1001 bytes, more than 1000 \(1009\)$/,
  );
});

Deno.test("forward.ts ws:// LISTEN --ping closes a client that never answers a ping", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "--ping",
    "1",
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  // A raw client: it upgrades, then reads and never answers.
  const { head, after, conn } = await rawUpgrade(bridge.port);
  assertMatch(head, /^HTTP\/1\.1 101 /);
  const rest = new Uint8Array([...after, ...await readAll(conn)]);
  conn.close();
  // A ping (0x89), then a close frame (0x88) with 1001.
  assertEquals(rest[0], 0x89);
  const close = rest.indexOf(0x88);
  assertNotEquals(close, -1);
  assertEquals((rest[close + 2] << 8) | rest[close + 3], 1001);
  await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\) to .*client did not answer a ping within 1 s \(1001\)$/,
  );
});

Deno.test("forward.ts ws:// LISTEN: a client whose connection drops without a close frame is logged as such (1006)", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  const { head, conn } = await rawUpgrade(bridge.port);
  assertMatch(head, /^HTTP\/1\.1 101 /);
  conn.close();
  await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\) to 127\.0\.0\.1:\d+, [\d.]+ s, client gone without a close frame \(1006\)$/,
  );
});

Deno.test("forward.ts ws:// LISTEN: a target that refuses is a 502 before the upgrade, and one log line", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await using bridge = await startWebSocketBridge([
    "ws://127.0.0.1:0/",
    `tcp://127.0.0.1:${port}`,
  ]);
  const { head, conn } = await rawUpgrade(bridge.port);
  conn.close();
  assertMatch(head, /^HTTP\/1\.1 502 /);
  await bridge.proc.waitForStderr(
    new RegExp(
      `^closed 127\\.0\\.0\\.1:\\d+ \\(0 bytes in, 0 bytes out\\): connection refused by 127\\.0\\.0\\.1:${port}$`,
    ),
  );
});

Deno.test("forward.ts ws:// LISTEN --web DIR serves its files beside the socket, and nothing outside it", async () => {
  await using echo = echoBackend();
  const root = await Deno.makeTempDir({ prefix: "sockets-web-" });
  const outside = await Deno.makeTempDir({ prefix: "sockets-secret-" });
  try {
    await Deno.writeTextFile(`${root}/index.html`, "<p>page</p>");
    await Deno.writeTextFile(`${root}/.hidden`, "hidden");
    await Deno.writeTextFile(`${outside}/secret.txt`, "secret");
    await Deno.symlink(`${outside}/secret.txt`, `${root}/link.txt`);
    await using bridge = await startWebSocketBridge(
      ["--web", root, "ws://127.0.0.1:0/socket", echo.target],
      ["--allow-net=127.0.0.1", `--allow-read=${root}`],
    );
    const base = `http://127.0.0.1:${bridge.port}`;
    const page = await fetch(`${base}/`);
    assertEquals([page.status, await page.text()], [200, "<p>page</p>"]);
    assertEquals(page.headers.get("content-type"), "text/html; charset=utf-8");
    const head = await fetch(`${base}/index.html`, { method: "HEAD" });
    assertEquals(
      [head.status, head.headers.get("content-length"), await head.text()],
      [200, "11", ""],
    );
    for (
      const path of [
        "/.hidden",
        "/link.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/nothing",
      ]
    ) {
      const response = await fetch(base + path);
      await response.body?.cancel();
      assertEquals(response.status, 404, path);
    }
    // A raw request line with `..`, which fetch would have normalised.
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: bridge.port,
    });
    await conn.write(
      encode(
        `GET /../../../../${outside}/secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      ),
    );
    const answer = text(await readAll(conn));
    conn.close();
    assertMatch(answer, /^HTTP\/1\.1 404 /);
    // The socket still works beside the files.
    const socket = await openSocket(`ws://127.0.0.1:${bridge.port}/socket`);
    const received = collect(socket);
    socket.send(encode("x"));
    await received.until(() => received.bytes().length === 1, "the echo");
    socket.close();
    await received.closeEvent();
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("forward.ts wss:// LISTEN --tls serves WebSocket clients over TLS", async () => {
  await using echo = echoBackend();
  await using certs = await makeCertificates();
  await using bridge = await startWebSocketBridge(
    [
      "--tls",
      "--cert",
      certs.cert,
      "--key",
      certs.key,
      "wss://127.0.0.1:0/",
      echo.target,
    ],
    ["--allow-net=127.0.0.1", `--allow-read=${certs.cert},${certs.key}`],
  );
  using client = Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(certs.ca)],
  });
  const socket = await openSocket(`wss://localhost:${bridge.port}/`, {
    client,
  });
  const received = collect(socket);
  socket.send(encode("secret"));
  await received.until(() => received.bytes().length === 6, "the echo");
  assertEquals(text(received.bytes()), "secret");
  socket.close();
  await received.closeEvent();
});

Deno.test("forward.ts ws:// LISTEN with several targets spreads the WebSocket clients over them", async () => {
  await using first = echoBackend();
  await using second = echoBackend();
  await using bridge = await startWebSocketBridge([
    "ws://127.0.0.1:0/",
    first.target,
    second.target,
  ]);
  for (let i = 0; i < 4; i++) {
    const socket = await openSocket(`ws://127.0.0.1:${bridge.port}/`);
    const received = collect(socket);
    socket.send(encode("x"));
    await received.until(() => received.bytes().length === 1, "the echo");
    socket.close();
    await received.closeEvent();
  }
  assertEquals([first.accepted(), second.accepted()], [2, 2]);
});

/** A WebSocket echo server in this process (over TLS with `tls`). */
function webSocketEcho(tls?: { cert: string; key: string }) {
  const closes: string[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    ...tls,
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => socket.send(event.data);
    socket.onclose = (event) => closes.push(`${event.code} ${event.reason}`);
    return response;
  });
  return { server, port: server.addr.port, closes };
}

Deno.test("forward.ts tcp:// LISTEN wss:// TARGET carries each TCP client over a WebSocket, verified with --ca", async () => {
  await using certs = await makeCertificates();
  const tls = {
    cert: await Deno.readTextFile(certs.cert),
    key: await Deno.readTextFile(certs.key),
  };
  const echo = webSocketEcho(tls);
  await using _server = echo.server;
  const target = `wss://localhost:${echo.port}/path`;
  await using forwarder = await startServer(FORWARD, {
    permissions: [
      `--allow-net=127.0.0.1:0,localhost:${echo.port}`,
      `--allow-read=${certs.ca}`,
    ],
    args: ["--ca", certs.ca, "tcp://127.0.0.1:0", target],
  });
  const payload = pseudoRandomBytes(50_000, 3);
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: forwarder.port,
  });
  const reading = readAll(conn);
  await conn.write(payload);
  await conn.closeWrite();
  // The close frame goes once the echo has been quiet for a second.
  assertSameBytes(await reading, payload);
  conn.close();
  await forwarder.proc.waitForStderr(
    new RegExp(
      `^closed 127\\.0\\.0\\.1:\\d+ \\(50000 bytes in, 50000 bytes out\\) to wss://localhost:${echo.port}/path, [\\d.]+ s, client closed first$`,
    ),
  );
  assertEquals(echo.closes, ["1000 client closed"]);

  // Without the CA, the certificate is not trusted: that client is closed.
  await using unverified = await startServer(FORWARD, {
    permissions: [`--allow-net=127.0.0.1:0,localhost:${echo.port}`],
    args: ["tcp://127.0.0.1:0", target],
  });
  const refused = await Deno.connect({
    hostname: "127.0.0.1",
    port: unverified.port,
  });
  assertEquals((await readAll(refused)).length, 0);
  refused.close();
  await unverified.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\): cannot open wss:\/\/localhost:\d+\/path: .*(certificate|Unknown ?Issuer)/i,
  );
});

Deno.test("connect.ts ws:// URL: binary messages both ways, stdin's end a close frame once the server is quiet", async () => {
  const echo = webSocketEcho();
  await using _server = echo.server;
  const payload = pseudoRandomBytes(20_000, 4);
  const run = await runClient(
    [`--allow-net=127.0.0.1:${echo.port}`],
    [`ws://127.0.0.1:${echo.port}/`],
    [payload],
  );
  assertEquals(run.code, 0, run.stderr);
  assertSameBytes(run.stdout, payload);
  assertEquals(run.lines, [`connected to ws://127.0.0.1:${echo.port}/`]);
  assertEquals(echo.closes, ["1000 stdin closed"]);
});

Deno.test("connect.ts --text ws:// URL: a text message per line, each message printed as a line", async () => {
  const seen: string[] = [];
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => {
      seen.push(event.data);
      socket.send(`${String(event.data).toUpperCase()}`);
    };
    return response;
  });
  const port = server.addr.port;
  const run = await runClient(
    [`--allow-net=127.0.0.1:${port}`],
    ["--text", `ws://127.0.0.1:${port}/`],
    ["one\ntw", "o\nthree"],
  );
  assertEquals(run.code, 0, run.stderr);
  assertEquals(seen, ["one", "two", "three"]);
  assertEquals(text(run.stdout), "ONE\nTWO\nTHREE\n");
});

Deno.test("connect.ts --text ws:// URL: stdin bytes that are not UTF-8 are an error line and exit 1 (the socket closed with 4011), never U+FFFD sent", async () => {
  const seen: string[] = [];
  let code = 0;
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => seen.push(event.data);
    socket.onclose = (event) => code = event.code;
    return response;
  });
  const port = server.addr.port;
  const run = await runClient(
    [`--allow-net=127.0.0.1:${port}`],
    ["--text", `ws://127.0.0.1:${port}/`],
    [new Uint8Array([0x6f, 0x6b, 0x0a]), new Uint8Array([0xff, 0xfe, 0x0a])],
    { pauseMs: 200 },
  );
  assertEquals(run.code, 1, run.stderr);
  assertEquals(
    run.lines.at(-1),
    `error: ws://127.0.0.1:${port}/: stdin sent bytes that are not UTF-8, which text messages cannot carry (1011)`,
  );
  assertEquals(seen, ["ok"]);
  assertEquals(code, 4011);
});

Deno.test("connect.ts ws:// URL: a server that closes with an error code is an error line and exit 1", async () => {
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => socket.close(4000, "go away");
    return response;
  });
  const port = server.addr.port;
  const run = await runClient([`--allow-net=127.0.0.1:${port}`], [
    `ws://127.0.0.1:${port}/`,
  ]);
  assertEquals(run.code, 1);
  assertEquals(
    run.lines.at(-1),
    `error: ws://127.0.0.1:${port}/: server closed first (4000 go away)`,
  );
});

Deno.test("forward.ts and connect.ts: WebSocket flags in the wrong place are usage errors", async () => {
  const net = ["--allow-net=127.0.0.1"];
  await assertUsageError(FORWARD, net, [
    "--origin",
    "https://a",
    "tcp://127.0.0.1:0",
    "tcp://127.0.0.1:1",
  ], /--origin applies to a ws:\/\/ or wss:\/\/ LISTEN/);
  await assertUsageError(FORWARD, net, [
    "--tls",
    "ws://127.0.0.1:0/",
    "tcp://127.0.0.1:1",
  ], /--tls with a ws:\/\/ LISTEN: write wss:\/\//);
  await assertUsageError(FORWARD, net, [
    "--ws-frames",
    "utf7",
    "ws://127.0.0.1:0/",
    "tcp://127.0.0.1:1",
  ], /expected binary or text/);
  await assertUsageError(FORWARD, net, [
    "--to-tls",
    "tcp://127.0.0.1:0",
    "wss://127.0.0.1:1/",
  ], /--to-tls does not apply to a wss:\/\/ TARGET/);
  await assertUsageError(FORWARD, net, [
    "ws://127.0.0.1:0/",
    "ws://127.0.0.1:1/",
  ], /takes a tcp:\/\/ or unix: LISTEN/);
  await assertUsageError(FORWARD, net, [
    "ws://127.0.0.1:0/a b",
    "tcp://127.0.0.1:1",
  ], /invalid path/);
  await assertUsageError("clients/connect.ts", net, [
    "--text",
    "127.0.0.1",
    "7",
  ], /--text needs a ws:\/\/ or wss:\/\/ URL/);
  await assertUsageError("clients/connect.ts", net, [
    "--ca",
    "x.pem",
    "ws://127.0.0.1:1/",
  ], /--ca needs a wss:\/\/ URL/);
  // Deno's WebSocket client verifies the URL's host only.
  await assertUsageError(
    "clients/connect.ts",
    net,
    ["--servername", "a.example", "wss://127.0.0.1:1/"],
    /--servername cannot be used with a WebSocket URL/,
  );
  await assertUsageError(
    FORWARD,
    net,
    ["--servername", "a.example", "tcp://127.0.0.1:0", "wss://127.0.0.1:1/"],
    /--servername does not apply to a wss:\/\/ TARGET: write the name in it/,
  );
});

Deno.test("forward.ts ws:// LISTEN: a plain HTTP request without --web gets 426", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  const response = await fetch(`http://127.0.0.1:${bridge.port}/`);
  assertStringIncludes(await response.text(), "WebSocket endpoint");
  assertEquals(response.status, 426);
  assertEquals(echo.accepted(), 0);
  // And the process stops cleanly on SIGTERM.
  bridge.proc.kill("SIGTERM");
  const { code } = await bridge.proc.finished();
  assertEquals(code, 0);
});

Deno.test("forward.ts ws:// LISTEN: shutdown closes open WebSocket clients with 1001 after the grace period", async () => {
  await using client = await bridgedClient(["--grace", "0.2"]);
  const { bridge, received } = client;
  bridge.proc.kill("SIGTERM");
  const closed = await received.closeEvent();
  assertEquals(closed.code, 1001);
  assertEquals((await bridge.proc.finished()).code, 0);
});
