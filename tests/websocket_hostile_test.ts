/**
 * Hostile WebSocket clients against servers/forward.ts's ws:// LISTEN,
 * run as a subprocess with the permissions a user gives: a raw TCP client
 * that sends what no browser would (a base64 message in a million 1-byte
 * fragments, a flood of pings it never reads the pongs of, control
 * characters in its path, a body on its upgrade, a method the fetch API
 * forbids), with the server's memory read from /proc where memory is the
 * point. Each has a control that passes on the good path.
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { concat } from "@std/bytes";
import {
  descriptorCount,
  eventually,
  settledDescriptorCount,
  startServer,
  startWebSocketBridge,
} from "./_helpers.ts";
import { echoBackend } from "./_echo_backend.ts";
import { clientFrame, RawClient } from "./_raw_websocket.ts";
import { MAX_STATIC_FILE_BYTES } from "../lib/static_files.ts";

const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** An upgrade request's head, with `extra` header lines (each ending in CRLF). */
function upgradeRequest(requestLine = "GET / HTTP/1.1", extra = ""): string {
  return `${requestLine}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
    `${extra}\r\n`;
}

/** A process's resident memory now and at its peak, in KiB (Linux). */
function memoryKib(pid: number): { now: number; peak: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) =>
    Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)![1]);
  return { now: field("VmRSS"), peak: field("VmHWM") };
}

/** Asserts that process `pid`'s peak memory is less than `limitKib` over `beforeKib`. */
function assertPeakGrowthBelow(
  pid: number,
  beforeKib: number,
  limitKib: number,
): void {
  const grown = memoryKib(pid).peak - beforeKib;
  assert(grown < limitKib, `the server grew by ${grown} KiB`);
}

/**
 * Reads `client`'s frames, giving the payloads of those of `opcode` to
 * `enough` until it says so; fails if the server ends first (`what`
 * names what was counted).
 */
async function readFrames(
  client: RawClient,
  opcode: number,
  what: string,
  enough: (payload: Uint8Array) => boolean,
): Promise<void> {
  let count = 0;
  for (;;) {
    const frame = await client.frame();
    assert(frame !== null, `ended after ${count} ${what}`);
    if (frame.opcode !== opcode) continue;
    count++;
    if (enough(frame.payload)) return;
  }
}

/** Bytes the kernel holds unread on the TCP socket from `localPort` to `remotePort`. */
function unreadBytes(localPort: number, remotePort: number): number {
  const hex = (port: number) =>
    port.toString(16).toUpperCase().padStart(4, "0");
  for (const line of Deno.readTextFileSync("/proc/net/tcp").split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (
      fields[1]?.endsWith(`:${hex(localPort)}`) &&
      fields[2]?.endsWith(`:${hex(remotePort)}`)
    ) {
      return parseInt(fields[4].split(":")[1], 16);
    }
  }
  return 0;
}

/** Sends `request` on a new connection; the whole answer, as text. */
async function ask(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encode(request));
  return decode(await new Response(conn.readable).bytes());
}

/**
 * Opens a raw client on the bridge at `port` with `request` (an upgrade
 * by default), upgraded: its answer must be a 101 that matches `answer`.
 */
async function openRaw(
  port: number,
  request: string | Uint8Array = upgradeRequest(),
  answer = /^HTTP\/1\.1 101 /,
): Promise<RawClient> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const client = new RawClient(conn);
  try {
    await client.send(typeof request === "string" ? encode(request) : request);
    const head = await client.head();
    assertMatch(head, /^HTTP\/1\.1 101 /);
    assertMatch(head, answer);
    return client;
  } catch (error) {
    client.close();
    throw error;
  }
}

/** Starts forward.ts with `--web root` and its LISTEN in front of `target`. */
function startWebBridge(
  root: string,
  target: string,
  listen = "ws://127.0.0.1:0/",
) {
  return startServer("servers/forward.ts", {
    permissions: ["--allow-net=127.0.0.1", `--allow-read=${root}`],
    args: ["--web", root, listen, target],
  });
}

/** Starts forward.ts with a ws:// LISTEN in front of `target`, after `flags`. */
function startBridge(target: string, flags: string[] = []) {
  return startWebSocketBridge([...flags, "ws://127.0.0.1:0/", target]);
}

Deno.test("forward.ts ws:// LISTEN: a base64 message in a million 1-byte fragments holds about its size, not a copy a fragment", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  const client = await openRaw(
    bridge.port,
    upgradeRequest("GET / HTTP/1.1", "Sec-WebSocket-Protocol: base64\r\n"),
  );
  try {
    const pid = bridge.proc.child.pid;
    const before = memoryKib(pid).now;
    // "QUJD" (base64 of "ABC") a byte a fragment: 1,000,000 bytes of
    // text, 750,000 decoded, under the default --max-message (1 MiB).
    const text = "QUJD".repeat(250_000);
    await client.send(clientFrame(0x1, encode(text[0]), { fin: false }));
    const batch = (from: number) =>
      concat(
        Array.from(
          { length: 10_000 },
          (_, i) =>
            clientFrame(0x0, encode(text[from + i]), {
              fin: from + i === text.length - 1,
            }),
        ),
      );
    for (let at = 1; at < text.length; at += 10_000) {
      await client.send(
        batch(at).subarray(
          0,
          Math.min(10_000, text.length - at) * 7,
        ),
      );
    }
    // The echo, in base64 text frames (each its own base64).
    let echoed = 0;
    await readFrames(client, 0x1, "bytes echoed", (payload) => {
      echoed += Uint8Array.fromBase64(decode(payload)).length;
      return echoed >= 750_000;
    });
    // A copy a fragment (as before): 500 MB at the peak; one buffer: a
    // few MB.
    assertPeakGrowthBelow(pid, before, 48 * 1024);
  } finally {
    client.close();
  }
});

Deno.test("forward.ts ws:// LISTEN: a client that floods pings and reads no pong is not read either; each ping earns its pong", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target, ["--ping", "0"]);
  const client = await openRaw(bridge.port);
  try {
    const pid = bridge.proc.child.pid;
    const before = memoryKib(pid).now;
    const pings = 300_000;
    const batch = concat(
      Array.from({ length: 1000 }, () => clientFrame(0x9, new Uint8Array(125))),
    );
    let written = false;
    const writing = (async () => {
      for (let sent = 0; sent < pings; sent += 1000) await client.send(batch);
      written = true;
    })();
    // Awaited below; a failure then is the test's, not an uncaught one.
    writing.catch(() => {});
    // No pong is read until all pings are out, or the server has stopped
    // reading them (64 KiB unread on its side): else the test would hang
    // where the kernel's buffers are smaller than the flood.
    await eventually(
      () =>
        written ||
        unreadBytes(bridge.port, client.conn.localAddr.port) > 64 * 1024,
      "the flood written, or the server no longer reading it",
      60_000,
    );
    let pongs = 0;
    await readFrames(client, 0xa, "pongs", () => ++pongs === pings);
    await writing;
    // Pongs queued for it, as before: 300 MB at the peak.
    assertPeakGrowthBelow(pid, before, 24 * 1024);
  } finally {
    client.close();
  }
});

Deno.test("forward.ts ws:// LISTEN: control characters in an upgraded client's path reach its log line escaped", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  // ESC, DEL and NEL (0x85, a C1 line break), one byte each on the wire.
  const client = await openRaw(
    bridge.port,
    Uint8Array.from(
      upgradeRequest("GET /\x1b[31mred\x7f\x85 HTTP/1.1"),
      (c) => c.charCodeAt(0),
    ),
  );
  try {
    const { input } = await bridge.proc.waitForStderr(/^upgraded /);
    assertEquals(
      input!.replace(/:\d+/, ":PORT"),
      "upgraded 127.0.0.1:PORT (WebSocket /\\x1b[31mred\\x7f\\x85, binary)",
    );
  } finally {
    client.close();
  }
});

Deno.test("forward.ts ws:// LISTEN --web: a method fetch forbids (TRACE, TRACK) is a 405, not a connection closed unanswered", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${root}/index.html`, "<p>hi</p>");
    await using echo = echoBackend();
    await using bridge = await startWebBridge(root, echo.target);
    for (const method of ["TRACE", "TRACK", "POST"]) {
      const answer = await ask(bridge.port, `${method} / HTTP/1.1\r\n\r\n`);
      assertMatch(answer, /^HTTP\/1\.1 405 Method Not Allowed\r\n/, method);
      await bridge.proc.waitForStderr(
        new RegExp(`^closed 127\\.0\\.0\\.1:\\d+ .* HTTP ${method} / 405$`),
      );
    }
    // The control: GET still gets the page.
    assertMatch(await ask(bridge.port, "GET / HTTP/1.1\r\n\r\n"), /<p>hi<\/p>/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("forward.ts ws:// LISTEN: an upgrade request with a body (Content-Length, Transfer-Encoding) is a 400, its body never taken for frames", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  const body = "5\r\nhello\r\n0\r\n\r\n";
  for (
    const [header, line] of [
      ["Content-Length: 5\r\n", "hello"],
      ["Transfer-Encoding: chunked\r\n", body],
    ]
  ) {
    const answer = await ask(
      bridge.port,
      upgradeRequest("GET / HTTP/1.1", header) + line,
    );
    assertMatch(answer, /^HTTP\/1\.1 400 Bad Request\r\n/, header);
  }
  await bridge.proc.waitForStderr(
    /: an upgrade request with a body \(Content-Length: 5\) \(400\)$/,
  );
  await bridge.proc.waitForStderr(
    /: an upgrade request with a body \(Transfer-Encoding: chunked\) \(400\)$/,
  );
  // The control: Content-Length: 0 is no body, and upgrades.
  const client = await openRaw(
    bridge.port,
    upgradeRequest("GET / HTTP/1.1", "Content-Length: 0\r\n"),
  );
  client.close();
});

