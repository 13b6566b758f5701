/**
 * servers/forward.ts over TCP and Unix sockets, run as a subprocess with
 * exactly its header's permissions (the listen address and the target),
 * against backends in this process that behave as each test needs.
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertLess,
  assertMatch,
} from "@std/assert";
import { concat } from "@std/bytes";
import { readExact, writeAll } from "../mod.ts";
import {
  encodeProxyHeader,
  type ProxyHeader,
  readProxyHeader,
} from "../lib/proxy_protocol.ts";
import {
  assertSameBytes,
  assertUsageError,
  closedWithin,
  descriptorCount,
  eventually,
  freePort,
  localPort,
  makeCertificates,
  missing,
  pseudoRandomBytes,
  readAll,
  runCommand,
  type ScriptProcess,
  settledDescriptorCount,
  spawn,
  startForward,
} from "./_helpers.ts";
import { pushThenReset } from "./_reset_client.ts";
import { serveForward } from "../servers/forward.ts";

const FORWARD = "servers/forward.ts";
/** FFI to libc, least privilege, as the forwarder's help gives it. */
const FFI = `--allow-ffi=/lib/${
  Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"
}-linux-gnu/libc.so.6`;
const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** A backend in this process: a listener and a handler per connection. */
interface Backend extends AsyncDisposable {
  port: number;
  /** `127.0.0.1:PORT`, as the forwarder's log names it. */
  address: string;
  /** How many connections it accepted. */
  accepted(): number;
  /** Each handler's outcome, in accept order. */
  handled: Promise<unknown>[];
}

function listenBackend(
  handler: (conn: Deno.TcpConn) => Promise<unknown>,
  port = 0,
): Backend {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const handled: Promise<unknown>[] = [];
  const open = new Set<Deno.TcpConn>();
  let count = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      count++;
      open.add(conn);
      handled.push(
        handler(conn).finally(() => {
          open.delete(conn);
          try {
            conn.close();
          } catch {
            // The handler closed it.
          }
        }),
      );
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    address: `127.0.0.1:${listener.addr.port}`,
    accepted: () => count,
    handled,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // Closed meanwhile.
        }
      }
      await Promise.allSettled(handled);
    },
  };
}

/** Echoes until the client half-closes, then half-closes too. */
async function echoHandler(conn: Deno.Conn): Promise<number> {
  const buffer = new Uint8Array(64 * 1024);
  let total = 0;
  for (let n; (n = await conn.read(buffer)) !== null;) {
    await writeAll(conn, buffer.subarray(0, n));
    total += n;
  }
  await conn.closeWrite();
  return total;
}

/** Waits for the closing line of the connection from local port `port`. */
async function closingLine(
  proc: ScriptProcess,
  port: number,
): Promise<string> {
  const match = await proc.waitForStderr(
    new RegExp(`^closed 127\\.0\\.0\\.1:${port} .*`),
  );
  return match[0];
}

/** A TCP connection to `port` on 127.0.0.1. */
function dial(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

Deno.test("forward.ts forwards 4 MiB each way byte-exact and logs one closing line: client, bytes, target, duration, why", async () => {
  await using backend = listenBackend(echoHandler);
  await using forward = await startForward(`tcp://${backend.address}`);
  using conn = await dial(forward.port);
  const data = pseudoRandomBytes(4 * 1024 * 1024, 11);
  const reading = readAll(conn);
  await writeAll(conn, data);
  await conn.closeWrite();
  assertSameBytes(await reading, data);
  const line = await closingLine(forward.proc, localPort(conn));
  assertMatch(
    line,
    new RegExp(
      `^closed 127\\.0\\.0\\.1:\\d+ \\(4194304 bytes in, 4194304 bytes out\\) to ${backend.address}, \\d+(\\.\\d+)? s, client closed first$`,
    ),
  );
  // One line when accepted, one when closed: no other.
  const about = forward.proc.stderrLines.filter((l) =>
    l.includes(`127.0.0.1:${localPort(conn)}`)
  );
  assertEquals(about.length, 2, about.join("\n"));
  forward.proc.kill("SIGTERM");
  assertEquals((await forward.proc.finished()).code, 0);
});

Deno.test("forward.ts: a client that half-closes still gets the target's whole answer", async () => {
  const answer = pseudoRandomBytes(1024 * 1024, 5);
  await using backend = listenBackend(async (conn) => {
    const request = await readAll(conn); // to the client's EOF
    await writeAll(conn, answer);
    return decode(request);
  });
  await using forward = await startForward(`tcp://${backend.address}`);
  using conn = await dial(forward.port);
  await writeAll(conn, encode("GET everything\n"));
  await conn.closeWrite();
  assertSameBytes(await readAll(conn), answer);
  assertEquals(await backend.handled[0], "GET everything\n");
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    /\(15 bytes in, 1048576 bytes out\) .*, client closed first$/,
  );
});

