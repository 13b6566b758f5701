import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
  assertNotEquals,
  assertRejects,
  assertThrows,
} from "@std/assert";
import { concat } from "@std/bytes";
import { readExact, silentLog, writeAll } from "../mod.ts";
import { serveEcho } from "../servers/echo.ts";
import {
  assertSameBytes,
  assertUsageError,
  closing,
  missing,
  pseudoRandomBytes,
  readAll,
  receiveWithin,
  runCommand,
  runScript,
  spawn,
  startServer,
  unixPermissions,
} from "./_helpers.ts";

const TCP_PERMISSIONS = ["--allow-net=127.0.0.1:0"];
const TCP_ARGS = ["--hostname", "127.0.0.1", "--port", "0"];
const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** Sends `data` on a fresh connection, half-closes, returns all it got back. */
async function roundTrip(port: number, data: Uint8Array): Promise<Uint8Array> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const reading = readAll(conn);
  await writeAll(conn, data);
  await conn.closeWrite();
  return await reading;
}

function unixPaths(): { dir: string; path: string } {
  const dir = Deno.makeTempDirSync({ prefix: "sockets-echo-" });
  return { dir, path: `${dir}/echo.sock` };
}

Deno.test("serveEcho() echoes bytes back exactly, in process", async () => {
  await using server = serveEcho({
    hostname: "127.0.0.1",
    port: 0,
    log: silentLog,
  });
  const { port } = server.addr as Deno.NetAddr;
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const data = pseudoRandomBytes(100_000, 7);
  const reading = readExact(conn, data.byteLength);
  await writeAll(conn, data);
  assertSameBytes(await reading, data);
});

Deno.test("echo.ts prints the real port for --port 0 and exits 0 on SIGTERM", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: TCP_ARGS,
  });
  assertMatch(server.address, /^127\.0\.0\.1:\d+$/);
  assertNotEquals(server.port, 0);
  assertEquals(
    decode(await roundTrip(server.port, encode("hello\n"))),
    "hello\n",
  );
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
});

Deno.test("echo.ts echoes 16 concurrent clients x 512 KiB byte-exact", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: TCP_ARGS,
  });
  const clients = Array.from({ length: 16 }, async (_, i) => {
    const data = pseudoRandomBytes(512 * 1024, i + 1);
    const echoed = await roundTrip(server.port, data);
    assertEquals(echoed.byteLength, data.byteLength, `client ${i}`);
    assertSameBytes(echoed, data, `client ${i}`);
  });
  await Promise.all(clients);
});

Deno.test("echo.ts sends everything owed after the client half-closes", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: TCP_ARGS,
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  // Write 4 MiB without reading a byte, then shut our write side: the
  // server must still deliver all of it before closing.
  const data = pseudoRandomBytes(4 * 1024 * 1024, 3);
  const reading = readAll(conn);
  await writeAll(conn, data);
  await conn.closeWrite();
  assertSameBytes(await reading, data);
});

Deno.test("echo.ts stops reading from a client that does not read (backpressure)", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: TCP_ARGS,
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const chunk = pseudoRandomBytes(256 * 1024, 9);
  const sent: Uint8Array[] = [];
  let written = 0;
  let blocked: Promise<number> | undefined;
  // Keep writing without reading; once the server stops reading, a write
  // blocks, long before 256 MiB are accepted.
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && written < 256 * 1024 * 1024) {
    const write = conn.write(chunk);
    const n = await Promise.race([
      write,
      new Promise<null>((r) => setTimeout(() => r(null), 300)),
    ]);
    if (n === null) {
      blocked = write;
      break;
    }
    sent.push(chunk.subarray(0, n));
    written += n;
  }
  assert(blocked, `wrote ${written} bytes without the server pushing back`);
  assertLess(written, 64 * 1024 * 1024, `server buffered ${written} bytes`);
  // The blocked write finishes once we read; all bytes come back in order.
  const reading = readAll(conn);
  const last = await blocked;
  sent.push(chunk.subarray(0, last));
  await conn.closeWrite();
  assertSameBytes(await reading, concat(sent), "echo after backpressure");
});

Deno.test("echo.ts --print also writes what it receives to stdout", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: [...TCP_ARGS, "--print"],
  });
  await roundTrip(server.port, encode("seen on stdout\n"));
  await server.proc.until(
    () => server.proc.stdout.includes("seen on stdout\n"),
    "the payload on stdout",
  );
});