for (
  const [what, payload, code, line] of [
    [
      "a close payload of one byte",
      new Uint8Array([3]),
      1002,
      /a close frame of one byte \(1002\)/,
    ],
    ...[0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000].map((c) =>
      [
        `close code ${c}`,
        new Uint8Array([c >> 8, c & 0xff]),
        1002,
        new RegExp(`a close code of ${c} \\(1002\\)`),
      ] as const
    ),
    [
      "a close reason not UTF-8",
      new Uint8Array([3, 232, 0xc3, 0x28]),
      1007,
      /a close reason not UTF-8 \(1007\)/,
    ],
  ] as const
) {
  Deno.test(`forward.ts ws:// LISTEN: ${what} is answered with ${code}`, async () => {
    await using echo = echoBackend();
    await using bridge = await startBridge(echo.target);
    const client = await openRaw(bridge.port);
    try {
      await client.send(clientFrame(0x8, payload));
      assertEquals(await client.closeCode(), code);
      assert(await client.ended());
    } finally {
      client.close();
    }
    const { input } = await bridge.proc.waitForStderr(/^closed 127\.0\.0\.1:/);
    assertMatch(input!, line);
  });
}

Deno.test("forward.ts ws:// LISTEN: the codes a client may send (1000-1003, 1007-1014, 3000-4999) close cleanly, echoed back", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  for (const code of [1000, 1003, 1007, 1014, 3000, 4999]) {
    const client = await openRaw(bridge.port);
    try {
      await client.send(
        clientFrame(0x8, new Uint8Array([code >> 8, code & 0xff])),
      );
      assertEquals(await client.closeCode(), code);
      assert(await client.ended());
    } finally {
      client.close();
    }
    await bridge.proc.waitForStderr(
      new RegExp(`client closed first \\(${code}\\)$`),
    );
  }
});