Deno.test("forward.ts: a target that half-closes first still gets all the client sends afterwards", async () => {
  await using backend = listenBackend(async (conn) => {
    await writeAll(conn, encode("banner\n"));
    await conn.closeWrite();
    return (await readAll(conn)).byteLength;
  });
  await using forward = await startForward(`tcp://${backend.address}`);
  using conn = await dial(forward.port);
  assertEquals(decode(await readAll(conn)), "banner\n"); // then EOF
  const upload = pseudoRandomBytes(2 * 1024 * 1024, 8);
  await writeAll(conn, upload);
  await conn.closeWrite();
  assertEquals(await backend.handled[0], upload.byteLength);
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    /\(2097152 bytes in, 7 bytes out\) .*, target closed first$/,
  );
});

/**
 * Writes `chunk` again and again until a write has not finished for 300 ms
 * (or `limit` bytes went); returns the bytes written and that write.
 */
async function writeUntilBlocked(
  conn: Deno.Conn,
  chunk: Uint8Array,
  limit: number,
): Promise<{ written: number; blocked?: Promise<void> }> {
  let written = 0;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && written < limit) {
    const write = writeAll(conn, chunk);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = await Promise.race([
      write.then(() => true),
      new Promise<false>((r) => timer = setTimeout(() => r(false), 300)),
    ]);
    clearTimeout(timer);
    if (!done) return { written, blocked: write };
    written += chunk.byteLength;
  }
  return { written };
}

Deno.test("forward.ts: a client that does not read stops the target being read (backpressure, no queue)", async () => {
  const chunk = pseudoRandomBytes(256 * 1024, 4);
  let result: { written: number; blocked?: Promise<void> } | undefined;
  await using backend = listenBackend(async (conn) => {
    result = await writeUntilBlocked(conn, chunk, 256 * 1024 * 1024);
    await result.blocked;
    await conn.closeWrite();
    return result.written + chunk.byteLength;
  });
  await using forward = await startForward(`tcp://${backend.address}`);
  using conn = await dial(forward.port);
  await eventually(() => result !== undefined, "the target's result");
  const { blocked, written } = result!;
  assert(blocked, `the target wrote ${written} bytes unhindered`);
  // What is in flight is the kernels' socket buffers and one 64 KiB
  // buffer of ours: far below what the target tried to write.
  assertLess(written, 48 * 1024 * 1024);
  const received = await readAll(conn);
  const total = await backend.handled[0] as number;
  assertEquals(received.byteLength, total);
  for (let at = 0; at < total; at += chunk.byteLength) {
    assertSameBytes(
      received.subarray(at, Math.min(total, at + chunk.byteLength)),
      chunk.subarray(0, Math.min(chunk.byteLength, total - at)),
      `chunk at ${at}`,
    );
  }
});

Deno.test("forward.ts: a target that does not read stops the client being read (backpressure)", async () => {
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  await using backend = listenBackend(async (conn) => {
    await released;
    return (await readAll(conn)).byteLength;
  });
  await using forward = await startForward(`tcp://${backend.address}`);
  using conn = await dial(forward.port);
  const chunk = pseudoRandomBytes(256 * 1024, 6);
  const { written, blocked } = await writeUntilBlocked(
    conn,
    chunk,
    256 * 1024 * 1024,
  );
  assert(blocked, `the client wrote ${written} bytes unhindered`);
  assertLess(written, 48 * 1024 * 1024);
  release();
  await blocked;
  await conn.closeWrite();
  assertEquals(await backend.handled[0], written + chunk.byteLength);
});

Deno.test("forward.ts: a target that refuses closes that client with one line, and the server carries on", async () => {
  const port = freePort();
  await using forward = await startForward(`tcp://127.0.0.1:${port}`);
  {
    using conn = await dial(forward.port);
    assert(await closedWithin(conn, 5000), "the client was not closed");
    assertMatch(
      await closingLine(forward.proc, localPort(conn)),
      new RegExp(
        `\\(0 bytes in, 0 bytes out\\): connection refused by 127\\.0\\.0\\.1:${port}$`,
      ),
    );
  }
  await using _backend = listenBackend(echoHandler, port);
  using conn = await dial(forward.port);
  const reading = readAll(conn);
  await writeAll(conn, encode("back again"));
  await conn.closeWrite();
  assertEquals(decode(await reading), "back again");
});

Deno.test("forward.ts: a target that does not answer is given up after --connect-timeout", async () => {
  // A listener that never accepts: once its backlog is full the kernel
  // drops new SYNs, as a host that has gone silent does.
  using silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const queued: Deno.Conn[] = [];
  try {
    while (true) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const connecting = dial(silent.addr.port);
      const conn = await Promise.race([
        connecting,
        new Promise<null>((r) => timer = setTimeout(() => r(null), 200)),
      ]);
      clearTimeout(timer);
      if (conn === null) {
        connecting.then((c) => queued.push(c), () => {});
        break;
      }
      queued.push(conn);
      assertLess(queued.length, 5000, "the backlog never filled");
    }
    await using forward = await startForward(
      `tcp://127.0.0.1:${silent.addr.port}`,
      { args: ["--connect-timeout", "0.5"] },
    );
    using conn = await dial(forward.port);
    const began = Date.now();
    assert(await closedWithin(conn, 5000), "the client was not closed");
    assertLess(Date.now() - began, 3000);
    assertMatch(
      await closingLine(forward.proc, localPort(conn)),
      new RegExp(
        `: timed out after 0\\.5 s connecting to 127\\.0\\.0\\.1:${silent.addr.port}$`,
      ),
    );
  } finally {
    silent.close();
    await new Promise((r) => setTimeout(r, 50));
    for (const conn of queued) conn.close();
  }
});