Deno.test("echo.ts finishes a transfer in flight on SIGTERM, then exits 0", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: TCP_ARGS,
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const data = pseudoRandomBytes(8 * 1024 * 1024, 5);
  const reading = readAll(conn);
  await writeAll(conn, data.subarray(0, 1024 * 1024));
  await server.proc.waitForStderr(/accepted/);
  server.proc.kill("SIGTERM");
  await server.proc.waitForStderr(/shutting down/);
  // New connections are refused once shutdown began...
  await assertRejects(
    () => Deno.connect({ hostname: "127.0.0.1", port: server.port }),
    Deno.errors.ConnectionRefused,
  );
  // ...but the one in flight completes.
  await writeAll(conn, data.subarray(1024 * 1024));
  await conn.closeWrite();
  assertSameBytes(await reading, data);
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
});

Deno.test("echo.ts cuts connections after --grace and still exits 0", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: [...TCP_ARGS, "--grace", "0.3"],
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await writeAll(conn, encode("x"));
  await readExact(conn, 1);
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
  assertMatch(stderr, /grace period over: closed 1 connection/);
  assertEquals(await conn.read(new Uint8Array(1)), null);
});

Deno.test("echo.ts --max-connections closes the extra client at once", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: [...TCP_ARGS, "--max-connections", "1"],
  });
  using first = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  });
  await writeAll(first, encode("a"));
  await readExact(first, 1);
  using second = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  });
  assertEquals(await second.read(new Uint8Array(1)).catch(() => null), null);
  await server.proc.waitForStderr(/refused .*too many connections \(max 1\)/);
  // The first is still served.
  await writeAll(first, encode("b"));
  assertEquals(decode(await readExact(first, 1)), "b");
});

Deno.test("echo.ts --idle-timeout closes a silent client", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: [...TCP_ARGS, "--idle-timeout", "0.5"],
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const started = Date.now();
  assertEquals(await conn.read(new Uint8Array(1)), null);
  const waited = Date.now() - started;
  assertGreaterOrEqual(waited, 450, `closed after ${waited} ms`);
  await server.proc.waitForStderr(/idle timeout: closing 127\.0\.0\.1:\d+/);
});