Deno.test("forward.ts ws:// LISTEN: after the client's close frame, its data frames and a second close are not taken", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  const client = await openRaw(bridge.port);
  try {
    await client.send(concat([
      clientFrame(0x2, encode("before")),
      clientFrame(0x8, new Uint8Array([3, 232])),
      clientFrame(0x2, encode("after")),
      clientFrame(0x8, new Uint8Array([3, 233])),
    ]));
    assertEquals(await client.closeCode(), 1000);
    assert(await client.ended());
  } finally {
    client.close();
  }
  await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(6 bytes in, \d+ bytes out\).*client closed first \(1000\)$/,
  );
});

Deno.test("forward.ts ws:// LISTEN: a client that never answers the server's close frame is cut after the wait, keeping its TCP open", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using bridge = await startBridge(
    `tcp://127.0.0.1:${listener.addr.port}`,
  );
  const client = await openRaw(bridge.port);
  try {
    // The target closes at once: the server's close frame goes out.
    const target = await listener.accept();
    target.close();
    assertEquals(await client.closeCode(), 1000);
    // No answer: the server ends the connection on its own.
    assert(await client.ended());
  } finally {
    client.close();
    listener.close();
  }
  await bridge.proc.waitForStderr(/target closed first$/);
});

for (const pongs of [false, true]) {
  Deno.test(
    `forward.ts ws:// LISTEN: a client that never reads while its target streams holds bounded memory, and is cut by the ping timeout${
      pongs ? ", though it sends pongs unasked" : ""
    }`,
    async () => {
      // A target that writes as fast as it can, forever.
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const streaming = (async () => {
        const conn = await listener.accept();
        const chunk = new Uint8Array(65536);
        try {
          for (;;) await conn.write(chunk);
        } catch {
          // The bridge closed it.
        } finally {
          conn.close();
        }
      })();
      await using bridge = await startBridge(
        `tcp://127.0.0.1:${listener.addr.port}`,
        ["--ping", "2"],
      );
      const pid = bridge.proc.child.pid;
      const before = memoryKib(pid).now;
      const client = await openRaw(bridge.port);
      // Pongs with no ping read (it never reads): empty, as a blind
      // heartbeat is, until the server has cut it.
      let cut = false;
      const beating = pongs &&
        (async () => {
          while (!cut) {
            await client.send(clientFrame(0xa, new Uint8Array(0)));
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
        })().catch(() => {});
      try {
        await bridge.proc.waitForStderr(
          /client did not answer a ping within 2 s \(1001\)$/,
        );
        assertPeakGrowthBelow(pid, before, 24 * 1024);
      } finally {
        cut = true;
        await beating;
        client.close();
        listener.close();
        await streaming;
      }
    },
  );
}

Deno.test("forward.ts ws:// LISTEN: slowloris clients, a head's byte a second, hold only their --max-connections slots and are cut at the head's 10 s deadline, a line each", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target, [
    "--max-connections",
    "3",
  ]);
  const request = encode(upgradeRequest());
  const slow = await Promise.all(
    [0, 1, 2].map(() =>
      Deno.connect({ hostname: "127.0.0.1", port: bridge.port })
    ),
  );
  const trickling = slow.map(async (conn) => {
    try {
      for (const byte of request) {
        await conn.write(new Uint8Array([byte]));
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    } catch {
      // Cut by the server, or closed by the test.
    }
  });
  try {
    await eventually(
      () =>
        bridge.proc.stderrLines.filter((l) => l.startsWith("accepted"))
          .length ===
          3,
      "three slow clients accepted",
    );
    // The server is full: a fourth client is refused, not queued.
    assertMatch(
      await ask(bridge.port, upgradeRequest()),
      /^HTTP\/1\.1 503 Service Unavailable\r\n/,
    );
    await eventually(
      () =>
        bridge.proc.stderrLines.filter((l) =>
          /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\): bad request: no whole request head within 10 s \(408\)$/
            .test(l)
        ).length === 3,
      () => `three 408 lines; stderr:\n${bridge.proc.stderr}`,
      30_000,
    );
    // Their slots are free again: a client is upgraded.
    const client = await openRaw(bridge.port);
    client.close();
  } finally {
    for (const conn of slow) conn.close();
    await Promise.all(trickling);
  }
});