Deno.test("forward.ts --deny refuses a client before dialling the target", async () => {
  await using backend = listenBackend(echoHandler);
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--deny", "127.0.0.0/8"],
  });
  using conn = await dial(forward.port);
  assert(await closedWithin(conn, 5000));
  await forward.proc.waitForStderr(
    new RegExp(`refused 127\\.0\\.0\\.1:${localPort(conn)}: not allowed`),
  );
  assertEquals(backend.accepted(), 0);
});

Deno.test("forward.ts --idle-timeout closes an idle pair, the target's side too", async () => {
  let targetClosed!: () => void;
  const closed = new Promise<void>((resolve) => targetClosed = resolve);
  await using backend = listenBackend(async (conn) => {
    await readAll(conn).catch(() => {});
    targetClosed();
  });
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--idle-timeout", "0.3"],
  });
  using conn = await dial(forward.port);
  assert(await closedWithin(conn, 5000), "the idle client was not closed");
  await closed;
  await forward.proc.waitForStderr(/idle timeout: closing 127\.0\.0\.1:\d+/);
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    /, cut by the server$/,
  );
});

Deno.test("forward.ts --max-connections 1 closes a second client while the first is open", async () => {
  await using backend = listenBackend(echoHandler);
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--max-connections", "1"],
  });
  using first = await dial(forward.port);
  await writeAll(first, encode("one"));
  assertEquals(decode(await readExact(first, 3)), "one");
  using second = await dial(forward.port);
  assert(await closedWithin(second, 5000));
  await forward.proc.waitForStderr(/too many connections \(max 1\)/);
  await first.closeWrite();
  await readAll(first);
});

Deno.test("forward.ts to a unix: target whose path holds a line break: the closing line names it escaped, one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sockets-forward-" });
  const path = `${dir}/t\nclosed 1.2.3.4:5 (0 bytes in).sock`;
  try {
    using listener = Deno.listen({ transport: "unix", path });
    const serving = listener.accept().then(async (conn) => {
      await echoHandler(conn);
      conn.close();
    });
    await using forward = await startForward(`unix:${path}`, {
      permissions: [
        `--allow-net=127.0.0.1:0,unix:${path}`,
        `--allow-read=${path}`,
        `--allow-write=${path}`,
      ],
    });
    using conn = await dial(forward.port);
    await writeAll(conn, encode("hi"));
    await conn.closeWrite();
    assertEquals(decode(await readAll(conn)), "hi");
    await serving;
    assertMatch(
      await closingLine(forward.proc, localPort(conn)),
      /to \/.*\/t\\nclosed 1\.2\.3\.4:5 \(0 bytes in\)\.sock, .* client closed first$/,
    );
    assertEquals(
      forward.proc.stderrLines.filter((l) => l.startsWith("closed 1.2.3.4")),
      [],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("forward.ts tcp:// to unix: and unix: to tcp://, with the header's permissions", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sockets-forward-" });
  const backendPath = `${dir}/backend.sock`;
  const frontPath = `${dir}/front.sock`;
  const unixGrant = (path: string) => [
    `--allow-net=unix:${path}`,
    `--allow-read=${path}`,
    `--allow-write=${path}`,
  ];
  try {
    using listener = Deno.listen({ transport: "unix", path: backendPath });
    const serving = (async () => {
      for (let i = 0; i < 2; i++) {
        using conn = await listener.accept();
        await echoHandler(conn);
      }
    })();
    {
      await using forward = await startForward(`unix:${backendPath}`, {
        permissions: [
          `--allow-net=127.0.0.1:0,unix:${backendPath}`,
          `--allow-read=${backendPath}`,
          `--allow-write=${backendPath}`,
        ],
      });
      using conn = await dial(forward.port);
      const data = pseudoRandomBytes(512 * 1024, 2);
      const reading = readAll(conn);
      await writeAll(conn, data);
      await conn.closeWrite();
      assertSameBytes(await reading, data);
      assertMatch(
        await closingLine(forward.proc, localPort(conn)),
        new RegExp(`to ${backendPath}, .* client closed first$`),
      );
    }
    // And back: a Unix socket in front of a TCP target.
    await using backend = listenBackend(echoHandler);
    await using front = await startForward(`tcp://${backend.address}`, {
      listen: `unix:${frontPath}`,
      permissions: [
        `--allow-net=unix:${frontPath},${backend.address}`,
        ...unixGrant(frontPath).slice(1),
      ],
    });
    assertEquals(front.address, frontPath);
    assertEquals((await Deno.lstat(frontPath)).mode! & 0o777, 0o600);
    using conn = await Deno.connect({ transport: "unix", path: frontPath });
    const reading = readAll(conn);
    await writeAll(conn, encode("through a unix socket"));
    await conn.closeWrite();
    assertEquals(decode(await reading), "through a unix socket");
    listener.close();
    await serving.catch(() => {});
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "forward.ts --tls terminates TLS in front of a plain target; --to-tls speaks TLS to one, verified with --ca",
  ignore: missing("openssl"),
  async fn() {
    await using certs = await makeCertificates();
    const cert = await Deno.readTextFile(certs.cert);
    const key = await Deno.readTextFile(certs.key);
    const ca = await Deno.readTextFile(certs.ca);
    // --tls: TLS from the client, plain to the target.
    {
      await using backend = listenBackend(echoHandler);
      await using forward = await startForward(`tcp://${backend.address}`, {
        args: ["--tls", "--cert", certs.cert, "--key", certs.key],
        permissions: [
          `--allow-net=127.0.0.1:0,${backend.address}`,
          `--allow-read=${certs.cert},${certs.key}`,
        ],
      });
      using conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: forward.port,
        caCerts: [ca],
      });
      await writeAll(conn, encode("secret"));
      assertEquals(decode(await readExact(conn, 6)), "secret");
    }
    // --to-tls: plain from the client, TLS to the target.
    using tlsListener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert,
      key,
    });
    const serving = (async () => {
      for await (const conn of tlsListener) {
        echoHandler(conn).catch(() => {}).finally(() => conn.close());
      }
    })();
    const target = `tcp://127.0.0.1:${tlsListener.addr.port}`;
    const permissions = [
      `--allow-net=127.0.0.1:0,127.0.0.1:${tlsListener.addr.port}`,
      `--allow-read=${certs.ca},${certs.wrongCa}`,
    ];
    {
      await using forward = await startForward(target, {
        args: ["--to-tls", "--ca", certs.ca, "--servername", "localhost"],
        permissions,
      });
      using conn = await dial(forward.port);
      const reading = readAll(conn);
      await writeAll(conn, encode("over TLS"));
      await conn.closeWrite();
      assertEquals(decode(await reading), "over TLS");
    }
    {
      await using forward = await startForward(target, {
        args: ["--to-tls", "--ca", certs.wrongCa],
        permissions,
      });
      using conn = await dial(forward.port);
      assert(await closedWithin(conn, 5000));
      assertMatch(
        await closingLine(forward.proc, localPort(conn)),
        /: TLS handshake with 127\.0\.0\.1:\d+ failed: certificate not trusted/,
      );
    }
    tlsListener.close();
    await serving.catch(() => {});
  },
});