Deno.test("echo.ts over a Unix stream socket, file removed on shutdown", async () => {
  const { dir, path } = unixPaths();
  try {
    await using server = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    assertEquals(server.address, path);
    using conn = await Deno.connect({ transport: "unix", path });
    const data = pseudoRandomBytes(1024 * 1024, 11);
    const reading = readAll(conn);
    await writeAll(conn, data);
    await conn.closeWrite();
    assertSameBytes(await reading, data);
    server.proc.kill("SIGTERM");
    assertEquals((await server.proc.finished()).code, 0);
    assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("echo.ts replaces a stale Unix socket file", async () => {
  const { dir, path } = unixPaths();
  try {
    // A socket file nobody listens on, as a crashed server leaves it
    // (Deno removes its own on close, so python makes this one).
    const made = await runCommand("python3", [
      "-c",
      `import socket; socket.socket(socket.AF_UNIX).bind(${
        JSON.stringify(path)
      })`,
    ]);
    assertEquals(made.code, 0, made.stderr);
    assert(Deno.lstatSync(path).isSocket);
    await using server = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    assertEquals(server.address, path);
    using conn = await Deno.connect({ transport: "unix", path });
    await writeAll(conn, encode("fresh"));
    assertEquals(decode(await readExact(conn, 5)), "fresh");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("echo.ts refuses a live Unix socket: address in use, exit 1", async () => {
  const { dir, path } = unixPaths();
  try {
    await using first = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    const second = await runScript("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    assertEquals(second.code, 1);
    assertMatch(second.stderr, /^error: .*in use/m);
    assertEquals(second.stderr.trim().split("\n").length, 1);
    // The first server is untouched.
    using conn = await Deno.connect({ transport: "unix", path });
    await writeAll(conn, encode("ok"));
    assertEquals(decode(await readExact(conn, 2)), "ok");
    first.proc.kill("SIGTERM");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("echo.ts never deletes a path that is not a socket", async () => {
  const { dir, path } = unixPaths();
  try {
    Deno.writeTextFileSync(path, "precious");
    const result = await runScript("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    assertEquals(result.code, 1);
    assertMatch(result.stderr, /^error: .*not a socket/m);
    assertEquals(Deno.readTextFileSync(path), "precious");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("echo.ts --udp sends each datagram back to its sender", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: ["--udp", ...TCP_ARGS],
  });
  using client = closing(Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  }));
  const target: Deno.NetAddr = {
    transport: "udp",
    hostname: "127.0.0.1",
    port: server.port,
  };
  for (const size of [0, 1, 512, 1472, 9000, 65507]) {
    const data = pseudoRandomBytes(size, size + 1);
    await client.send(data, target);
    const received = await receiveWithin(client, 5000);
    assert(received, `no reply to ${size} bytes`);
    assertSameBytes(received[0], data, `datagram of ${size} bytes`);
    assertEquals((received[1] as Deno.NetAddr).port, server.port);
  }
});

Deno.test("echo.ts --udp never answers a source port below 1024", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: ["--udp", ...TCP_ARGS],
  });
  // Tests run as root, so a privileged source port can be bound.
  let low: Deno.DatagramConn | undefined;
  for (let port = 1000; port > 900 && !low; port--) {
    try {
      low = Deno.listenDatagram({
        transport: "udp",
        hostname: "127.0.0.1",
        port,
      });
    } catch {
      // Taken; try the next.
    }
  }
  assert(low, "could not bind a port below 1024");
  using socket = closing(low);
  const target: Deno.NetAddr = {
    transport: "udp",
    hostname: "127.0.0.1",
    port: server.port,
  };
  await socket.send(encode("loop?"), target);
  assertEquals(await receiveWithin(socket, 500), null);
  await server.proc.waitForStderr(
    /dropped datagram from .*source port below 1024/,
  );
});

Deno.test("echo.ts --unixpacket echoes datagrams over a Unix socket", async () => {
  const { dir, path } = unixPaths();
  const clientPath = `${dir}/client.sock`;
  try {
    // Replies go to each client's own socket path: Deno checks net and
    // write permission per destination.
    await using server = await startServer("servers/echo.ts", {
      permissions: [
        "--unstable-net",
        "--allow-net",
        `--allow-read=${path}`,
        `--allow-write=${dir}`,
      ],
      args: ["--unixpacket", path],
    });
    assertEquals(server.address, path);
    using client = closing(Deno.listenDatagram({
      transport: "unixpacket",
      path: clientPath,
    }));
    const data = pseudoRandomBytes(4096, 2);
    await client.send(data, { transport: "unixpacket", path });
    const received = await receiveWithin(client, 5000);
    assert(received, `no reply; server log:\n${server.proc.stderr}`);
    assertSameBytes(received[0], data);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("echo.ts --unixpacket: a client's socket path reaches the log escaped, and cannot forge lines", async () => {
  const { dir, path } = unixPaths();
  // A path may hold any byte but NUL: a line of its own included.
  const clientPath = `${dir}/c\nclosed 1.2.3.4:5 (0 bytes in)\n\u2028.sock`;
  try {
    await using server = await startServer("servers/echo.ts", {
      permissions: [
        "--unstable-net",
        "--allow-net",
        `--allow-read=${path}`,
        `--allow-write=${dir}`,
      ],
      args: ["--unixpacket", path, "--udp-rate", "1"],
    });
    using client = closing(Deno.listenDatagram({
      transport: "unixpacket",
      path: clientPath,
    }));
    // The second, within the second, is over the rate: one line naming
    // the client twice.
    for (const text of ["one", "two"]) {
      await client.send(new TextEncoder().encode(text), {
        transport: "unixpacket",
        path,
      });
    }
    const shown = `${dir}/c\\nclosed 1.2.3.4:5 (0 bytes in)\\n\\u{2028}.sock`;
    await server.proc.waitForStderr(/^dropped reply to /);
    assertEquals(
      server.proc.stderrLines.filter((line) => line.startsWith("dropped ")),
      [`dropped reply to ${shown}: over 1 replies/s to ${shown}`],
    );
    assertEquals(
      server.proc.stderrLines.filter((line) => line.startsWith("closed ")),
      [],
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("echo.ts usage errors print one error: line and exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^error: unknown option '--bogus'/],
    [["--port"], /^error: option '--port' needs a value/],
    [["--port", "65536"], /^error: invalid value '65536' for --port/],
    [["--port", "abc"], /^error: invalid value 'abc' for --port/],
    [
      ["--udp", "--unix", "/tmp/x"],
      /^error: --udp and --unix cannot be used together/,
    ],
    [
      ["--max-connections", "0"],
      /^error: invalid value '0' for --max-connections/,
    ],
    [["--idle-timeout", "-1"], /^error: option '--idle-timeout' needs a value/],
    [["--idle-timeout=-1"], /^error: invalid value '-1' for --idle-timeout/],
    [["--print=yes"], /^error: option '--print' takes no value/],
    [["extra"], /^error: unexpected argument 'extra'/],
  ];
  for (const [args, expected] of cases) {
    await assertUsageError("servers/echo.ts", TCP_PERMISSIONS, args, expected);
  }
});

Deno.test("echo.ts --help prints usage on stdout and exits 0", async () => {
  const { code, stdout, stderr } = await runScript("servers/echo.ts", {
    args: ["--help"],
  });
  assertEquals(code, 0);
  assertMatch(stdout, /^usage: echo\.ts/);
  assertMatch(stdout, /--max-connections N/);
  assertEquals(stderr, "");
});

Deno.test("echo.ts on a port in use: one error line, exit 1", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = taken.addr as Deno.NetAddr;
  const { code, stderr } = await runScript("servers/echo.ts", {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--hostname", "127.0.0.1", "--port", String(port)],
  });
  assertEquals(code, 1);
  assertEquals(
    stderr.trim(),
    `error: address 127.0.0.1:${port} is already in use (pick another port with --port)`,
  );
});

Deno.test("echo.ts without net permission: one error line naming the flag, exit 1", async () => {
  const { code, stderr } = await runScript("servers/echo.ts", {
    args: TCP_ARGS,
  });
  assertEquals(code, 1);
  assertMatch(stderr.trim(), /^error: .*--allow-net/);
  assertEquals(stderr.trim().split("\n").length, 1);
});

Deno.test({
  name: "socat as a client of echo.ts gets 2 MiB back byte-exact",
  ignore: missing("socat"),
  async fn() {
    await using server = await startServer("servers/echo.ts", {
      permissions: TCP_PERMISSIONS,
      args: TCP_ARGS,
    });
    const data = pseudoRandomBytes(2 * 1024 * 1024, 21);
    const { code, stdout, stderr } = await runCommand(
      "socat",
      ["-t", "5", "-", `TCP:127.0.0.1:${server.port}`],
      data,
    );
    assertEquals(code, 0, stderr);
    assertSameBytes(stdout, data);
  },
});

Deno.test({
  name: "nc as a client of echo.ts gets its lines back",
  ignore: missing("nc"),
  async fn() {
    await using server = await startServer("servers/echo.ts", {
      permissions: TCP_PERMISSIONS,
      args: TCP_ARGS,
    });
    const input = "one\ntwo\nthree\n".repeat(1000);
    // netcat-openbsd: -N shuts the socket down after stdin EOF.
    const { code, stdout, stderr } = await runCommand(
      "nc",
      ["-N", "127.0.0.1", String(server.port)],
      input,
    );
    assertEquals(code, 0, stderr);
    assertEquals(decode(stdout), input);
  },
});

Deno.test({
  name: "socat over UDP and over a Unix socket gets echoes from echo.ts",
  ignore: missing("socat"),
  async fn() {
    await using udp = await startServer("servers/echo.ts", {
      permissions: ["--unstable-net", "--allow-net"],
      args: ["--udp", ...TCP_ARGS],
    });
    const viaUdp = await runCommand(
      "socat",
      ["-t", "1", "-", `UDP:127.0.0.1:${udp.port}`],
      "datagram\n",
    );
    assertEquals(decode(viaUdp.stdout), "datagram\n", viaUdp.stderr);

    const { dir, path } = unixPaths();
    try {
      await using unix = await startServer("servers/echo.ts", {
        permissions: unixPermissions(path),
        args: ["--unix", path],
      });
      const viaUnix = await runCommand(
        "socat",
        ["-t", "5", "-", `UNIX-CONNECT:${path}`],
        "over unix\n",
      );
      assertEquals(decode(viaUnix.stdout), "over unix\n", viaUnix.stderr);
      unix.proc.kill("SIGTERM");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("echo.ts survives a client that resets mid-stream", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: TCP_PERMISSIONS,
    args: TCP_ARGS,
  });
  // Close without reading what the server echoes: the kernel answers the
  // pending data with RST.
  for (let i = 0; i < 5; i++) {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    await writeAll(conn, pseudoRandomBytes(256 * 1024, i));
    conn.close();
  }
  assertEquals(
    decode(await roundTrip(server.port, encode("still here"))),
    "still here",
  );
  const proc = spawn("servers/echo.ts", { args: ["--help"] });
  assertEquals((await proc.finished()).code, 0);
});