Deno.test("forward.ts ws:// LISTEN: an HTTP/1.0 upgrade is a 400; an absolute-form target is taken by its path, for an upgrade and a file", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${root}/index.html`, "<p>hi</p>");
    await using echo = echoBackend();
    await using bridge = await startWebBridge(
      root,
      echo.target,
      "ws://127.0.0.1:0/only",
    );
    assertMatch(
      await ask(bridge.port, upgradeRequest("GET /only HTTP/1.0")),
      /^HTTP\/1\.1 400 Bad Request\r\n/,
    );
    await bridge.proc.waitForStderr(/: an upgrade over HTTP\/1\.0 \(400\)$/);
    const client = await openRaw(
      bridge.port,
      upgradeRequest("GET http://x/only?q HTTP/1.1"),
    );
    try {
      await bridge.proc.waitForStderr(/^upgraded .*\(WebSocket \/only, /);
    } finally {
      client.close();
    }
    assertMatch(
      await ask(bridge.port, "GET http://x/index.html HTTP/1.1\r\n\r\n"),
      /^HTTP\/1\.1 200 OK\r\n[^]*<p>hi<\/p>/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("forward.ts ws:// LISTEN: control characters in a refused Origin and in a close reason reach the log escaped", async () => {
  await using echo = echoBackend();
  await using bridge = await startWebSocketBridge([
    "--origin",
    "https://a.example",
    "ws://127.0.0.1:0/",
    echo.target,
  ]);
  assertMatch(
    await ask(
      bridge.port,
      upgradeRequest("GET / HTTP/1.1", "Origin: https://\x1b[2Jevil\r\n"),
    ),
    /^HTTP\/1\.1 403 /,
  );
  await bridge.proc.waitForStderr(
    /: Origin 'https:\/\/\\x1b\[2Jevil' not allowed \(403\)$/,
  );
  const client = await openRaw(
    bridge.port,
    upgradeRequest("GET / HTTP/1.1", "Origin: https://a.example\r\n"),
  );
  try {
    await client.send(
      clientFrame(
        0x8,
        concat([new Uint8Array([3, 232]), encode("bye\n\x1b[31mforged")]),
      ),
    );
    assertEquals(await client.closeCode(), 1000);
  } finally {
    client.close();
  }
  await bridge.proc.waitForStderr(
    /client closed first \(1000 bye\\n\\x1b\[31mforged\)$/,
  );
});

Deno.test("forward.ts ws:// LISTEN --web: a symbolic link out of the folder, a path of 10 KB, a folder without index.html are refused; a link inside is served, Range ignored", async () => {
  const root = await Deno.makeTempDir();
  const outside = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${outside}/secret.txt`, "secret");
    await Deno.writeTextFile(`${root}/page.txt`, "page");
    await Deno.mkdir(`${root}/empty`);
    await Deno.symlink(`${outside}/secret.txt`, `${root}/out.txt`);
    await Deno.symlink(`${root}/page.txt`, `${root}/in.txt`);
    await using echo = echoBackend();
    await using bridge = await startWebBridge(root, echo.target);
    const get = (path: string, extra = "") =>
      ask(bridge.port, `GET ${path} HTTP/1.1\r\n${extra}\r\n`);
    for (
      const path of [
        "/out.txt",
        "/empty/",
        "/empty",
        "/%2e%2e/",
        "/a%2f..%2f..%2fetc",
      ]
    ) {
      const answer = await get(path);
      assertMatch(answer, /^HTTP\/1\.1 404 Not Found\r\n/, path);
      assert(!answer.includes("secret"), path);
    }
    assertMatch(
      await get(`/${"a".repeat(10_000)}`),
      /^HTTP\/1\.1 431 /,
    );
    const linked = await get("/in.txt", "Range: bytes=1-2\r\n");
    assertMatch(
      linked,
      /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 4\r\n[^]*\r\n\r\npage$/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("forward.ts ws:// LISTEN: clients that break the protocol and then sit silent, TCP open, give back every descriptor once cut", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  const pid = bridge.proc.child.pid;
  const baseline = descriptorCount(pid);
  const clients = await Promise.all(
    Array.from({ length: 20 }, () => openRaw(bridge.port)),
  );
  try {
    // Each: a frame with a reserved bit, then nothing, never its close.
    await Promise.all(
      clients.map((c) => c.send(clientFrame(0x2, encode("x"), { rsv: 0x40 }))),
    );
    for (const client of clients) {
      assertEquals(await client.closeCode(), 1002);
      assert(await client.ended());
    }
    assertEquals(await settledDescriptorCount(pid, baseline), baseline);
  } finally {
    for (const client of clients) client.close();
  }
});