/** A backend that reads a PROXY header, then echoes; resolves with the header. */
function proxyBackend(): Backend {
  return listenBackend(async (conn) => {
    const header = await readProxyHeader(conn, { deadlineMs: 5000 });
    await echoHandler(conn);
    return header;
  });
}

for (const version of [1, 2] as const) {
  Deno.test(`forward.ts --send-proxy v${version} tells the target the client's address first`, async () => {
    await using backend = proxyBackend();
    await using forward = await startForward(`tcp://${backend.address}`, {
      args: ["--send-proxy", `v${version}`],
    });
    using conn = await dial(forward.port);
    const reading = readAll(conn);
    await writeAll(conn, encode("payload"));
    await conn.closeWrite();
    assertEquals(decode(await reading), "payload");
    const header = await backend.handled[0] as ProxyHeader;
    assertEquals(header.version, version);
    assertEquals(header.source, {
      transport: "tcp",
      hostname: "127.0.0.1",
      port: localPort(conn),
    });
    assertEquals(header.destination, {
      transport: "tcp",
      hostname: "127.0.0.1",
      port: forward.port,
    });
  });
}

Deno.test("forward.ts --accept-proxy --send-proxy v2 refuses a header for a UDP client instead of passing it on to its stream target", async () => {
  await using backend = proxyBackend();
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--accept-proxy", "--send-proxy", "v2"],
  });
  const header = (transport: "tcp" | "udp", hostname: string) =>
    encodeProxyHeader(2, {
      source: { transport, hostname, port: 4000 },
      destination: { transport, hostname: "198.51.100.7", port: 53 },
    });
  {
    using conn = await dial(forward.port);
    await writeAll(conn, concat([header("udp", "192.0.2.1"), encode("dgram")]));
    // (Were it passed on, the target echoes "dgram" and ends at this EOF.)
    await conn.closeWrite().catch(() => {});
    // Closed with "dgram" unread: a reset, or EOF.
    const got = await readAll(conn).catch(() => new Uint8Array(0));
    assertEquals(decode(got), "");
    assertMatch(
      await closingLine(forward.proc, localPort(conn)),
      /\(0 bytes in, 0 bytes out\): PROXY v2 header for a UDP client: a stream connection cannot have carried it$/,
    );
  }
  // The next client, with a TCP header, is the first the target sees.
  using conn = await dial(forward.port);
  await writeAll(conn, concat([header("tcp", "192.0.2.2"), encode("stream")]));
  await conn.closeWrite();
  assertEquals(decode(await readAll(conn)), "stream");
  assertEquals(backend.accepted(), 1);
  assertEquals((await backend.handled[0] as ProxyHeader).source, {
    transport: "tcp",
    hostname: "192.0.2.2",
    port: 4000,
  });
});

Deno.test("forward.ts --accept-proxy takes the client's address from the header: logs it, and passes on only what follows", async () => {
  await using backend = listenBackend(async (conn) =>
    decode(await readAll(conn))
  );
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--accept-proxy"],
  });
  using conn = await dial(forward.port);
  await writeAll(
    conn,
    concat([
      encode("PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n"),
      encode("hello"),
    ]),
  );
  await conn.closeWrite();
  await readAll(conn);
  assertEquals(await backend.handled[0], "hello");
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    new RegExp(
      `^closed 127\\.0\\.0\\.1:\\d+ \\(5 bytes in, 0 bytes out\\) for 203\\.0\\.113\\.7:5555 \\(PROXY v1\\) to ${backend.address}, `,
    ),
  );
});

Deno.test("forward.ts --accept-proxy: --allow and --deny judge the address in the header, not the proxy's", async () => {
  await using backend = listenBackend(echoHandler);
  await using forward = await startForward(`tcp://${backend.address}`, {
    // The proxy (127.0.0.1) is allowed; the client it speaks for is not.
    args: [
      "--accept-proxy",
      "--allow",
      "127.0.0.0/8",
      "--deny",
      "203.0.113.0/24",
    ],
  });
  const send = async (source: string) => {
    const conn = await dial(forward.port);
    await writeAll(
      conn,
      encodeProxyHeader(2, {
        source: { transport: "tcp", hostname: source, port: 4000 },
        destination: { transport: "tcp", hostname: "127.0.0.1", port: 80 },
      }),
    );
    return conn;
  };
  {
    using denied = await send("203.0.113.9");
    assert(await closedWithin(denied, 5000));
    assertMatch(
      await closingLine(forward.proc, localPort(denied)),
      /for 203\.0\.113\.9:4000 \(PROXY v2\): not allowed \(the address in its PROXY header\)$/,
    );
  }
  {
    using outside = await send("198.51.100.3"); // not in --allow
    assert(await closedWithin(outside, 5000));
    assertMatch(
      await closingLine(forward.proc, localPort(outside)),
      /: not allowed/,
    );
  }
  assertEquals(backend.accepted(), 0);
  using allowed = await send("127.0.0.9");
  await writeAll(allowed, encode("ok"));
  assertEquals(decode(await readExact(allowed, 2)), "ok");
  // And the other way: a client allowed behind a proxy that is not.
  await using outer = await startForward(`tcp://${backend.address}`, {
    args: ["--accept-proxy", "--allow", "203.0.113.0/24"],
  });
  using conn = await dial(outer.port);
  await writeAll(
    conn,
    encodeProxyHeader(1, {
      source: { transport: "tcp", hostname: "203.0.113.9", port: 4000 },
      destination: { transport: "tcp", hostname: "127.0.0.1", port: 80 },
    }),
  );
  await writeAll(conn, encode("in"));
  assertEquals(decode(await readExact(conn, 2)), "in");
});

Deno.test("forward.ts --accept-proxy closes a client that sends no valid header, at once, with one line", async () => {
  await using backend = listenBackend(echoHandler);
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--accept-proxy"],
  });
  using conn = await dial(forward.port);
  await writeAll(conn, encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  const began = Date.now();
  assert(await closedWithin(conn, 5000));
  assertLess(Date.now() - began, 2000, "waited for more than the first bytes");
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    // The first 15 bytes tell: the shortest header is that long.
    /\(0 bytes in, 0 bytes out\): not a PROXY protocol header: got 'GET \/ HTTP\/1\.1\\r'$/,
  );
  assertEquals(backend.accepted(), 0);
});

Deno.test("forward.ts --accept-proxy closes a client that sends nothing after 5 s", async () => {
  await using backend = listenBackend(echoHandler);
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--accept-proxy"],
  });
  using conn = await dial(forward.port);
  await writeAll(conn, encode("PROXY TCP4 "));
  const began = Date.now();
  assert(await closedWithin(conn, 10_000));
  assertGreater(Date.now() - began, 4000);
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    /: no PROXY header within 5 s \(got 'PROXY TCP4 '\)$/,
  );
});

Deno.test("forward.ts --accept-proxy --send-proxy v2 passes the original client on; with --tls, TLS follows the header", async () => {
  await using certs = await makeCertificates();
  await using backend = proxyBackend();
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: [
      "--accept-proxy",
      "--send-proxy",
      "v2",
      "--tls",
      "--cert",
      certs.cert,
      "--key",
      certs.key,
    ],
    permissions: [
      `--allow-net=127.0.0.1:0,${backend.address}`,
      `--allow-read=${certs.cert},${certs.key}`,
    ],
  });
  const raw = await dial(forward.port);
  await writeAll(
    raw,
    encodeProxyHeader(1, {
      source: { transport: "tcp", hostname: "2001:db8::7", port: 6000 },
      destination: { transport: "tcp", hostname: "2001:db8::1", port: 443 },
    }),
  );
  using conn = await Deno.startTls(raw, {
    hostname: "localhost",
    caCerts: [await Deno.readTextFile(certs.ca)],
  });
  const reading = readAll(conn);
  await writeAll(conn, encode("chained"));
  await conn.closeWrite();
  assertEquals(decode(await reading), "chained");
  const header = await backend.handled[0] as ProxyHeader;
  assertEquals(header.version, 2);
  assertEquals(header.source, {
    transport: "tcp",
    hostname: "2001:db8::7",
    port: 6000,
  });
  assertEquals(header.destination, {
    transport: "tcp",
    hostname: "2001:db8::1",
    port: 443,
  });
});