Deno.test("forward.ts ws:// LISTEN: a base64 client's message that is not base64 is closed with 1007; a text message cut inside a character across fragments is taken", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  // "é" (0xc3 0xa9) split between two fragments: valid UTF-8 as a whole.
  const text = await openRaw(bridge.port);
  try {
    await text.send(concat([
      clientFrame(0x1, new Uint8Array([0x61, 0xc3]), { fin: false }),
      clientFrame(0x0, new Uint8Array([0xa9])),
    ]));
    assertEquals(decode(await text.data(3)), "aé");
  } finally {
    text.close();
  }
  const client = await openRaw(
    bridge.port,
    upgradeRequest("GET / HTTP/1.1", "Sec-WebSocket-Protocol: base64\r\n"),
    /\r\nsec-websocket-protocol: base64\r\n/,
  );
  try {
    await client.send(clientFrame(0x1, encode("not base64!")));
    assertEquals(await client.closeCode(), 1007);
  } finally {
    client.close();
  }
  await bridge.proc.waitForStderr(/a message not base64 \(1007\)$/);
});

Deno.test("forward.ts ws:// LISTEN --web: a 16 MiB file to a client that does not read is streamed, not held; a larger one is not served", async () => {
  const root = await Deno.makeTempDir();
  try {
    // Sparse: no time spent writing them.
    await Deno.writeFile(`${root}/big.bin`, new Uint8Array(0));
    await Deno.truncate(`${root}/big.bin`, MAX_STATIC_FILE_BYTES);
    await Deno.writeFile(`${root}/huge.bin`, new Uint8Array(0));
    await Deno.truncate(`${root}/huge.bin`, MAX_STATIC_FILE_BYTES + 1);
    await using echo = echoBackend();
    await using bridge = await startWebBridge(root, echo.target);
    assertMatch(
      await ask(bridge.port, "GET /huge.bin HTTP/1.1\r\n\r\n"),
      /^HTTP\/1\.1 403 [^]*\r\n\r\nlarger than 16 MiB\n$/,
    );
    const pid = bridge.proc.child.pid;
    const before = memoryKib(pid).now;
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: bridge.port,
    });
    try {
      await conn.write(encode("GET /big.bin HTTP/1.1\r\n\r\n"));
      // The kernel's buffers fill on our side; the server waits on them.
      await eventually(
        () => unreadBytes(conn.localAddr.port, bridge.port) > 64 * 1024,
        "the file's first 64 KiB unread on the client's side",
      );
      assertPeakGrowthBelow(pid, before, 8 * 1024);
      // Then read whole: every byte the length said.
      const all = await new Response(conn.readable).bytes();
      const text = decode(all.subarray(0, 200));
      assertMatch(
        text,
        /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 16777216\r\n/,
      );
      assertEquals(
        all.length - (text.indexOf("\r\n\r\n") + 4),
        MAX_STATIC_FILE_BYTES,
      );
    } catch (error) {
      try {
        conn.close();
      } catch {
        // Closed by its readable.
      }
      throw error;
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("forward.ts ws:// LISTEN without --web: a HEAD gets the 426's head and no body (a GET gets both)", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(echo.target);
  const head = await ask(bridge.port, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
  assertMatch(head, /^HTTP\/1\.1 426 [^]*content-length: \d+\r\n/);
  assertEquals(head.slice(head.indexOf("\r\n\r\n") + 4), "");
  const get = await ask(bridge.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  assertMatch(get, /\r\n\r\nthis is a WebSocket endpoint\n$/);
});