Deno.test("forward.ts: a client that resets mid-stream closes the target's side at once, and every descriptor is released", async () => {
  let targetSaw!: (what: string) => void;
  const seen = new Promise<string>((resolve) => targetSaw = resolve);
  await using backend = listenBackend(async (conn) => {
    // Keep sending; note when the forwarder closes our side.
    const sending = (async () => {
      const chunk = pseudoRandomBytes(64 * 1024, 3);
      try {
        while (true) await writeAll(conn, chunk);
      } catch {
        // The forwarder went.
      }
    })();
    try {
      await readAll(conn);
      targetSaw("eof");
    } catch (error) {
      targetSaw((error as Error).name);
    }
    await sending;
  });
  await using forward = await startForward(`tcp://${backend.address}`);
  const pid = forward.proc.child.pid;
  const baseline = descriptorCount(pid);
  const conn = await dial(forward.port);
  const port = localPort(conn);
  await writeAll(conn, pseudoRandomBytes(100_000, 1));
  await readExact(conn, 1000); // data is flowing both ways
  // Closing with unread bytes in the receive buffer sends a reset.
  conn.close();
  const began = Date.now();
  await seen;
  assertLess(Date.now() - began, 2000);
  assertMatch(await closingLine(forward.proc, port), /, client reset$/);
  assertEquals(await settledDescriptorCount(pid, baseline), baseline);
});

Deno.test({
  name:
    "forward.ts: clients that push and reset against a target that never reads are noticed; their slots and descriptors come back",
  ignore: missing("socat"),
}, async () => {
  const held = Promise.withResolvers<void>();
  // Accepts and never reads: the forwarder stays blocked writing to it.
  await using backend = listenBackend(() => held.promise);
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--max-connections", "3"],
  });
  try {
    const pid = forward.proc.child.pid;
    const baseline = descriptorCount(pid);
    for (let i = 0; i < 3; i++) {
      const port = await pushThenReset(forward.proc, forward.port);
      assertMatch(await closingLine(forward.proc, port), /, client reset$/);
    }
    assertEquals(await settledDescriptorCount(pid, baseline), baseline);
    // Every slot is free: a fourth client reaches the target.
    using fourth = await dial(forward.port);
    await forward.proc.until(
      () => backend.accepted() === 4,
      `client ${localPort(fourth)} at the target`,
    );
  } finally {
    held.resolve();
  }
});

Deno.test("forward.ts: a target that closes mid-stream while the client still sends is a reset, and the client is closed at once", async () => {
  // Deno's close() sends a FIN, then a reset for the bytes it never read:
  // the forwarder sees the reset when it next writes to the target.
  // The target closes once the client has "partial": a reset drops what
  // the forwarder has not read yet (a fixed 200 ms for it to get there
  // was too short on a loaded machine).
  let received!: () => void;
  const clientHasPartial = new Promise<void>((r) => received = r);
  await using backend = listenBackend(async (conn) => {
    await readExact(conn, 10);
    await writeAll(conn, encode("partial"));
    await clientHasPartial;
    conn.close();
  });
  await using forward = await startForward(`tcp://${backend.address}`);
  const pid = forward.proc.child.pid;
  const baseline = descriptorCount(pid);
  using conn = await dial(forward.port);
  const chunk = pseudoRandomBytes(16 * 1024, 2);
  let sentAfter = 0;
  let partialAt = 0;
  const sending = (async () => {
    try {
      while (true) {
        await writeAll(conn, chunk);
        if (partialAt) sentAfter += chunk.byteLength;
      }
    } catch {
      // Closed by the forwarder.
    }
  })();
  assertEquals(decode(await readExact(conn, 7)), "partial");
  partialAt = Date.now();
  received();
  await sending;
  // Closed at once, not left sending: far less than 32 MB got through.
  assertLess(sentAfter, 32 * 1024 * 1024);
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    /\(\d+ bytes in, 7 bytes out\) .*, target reset$/,
  );
  assertEquals(await settledDescriptorCount(pid, baseline), baseline);
});

/** A target that reads a line, answers `partial`, then resets (SO_LINGER 0). */
async function startResettingTarget(): Promise<
  ScriptProcess & AsyncDisposable
> {
  const proc = spawn("perl", {
    args: [
      "-MSocket",
      "-e",
      `socket(S, PF_INET, SOCK_STREAM, 0) or die;
       bind(S, pack_sockaddr_in(0, inet_aton("127.0.0.1"))) or die;
       listen(S, 8) or die;
       my ($port) = unpack_sockaddr_in(getsockname(S));
       print STDERR "listening on 127.0.0.1:$port\\n";
       while (accept(C, S)) {
         sysread(C, my $request, 100);
         syswrite(C, "partial\\n");
         print STDERR "answered\\n";
         sysread(C, my $go, 1);
         setsockopt(C, SOL_SOCKET, SO_LINGER, pack("ii", 1, 0)) or die;
         close(C);
       }`,
    ],
  });
  await proc.waitForStderr(/^listening on /);
  return proc;
}

for (const ffi of [true, false]) {
  Deno.test({
    name: ffi
      ? "forward.ts with FFI to libc passes a target's reset on: the client sees a reset, not an end of stream"
      : "forward.ts without FFI closes the client of a target that reset (a FIN, as haproxy), and logs the reset",
    ignore: missing("perl"),
  }, async () => {
    await using target = await startResettingTarget();
    const port = Number(/:(\d+)$/.exec(target.stderrLines[0])![1]);
    await using forward = await startForward(`tcp://127.0.0.1:${port}`, {
      permissions: [
        `--allow-net=127.0.0.1:0,127.0.0.1:${port}`,
        ...(ffi ? [FFI] : []),
      ],
    });
    using conn = await dial(forward.port);
    await writeAll(conn, encode("hello\n"));
    assertEquals(decode(await readExact(conn, 8)), "partial\n");
    // The target resets once the forwarder passes on one more byte.
    await writeAll(conn, encode("!"));
    const after = await conn.read(new Uint8Array(16)).then(
      (n) => n === null ? "end of stream" : `${n} bytes`,
      (error: Error) => error.name,
    );
    assertEquals(after, ffi ? "ConnectionReset" : "end of stream");
    assertMatch(
      await closingLine(forward.proc, localPort(conn)),
      /\(7 bytes in, 8 bytes out\) .*, target reset$/,
    );
  });
}

Deno.test("forward.ts dials a target by name with only NAME:PORT granted, and logs the address it reached", async () => {
  await using backend = listenBackend(echoHandler);
  await using forward = await startForward(`tcp://localhost:${backend.port}`, {
    permissions: [`--allow-net=127.0.0.1:0,localhost:${backend.port}`],
  });
  using conn = await dial(forward.port);
  const reading = readAll(conn);
  await writeAll(conn, encode("by name"));
  await conn.closeWrite();
  assertEquals(decode(await reading), "by name");
  // localhost may be ::1 first (refused here): Happy Eyeballs goes on.
  assertMatch(
    await closingLine(forward.proc, localPort(conn)),
    new RegExp(`to ${backend.address}, .* client closed first$`),
  );
});

Deno.test("forward.ts on SIGTERM lets a pair in flight finish within --grace, then closes both sides and exits 0", async () => {
  let targetDone!: () => void;
  const done = new Promise<void>((resolve) => targetDone = resolve);
  await using backend = listenBackend(async (conn) => {
    await readAll(conn).catch(() => {});
    targetDone();
  });
  await using forward = await startForward(`tcp://${backend.address}`, {
    args: ["--grace", "0.3"],
  });
  using conn = await dial(forward.port);
  await writeAll(conn, encode("still here"));
  await forward.proc.waitForStderr(/^accepted /);
  await eventually(() => backend.accepted() > 0, "the target's accept");
  const began = Date.now();
  forward.proc.kill("SIGTERM");
  assertEquals((await forward.proc.finished()).code, 0);
  assertLess(Date.now() - began, 3000);
  await done;
  assert(await closedWithin(conn, 1000));
  assertMatch(forward.proc.stderr, /grace period over: closed 1 connection/);
});

Deno.test("forward.ts --workers 2 forwards from both threads", async () => {
  const jsrMirror = Deno.env.get("JSR_URL")?.startsWith("file:")
    ? `,${new URL(Deno.env.get("JSR_URL")!).pathname}`
    : "";
  await using backend = listenBackend(echoHandler);
  const port = freePort();
  await using forward = await startForward(`tcp://${backend.address}`, {
    listen: `tcp://127.0.0.1:${port}`,
    args: ["--workers", "2"],
    permissions: [
      `--allow-net=127.0.0.1:${port},${backend.address}`,
      `--allow-read=servers/forward.ts,mod.ts,lib${jsrMirror}`,
    ],
  });
  for (let i = 0; i < 16; i++) {
    using conn = await dial(port);
    const reading = readAll(conn);
    await writeAll(conn, encode(`${i}`));
    await conn.closeWrite();
    assertEquals(decode(await reading), `${i}`);
  }
  await forward.proc.until(
    () =>
      new Set(
        forward.proc.stderrLines.flatMap((l) =>
          /^worker (\d+): closed /.exec(l)?.[1] ?? []
        ),
      ).size === 2,
    "closing lines from both workers",
  );
});

Deno.test({
  name:
    "forward.ts --keepalive on: TCP keepalive on both the client's and the target's connection",
  ignore: missing("ss"),
  async fn() {
    await using backend = listenBackend(echoHandler);
    await using forward = await startForward(`tcp://${backend.address}`, {
      args: ["--keepalive", "on"],
    });
    using conn = await dial(forward.port);
    await writeAll(conn, encode("x"));
    assertEquals(decode(await readExact(conn, 1)), "x");
    // `ss -o` shows a keepalive timer on a socket with SO_KEEPALIVE.
    const timers = async (filter: string) =>
      decode(
        (await runCommand("ss", ["-tnoH", "state", "established", filter]))
          .stdout,
      );
    const client = await timers(`( sport = :${forward.port} )`);
    const target = await timers(`( dport = :${backend.port} )`);
    assertMatch(client, /timer:\(keepalive/, client);
    assertMatch(target, /timer:\(keepalive/, target);
  },
});

Deno.test("forward.ts usage errors: one line, exit 2", async () => {
  const permissions = ["--allow-net=127.0.0.1"];
  const cases: [string[], RegExp][] = [
    [["tcp://127.0.0.1:0"], /^error: missing argument TARGET/],
    [
      ["udp://127.0.0.1:0", "tcp://127.0.0.1:7"],
      /^error: LISTEN and TARGET must both be udp:\/\//,
    ],
    [
      ["tcp://127.0.0.1:0", "unix:/tmp/x.sock", "--to-tls"],
      /^error: --to-tls needs a tcp:\/\/ TARGET/,
    ],
    [
      ["tcp://127.0.0.1:0", "tcp://127.0.0.1:7", "--ca", "ca.pem"],
      /^error: --ca needs --to-tls \(or tls targets in --targets FILE\)$/,
    ],
    [
      ["tcp://127.0.0.1:0", "tcp://127.0.0.1:7", "--send-proxy", "v3"],
      /^error: invalid value 'v3' for --send-proxy: expected v1 or v2/,
    ],
    [
      ["tcp://127.0.0.1:0", "tcp://127.0.0.1:7", "--udp-session-timeout", "5"],
      /^error: --udp-session-timeout applies to udp:\/\/ only/,
    ],
    [
      ["udp://127.0.0.1:0", "udp://127.0.0.1:7", "--accept-proxy"],
      /^error: --accept-proxy applies to stream/,
    ],
    [
      ["tcp://127.0.0.1:0", "tcp://127.0.0.1:7", "--udp-rate", "5"],
      /^error: --udp-rate applies to udp:\/\/ only$/,
    ],
    [
      ["http://127.0.0.1:0", "tcp://127.0.0.1:7"],
      /^error: LISTEN: unsupported scheme/,
    ],
    [["tcp://127.0.0.1:0", "tcp://::1:7"], /^error: TARGET: invalid address/],
  ];
  for (const [args, pattern] of cases) {
    await assertUsageError(FORWARD, permissions, args, pattern);
  }
});

/**
 * Counts the closes of a `Deno.Conn` (any: they share `close`) that throw
 * `BadResource`: a socket closed twice. Dispose to restore `close`.
 */
function countSecondCloses(sample: Deno.Conn) {
  let owner = Object.getPrototypeOf(sample);
  while (!Object.hasOwn(owner, "close")) owner = Object.getPrototypeOf(owner);
  const close = owner.close;
  const counted = {
    secondCloses: 0,
    [Symbol.dispose]() {
      owner.close = close;
    },
  };
  owner.close = function (this: Deno.Conn) {
    try {
      return close.call(this);
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) counted.secondCloses++;
      throw error;
    }
  };
  return counted;
}

// A second close throws a BadResource whose stack trace cost a short
// connection 6 to 8 µs of its 78 µs of CPU (deno task bench --family
// balance): splice closes both sockets, and the server core closed the
// client's again.
Deno.test("serveForward() closes each socket of a pair once (a second close throws, and that is dear)", async () => {
  await using backend = listenBackend(echoHandler);
  const closed = Promise.withResolvers<string>();
  await using server = serveForward({
    hostname: "127.0.0.1",
    port: 0,
    targets: [`tcp://${backend.address}`, `tcp://${backend.address}`],
    log: (line) => line.startsWith("closed") && closed.resolve(line),
  });
  const port = (server.addr as Deno.NetAddr).port;
  using conn = await dial(port);
  using counted = countSecondCloses(conn);
  await writeAll(conn, new TextEncoder().encode("hi"));
  await conn.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(conn)), "hi");
  assertMatch(await closed.promise, /client closed first$/);
  assertEquals(counted.secondCloses, 0);
});

Deno.test("serveForward(): clients one after another each get exactly their own bytes back (pairs that ended lend their buffers to the next)", async () => {
  await using backend = listenBackend(echoHandler);
  await using server = serveForward({
    hostname: "127.0.0.1",
    port: 0,
    target: `tcp://${backend.address}`,
    log: () => {},
  });
  const port = (server.addr as Deno.NetAddr).port;
  // Long ones first, then shorter: a reused buffer still holding an
  // earlier client's bytes past the new ones would show.
  for (const length of [1000, 300, 256, 255, 100, 7, 1]) {
    for (let i = 0; i < 20; i++) {
      const data = pseudoRandomBytes(length, length * 100 + i);
      using conn = await dial(port);
      const reading = readAll(conn);
      await writeAll(conn, data);
      await conn.closeWrite();
      assertSameBytes(await reading, data);
    }
  }
});
