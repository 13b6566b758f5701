/**
 * `--accept-proxy` in the server core (lib/stream_server.ts): every stream
 * server reads a PROXY protocol header first, then logs, judges
 * (`--allow`/`--deny`, `--per-source`) and hands its program (exec.ts's
 * `TCPREMOTEIP`...) the client the header carries. Servers run as
 * subprocesses with their header's permissions; haproxy is the real proxy
 * in front. The forwarder's own `--accept-proxy` tests (which now run
 * through this core) are in tests/forward_test.ts and
 * tests/forward_interop_test.ts.
 */

import {
  assert,
  assertEquals,
  assertLess,
  assertStringIncludes,
} from "@std/assert";
import { concat } from "@std/bytes";
import { readExact, serve, silentLog, writeAll } from "../mod.ts";
import {
  encodeProxyHeader,
  type ProxyHeader,
  readProxyHeader,
} from "../lib/proxy_protocol.ts";
import { startHaproxy } from "./_haproxy.ts";
import {
  assertSameBytes,
  assertUsageError,
  freePort,
  localPort,
  missing,
  pseudoRandomBytes,
  readAll,
  runCommand,
  type ScriptProcess,
  startServer,
} from "./_helpers.ts";
import { program, readToEof, startExec } from "./_exec.ts";

const ECHO = "servers/echo.ts";
const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** echo.ts --accept-proxy on 127.0.0.1, port 0, with its header's permission. */
function startEcho(args: string[] = []) {
  return startServer(ECHO, {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0", "--accept-proxy", ...args],
  });
}

function tcp(hostname: string, port: number): Deno.NetAddr {
  return { transport: "tcp", hostname, port };
}

/** A header for client `hostname:port` that reached 198.51.100.7:443. */
function header(
  version: 1 | 2,
  hostname: string,
  port = 4000,
): Uint8Array {
  return encodeProxyHeader(version, {
    source: tcp(hostname, port),
    destination: tcp("198.51.100.7", 443),
  });
}

/** Connects to 127.0.0.1:`port` and writes `bytes` in one write. */
async function connectWith(
  port: number,
  bytes: Uint8Array,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  await writeAll(conn, bytes);
  return conn;
}

/**
 * What the server sent `conn` until it closed it (a reset, as when it
 * closes with bytes unread, counts as closed); fails after 5 s.
 */
function untilClosed(conn: Deno.Conn): Promise<Uint8Array> {
  return readToEof(conn).catch((error) => {
    if (error instanceof Deno.errors.ConnectionReset) return new Uint8Array(0);
    throw error;
  });
}

/** The server's stderr lines about the connection from local port `port`. */
function linesAbout(proc: ScriptProcess, port: number): string[] {
  return proc.stderrLines.filter((line) =>
    line.includes(`127.0.0.1:${port} `) || line.endsWith(`127.0.0.1:${port}`)
  );
}

/** A regular expression matching `text` literally. */
function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** haproxy on a free port relaying to 127.0.0.1:`target` with `server` options. */
async function haproxyTo(target: number, server: string) {
  const port = freePort();
  const haproxy = await startHaproxy(
    port,
    `frontend f
  bind 127.0.0.1:${port}
  default_backend b
backend b
  server s 127.0.0.1:${target} ${server}
`,
  );
  return { port, haproxy };
}

/**
 * socat as a client from 127.0.0.2:`sourcePort` to 127.0.0.1:`port`:
 * sends `input`, half-closes, returns what came back.
 */
async function socatFrom127002(
  port: number,
  sourcePort: number,
  input: string,
): Promise<string> {
  const result = await runCommand(
    "socat",
    ["-t", "5", "-", `TCP:127.0.0.1:${port},bind=127.0.0.2:${sourcePort}`],
    input,
  );
  assertEquals(result.code, 0, result.stderr);
  return decode(result.stdout);
}

for (const [send, version] of [["send-proxy", 1], ["send-proxy-v2", 2]]) {
  Deno.test({
    name:
      `echo.ts --accept-proxy behind haproxy ${send}: echoes, and logs the client haproxy accepted (127.0.0.2), not haproxy`,
    ignore: missing("haproxy", "socat"),
    async fn() {
      await using echo = await startEcho();
      const { port, haproxy } = await haproxyTo(echo.port, send as string);
      await using _haproxy = haproxy;
      const sourcePort = freePort("127.0.0.2");
      assertEquals(
        await socatFrom127002(port, sourcePort, "through haproxy\n"),
        "through haproxy\n",
      );
      // The socket's peer is haproxy (127.0.0.1); the client is ours.
      const via = literal(
        ` for 127.0.0.2:${sourcePort} (PROXY v${version})`,
      );
      await echo.proc.waitForStderr(
        new RegExp(`^accepted 127\\.0\\.0\\.1:\\d+${via}$`),
      );
      await echo.proc.waitForStderr(
        new RegExp(
          `^closed 127\\.0\\.0\\.1:\\d+ \\(16 bytes in, 16 bytes out\\)${via}$`,
        ),
      );
    },
  });
}

for (
  const server of [
    "send-proxy",
    "send-proxy-v2",
    "send-proxy-v2 proxy-v2-options crc32c",
  ]
) {
  Deno.test({
    name:
      `exec.ts --accept-proxy behind haproxy ${server}: TCPREMOTEIP/PORT are haproxy's client, TCPLOCALIP/PORT the address it reached`,
    ignore: missing("haproxy", "socat"),
    async fn() {
      await using exec = await startExec(
        [program("env.sh")],
        ["--accept-proxy"],
      );
      const { port, haproxy } = await haproxyTo(exec.port, server);
      await using _haproxy = haproxy;
      const sourcePort = freePort("127.0.0.2");
      // Some bytes, not an at-once EOF: haproxy drops a client that closed
      // before it reached the server, without dialling it (a loaded
      // machine hands it the FIN with the accept).
      const env = await socatFrom127002(port, sourcePort, "go\n");
      for (
        const line of [
          "PROTO=TCP",
          "TCPREMOTEIP=127.0.0.2",
          `TCPREMOTEPORT=${sourcePort}`,
          "TCPLOCALIP=127.0.0.1",
          `TCPLOCALPORT=${port}`,
        ]
      ) {
        assertStringIncludes(
          env,
          `\n${line}\n`,
          `${env}\nexec.ts said:\n${exec.proc.stderr}\nhaproxy said:\n${haproxy.stderr}`,
        );
      }
      await exec.proc.waitForStderr(
        new RegExp(
          `^accepted 127\\.0\\.0\\.1:\\d+ for 127\\.0\\.0\\.2:${sourcePort} \\(PROXY v\\d\\)$`,
        ),
      );
    },
  });
}

Deno.test({
  name:
    "haproxy's proxy-v2-options crc32c: its header carries a CRC32C that readProxyHeader checks and accepts",
  ignore: missing("haproxy"),
  async fn() {
    using target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const read = target.accept().then(async (conn) => {
      try {
        return await readProxyHeader(conn, { deadlineMs: 5000 });
      } finally {
        conn.close();
      }
    });
    const { port, haproxy } = await haproxyTo(
      target.addr.port,
      "send-proxy-v2 proxy-v2-options crc32c",
    );
    await using _haproxy = haproxy;
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const got: ProxyHeader = await read;
    assertEquals(got.version, 2);
    assertEquals(got.source, tcp("127.0.0.1", localPort(conn)));
    assert(
      got.tlvs.some((tlv) => tlv.type === 0x03 && tlv.value.byteLength === 4),
      "no PP2_TYPE_CRC32C TLV",
    );
  },
});

Deno.test("echo.ts --accept-proxy --deny 127.0.0.2 judges the address in the header: 127.0.0.2 is closed with one line, 127.0.0.3 is served", async () => {
  await using echo = await startEcho(["--deny", "127.0.0.2"]);
  // Both connections come from 127.0.0.1, as from a proxy there.
  using denied = await connectWith(
    echo.port,
    concat([header(2, "127.0.0.2"), encode("hello")]),
  );
  assertEquals((await untilClosed(denied)).byteLength, 0);
  const line = await echo.proc.waitForStderr(
    new RegExp(`^closed 127\\.0\\.0\\.1:${localPort(denied)} .*`),
  );
  assertEquals(
    line[0],
    `closed 127.0.0.1:${
      localPort(denied)
    } (0 bytes in, 0 bytes out) for 127.0.0.2:4000 (PROXY v2): not allowed (the address in its PROXY header)`,
  );
  assertEquals(linesAbout(echo.proc, localPort(denied)).length, 1);
  using served = await connectWith(
    echo.port,
    concat([header(1, "127.0.0.3"), encode("hello")]),
  );
  assertEquals(decode(await readExact(served, 5)), "hello");
  await echo.proc.waitForStderr(
    new RegExp(
      `^accepted 127\\.0\\.0\\.1:${
        localPort(served)
      } for 127\\.0\\.0\\.3:4000 \\(PROXY v1\\)$`,
    ),
  );
});

Deno.test("echo.ts --accept-proxy --per-source 1 counts the sources in the headers, not the proxy's address", async () => {
  await using echo = await startEcho(["--per-source", "1"]);
  const open = async (source: string, port: number) => {
    const conn = await connectWith(
      echo.port,
      concat([header(1, source, port), encode("hi")]),
    );
    return conn;
  };
  using first = await open("192.0.2.1", 4001);
  assertEquals(decode(await readExact(first, 2)), "hi");
  {
    // The same client again, while its first connection is open.
    using second = await open("192.0.2.1", 4002);
    assertEquals((await untilClosed(second)).byteLength, 0);
    await echo.proc.waitForStderr(
      new RegExp(
        `^closed 127\\.0\\.0\\.1:${
          localPort(second)
        } \\(0 bytes in, 0 bytes out\\) for 192\\.0\\.2\\.1:4002 \\(PROXY v1\\): too many connections from 192\\.0\\.2\\.1 \\(max 1 per source\\)$`,
      ),
    );
  }
  // Another client through the same proxy address is served.
  using other = await open("192.0.2.2", 4003);
  assertEquals(decode(await readExact(other, 2)), "hi");
  // Once the first has gone, its client may come back.
  first.close();
  await echo.proc.waitForStderr(
    new RegExp(`^closed 127\\.0\\.0\\.1:${localPort(first)} \\(2 bytes in`),
  );
  using again = await open("192.0.2.1", 4004);
  assertEquals(decode(await readExact(again, 2)), "hi");
});

Deno.test("echo.ts --accept-proxy: no header, garbage and a slow header each close with one line, a flood of them is counted, and the server carries on", async () => {
  await using echo = await startEcho(["--proxy-timeout", "0.5"]);
  // The bad-header line is rate-limited (one a second): one case a second.
  const pause = () => new Promise((resolve) => setTimeout(resolve, 1100));
  const cases: [Uint8Array, string][] = [
    // A client that talks to the server directly: its first bytes are
    // enough, without waiting for the deadline.
    [encode("hello\n"), "not a PROXY protocol header: got 'hello\\n'"],
    [
      new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]),
      "not a PROXY protocol header: got '\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc'",
    ],
    [
      encode("PROXY TCP4 192.0.2.1 "),
      "no PROXY header within 0.5 s (got 'PROXY TCP4 192.0.2.1 ')",
    ],
  ];
  for (const [bytes, why] of cases) {
    const began = Date.now();
    using conn = await connectWith(echo.port, bytes);
    assertEquals((await untilClosed(conn)).byteLength, 0);
    assertLess(Date.now() - began, 3000);
    const port = localPort(conn);
    await echo.proc.waitForStderr(new RegExp(`127\\.0\\.0\\.1:${port} `));
    assertEquals(linesAbout(echo.proc, port), [
      `closed 127.0.0.1:${port} (0 bytes in, 0 bytes out): ${why}`,
    ]);
    await pause();
  }
  // Three at once: the first is logged, the others counted.
  for (let i = 0; i < 3; i++) {
    using conn = await connectWith(echo.port, encode("GET / HTTP/1.1\r\n\r\n"));
    await untilClosed(conn);
  }
  // Two counted, in one count line or (an interval ending between them) two.
  await echo.proc.until(
    () =>
      echo.proc.stderrLines
        .map((l) =>
          /^closed (\d+) more without a valid PROXY header \(counted, not logged one by one\)$/
            .exec(l)
        )
        .reduce((sum, m) => sum + (m ? Number(m[1]) : 0), 0) === 2,
    "2 counted without a valid PROXY header",
  );
  using good = await connectWith(
    echo.port,
    concat([header(1, "192.0.2.9"), encode("still here")]),
  );
  assertEquals(decode(await readExact(good, 10)), "still here");
  await echo.proc.waitForStderr(/^accepted /);
  // No accepted line for any of the bad ones.
  assertEquals(
    echo.proc.stderrLines.filter((line) => line.startsWith("accepted ")),
    [`accepted 127.0.0.1:${localPort(good)} for 192.0.2.9:4000 (PROXY v1)`],
  );
});

for (const version of [1, 2] as const) {
  Deno.test(`echo.ts --accept-proxy: the bytes after a v${version} header, sent in the same segment, reach the service intact`, async () => {
    await using echo = await startEcho();
    // What follows looks like more headers and line ends: none of it may
    // be taken as part of the header.
    const payload = concat([
      header(1, "203.0.113.1"),
      header(2, "203.0.113.2"),
      encode("\r\n\r\n"),
      pseudoRandomBytes(1000, 7),
    ]);
    using conn = await connectWith(
      echo.port,
      concat([header(version, "203.0.113.9"), payload]),
    );
    await conn.closeWrite();
    assertSameBytes(await readAll(conn), payload);
    await echo.proc.waitForStderr(
      new RegExp(
        `^closed 127\\.0\\.0\\.1:${
          localPort(conn)
        } \\(${payload.byteLength} bytes in, ${payload.byteLength} bytes out\\) for 203\\.0\\.113\\.9:4000 \\(PROXY v${version}\\)$`,
      ),
    );
  });
}

Deno.test("exec.ts --accept-proxy: TCPREMOTE* and TCPLOCAL* come from the header; a LOCAL header leaves the connection's own", async () => {
  await using exec = await startExec([program("env.sh")], ["--accept-proxy"]);
  const envOf = async (bytes: Uint8Array) => {
    using conn = await connectWith(exec.port, bytes);
    await conn.closeWrite();
    return { env: decode(await readAll(conn)), port: localPort(conn) };
  };
  const proxied = await envOf(
    encodeProxyHeader(1, {
      source: tcp("2001:db8::7", 6000),
      destination: tcp("2001:db8::1", 443),
    }),
  );
  for (
    const line of [
      "PROTO=TCP6",
      "TCPREMOTEIP=2001:db8::7",
      "TCPREMOTEPORT=6000",
      "TCPLOCALIP=2001:db8::1",
      "TCPLOCALPORT=443",
      "TCP6REMOTEIP=2001:db8::7",
    ]
  ) {
    assertStringIncludes(proxied.env, `\n${line}\n`, proxied.env);
  }
  // v2 LOCAL (a health check from the proxy itself): the socket's addresses.
  const local = new Uint8Array([
    ...header(2, "192.0.2.1").subarray(0, 12),
    0x20, // version 2, LOCAL
    0x00,
    0,
    0,
  ]);
  const own = await envOf(local);
  for (
    const line of [
      "PROTO=TCP",
      "TCPREMOTEIP=127.0.0.1",
      `TCPREMOTEPORT=${own.port}`,
      "TCPLOCALIP=127.0.0.1",
      `TCPLOCALPORT=${exec.port}`,
    ]
  ) {
    assertStringIncludes(own.env, `\n${line}\n`, own.env);
  }
  await exec.proc.waitForStderr(
    new RegExp(
      `^accepted 127\\.0\\.0\\.1:${own.port} for 127\\.0\\.0\\.1:${own.port} \\(PROXY v2, own address\\)$`,
    ),
  );
});

Deno.test("exec.ts --accept-proxy --rate 1 counts the header's client, and says so when it refuses one", async () => {
  await using exec = await startExec([program("env.sh")], [
    "--accept-proxy",
    "--rate",
    "1",
  ]);
  const served = async (source: string) => {
    using conn = await connectWith(exec.port, header(1, source));
    await conn.closeWrite();
    return { env: decode(await untilClosed(conn)), port: localPort(conn) };
  };
  assertStringIncludes(
    (await served("192.0.2.1")).env,
    "TCPREMOTEIP=192.0.2.1",
  );
  // The same client within the second: refused, with the reason.
  const refused = await served("192.0.2.1");
  assertEquals(refused.env, "");
  await exec.proc.waitForStderr(
    new RegExp(
      `^closed 127\\.0\\.0\\.1:${refused.port} \\(0 bytes in, 0 bytes out\\) for 192\\.0\\.2\\.1:4000 \\(PROXY v1\\): over 1 new connections/s from 192\\.0\\.2\\.1 \\(--rate\\)$`,
    ),
  );
  // Another client behind the same proxy is not counted with it.
  assertStringIncludes(
    (await served("192.0.2.2")).env,
    "TCPREMOTEIP=192.0.2.2",
  );
});

Deno.test("echo.ts --unix PATH --accept-proxy reads the header on a Unix socket too", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sockets-accept-proxy-" });
  const path = `${dir}/echo.sock`;
  try {
    await using echo = await startServer(ECHO, {
      permissions: [
        `--allow-net=unix:${path}`,
        `--allow-read=${path}`,
        `--allow-write=${path}`,
      ],
      args: ["--unix", path, "--accept-proxy"],
    });
    using conn = await Deno.connect({ transport: "unix", path });
    await writeAll(conn, concat([header(1, "192.0.2.5"), encode("unix")]));
    await conn.closeWrite();
    assertEquals(decode(await readAll(conn)), "unix");
    await echo.proc.waitForStderr(
      /^closed .* \(4 bytes in, 4 bytes out\) for 192\.0\.2\.5:4000 \(PROXY v1\)$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A v2 `PROXY` header with family-and-protocol byte `family` and address block `block`. */
function v2Header(family: number, block: Uint8Array): Uint8Array {
  return concat([
    header(2, "192.0.2.1").subarray(0, 12),
    new Uint8Array([0x21, family, block.byteLength >> 8, block.byteLength]),
    block,
  ]);
}

/** The v2 address block of a Unix socket client `source` that reached `destination`. */
function unixBlock(source: string, destination: string): Uint8Array {
  const block = new Uint8Array(216);
  block.set(encode(source).subarray(0, 108));
  block.set(encode(destination).subarray(0, 108), 108);
  return block;
}

/** A v2 header for a UDP client 192.0.2.1:4000 that reached 198.51.100.7:53. */
const UDP_HEADER = encodeProxyHeader(2, {
  source: { transport: "udp", hostname: "192.0.2.1", port: 4000 },
  destination: { transport: "udp", hostname: "198.51.100.7", port: 53 },
});

/** echo.ts --unix PATH --accept-proxy `args`, in a temporary directory. */
async function startUnixEcho(args: string[] = []) {
  const dir = await Deno.makeTempDir({ prefix: "sockets-accept-proxy-" });
  const path = `${dir}/echo.sock`;
  try {
    const echo = await startServer(ECHO, {
      permissions: [
        `--allow-net=unix:${path}`,
        `--allow-read=${path}`,
        `--allow-write=${path}`,
      ],
      args: ["--unix", path, "--accept-proxy", ...args],
    });
    return {
      proc: echo.proc,
      path,
      async [Symbol.asyncDispose]() {
        await echo[Symbol.asyncDispose]();
        await Deno.remove(dir, { recursive: true });
      },
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

/** Connects to the Unix socket `path`, writes `bytes`, half-closes, returns what came back. */
async function unixExchange(path: string, bytes: Uint8Array): Promise<string> {
  using conn = await Deno.connect({ transport: "unix", path });
  await writeAll(conn, bytes);
  await conn.closeWrite();
  return decode(await untilClosed(conn));
}

Deno.test("echo.ts --unix --accept-proxy: the paths of a v2 Unix header reach the log escaped, and cannot forge lines", async () => {
  await using echo = await startUnixEcho();
  const forged = "/evil\nX=1\nclosed 1.2.3.4:5 (0 bytes in)";
  const reply = await unixExchange(
    echo.path,
    concat([
      v2Header(0x31, unixBlock(forged, "/x\u2028\x1b[2J")),
      encode("hi"),
    ]),
  );
  assertEquals(reply, "hi");
  const via = " for /evil\\nX=1\\nclosed 1.2.3.4:5 (0 bytes in) (PROXY v2)";
  await echo.proc.waitForStderr(
    new RegExp(
      `^closed \\(unnamed\\) \\(2 bytes in, 2 bytes out\\)${literal(via)}$`,
    ),
  );
  assertEquals(
    echo.proc.stderrLines.filter((line) => line.startsWith("accepted ")),
    [`accepted (unnamed)${via}`],
  );
  for (const line of echo.proc.stderrLines) {
    assert(!/^(X=1|closed 1\.2\.3\.4)/.test(line), line);
  }
});

Deno.test("echo.ts --accept-proxy over TCP refuses a v2 header for a Unix socket client, --deny list or not, with one line and no path", async () => {
  await using echo = await startEcho(["--deny", "10.0.0.0/8"]);
  using conn = await connectWith(
    echo.port,
    concat([
      v2Header(0x31, unixBlock("/evil\nX=1", "/run/proxy.sock")),
      encode("hello"),
    ]),
  );
  assertEquals((await untilClosed(conn)).byteLength, 0);
  await echo.proc.waitForStderr(
    new RegExp(`127\\.0\\.0\\.1:${localPort(conn)} `),
  );
  assertEquals(linesAbout(echo.proc, localPort(conn)), [
    `closed 127.0.0.1:${
      localPort(conn)
    } (0 bytes in, 0 bytes out): PROXY v2 header for a Unix socket client: a TCP listener takes TCP clients (IPv4 or IPv6) or LOCAL only`,
  ]);
  assertEquals(
    echo.proc.stderrLines.filter((line) => line.startsWith("accepted ")),
    [],
  );
});

Deno.test("exec.ts --accept-proxy refuses Unix and UDP headers: no program runs, none learns PROTO=UNIX or the server's own TCPREMOTEIP", async () => {
  await using exec = await startExec([program("env.sh")], ["--accept-proxy"], {
    env: { TCPREMOTEIP: "6.6.6.6" },
  });
  for (
    const [bytes, client] of [
      [v2Header(0x31, unixBlock("/c.sock", "/p.sock")), "a Unix socket"],
      [UDP_HEADER, "a UDP"],
    ] as const
  ) {
    using conn = await connectWith(exec.port, bytes);
    await conn.closeWrite();
    assertEquals(decode(await untilClosed(conn)), "", client);
    // A bad header's line is rate-limited (one a second): the second is
    // logged in full, or counted within the second after the first.
    await exec.proc.waitForStderr(
      new RegExp(
        `^closed (127\\.0\\.0\\.1:${
          localPort(conn)
        } \\(0 bytes in, 0 bytes out\\): PROXY v2 header for ${client} client: |1 more without a valid PROXY header)`,
      ),
    );
  }
  assertEquals(
    exec.proc.stderrLines.filter((line) => /^accepted /.test(line)),
    [],
  );
});

Deno.test("echo.ts --unix --accept-proxy --allow --per-source judge the address in the header; a LOCAL header, with no address, is refused by the allow list", async () => {
  await using echo = await startUnixEcho([
    "--allow",
    "192.0.2.0/24",
    "--per-source",
    "1",
  ]);
  using first = await Deno.connect({ transport: "unix", path: echo.path });
  await writeAll(first, concat([header(1, "192.0.2.5", 4001), encode("a")]));
  assertEquals(decode(await readExact(first, 1)), "a");
  const refused = async (bytes: Uint8Array, line: string) => {
    assertEquals(await unixExchange(echo.path, bytes), "");
    await echo.proc.waitForStderr(new RegExp(`^${literal(line)}$`));
  };
  await refused(
    header(1, "192.0.2.5", 4002),
    "closed (unnamed) (0 bytes in, 0 bytes out) for 192.0.2.5:4002 (PROXY v1): too many connections from 192.0.2.5 (max 1 per source)",
  );
  await refused(
    header(2, "198.51.100.9", 4003),
    "closed (unnamed) (0 bytes in, 0 bytes out) for 198.51.100.9:4003 (PROXY v2): not allowed (the address in its PROXY header)",
  );
  await refused(
    v2Header(0x00, new Uint8Array(0)).map((b, i) => i === 12 ? 0x20 : b),
    "closed (unnamed) (0 bytes in, 0 bytes out) for (unnamed) (PROXY v2, own address): not allowed",
  );
  await unixExchange(echo.path, header(2, "192.0.2.6", 4004));
  await echo.proc.waitForStderr(
    /^closed \(unnamed\) \(0 bytes in, 0 bytes out\) for 192\.0\.2\.6:4004 \(PROXY v2\)$/,
  );
});

Deno.test("exec.ts --unix --accept-proxy --rate 1 counts the header's client, as over TCP", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sockets-accept-proxy-" });
  const path = `${dir}/exec.sock`;
  const env = program("env.sh");
  try {
    await using exec = await startExec([env], [
      "--accept-proxy",
      "--rate",
      "1",
    ], {
      address: ["--unix", path],
      permissions: [
        `--allow-net=unix:${path}`,
        `--allow-read=${path},${env}`,
        `--allow-write=${path}`,
        `--allow-run=${env}`,
      ],
    });
    assertStringIncludes(
      await unixExchange(path, header(1, "192.0.2.1", 4001)),
      "TCPREMOTEIP=192.0.2.1",
    );
    assertEquals(await unixExchange(path, header(1, "192.0.2.1", 4002)), "");
    await exec.proc.waitForStderr(
      /^closed \(unnamed\) \(0 bytes in, 0 bytes out\) for 192\.0\.2\.1:4002 \(PROXY v1\): over 1 new connections\/s from 192\.0\.2\.1 \(--rate\)$/,
    );
    assertStringIncludes(
      await unixExchange(path, header(1, "192.0.2.2", 4003)),
      "TCPREMOTEIP=192.0.2.2",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--allow/--deny with --unix and no --accept-proxy: still a usage error, which names --accept-proxy", async () => {
  await assertUsageError(
    ECHO,
    ["--allow-net=127.0.0.1"],
    ["--unix", "/tmp/x.sock", "--deny", "10.0.0.0/8"],
    /^error: --allow and --deny match IP addresses; a --unix peer has none \(use the socket file's permissions, or --accept-proxy to judge the client in a proxy's header\)$/,
  );
});

Deno.test("serve() with acceptProxy: the handler sees the header and the client it names in its context", async () => {
  let seen: { remote: Deno.Addr; local: Deno.Addr; header?: ProxyHeader };
  const handled = Promise.withResolvers<void>();
  await using server = serve({
    name: "test",
    defaultPort: 0,
    stream: async (conn, context) => {
      seen = {
        remote: context.remoteAddr,
        local: context.localAddr,
        header: context.proxyHeader,
      };
      await writeAll(conn, encode("ok"));
      handled.resolve();
    },
  }, { hostname: "127.0.0.1", port: 0, acceptProxy: true, log: silentLog });
  const { port } = server.addr as Deno.NetAddr;
  using conn = await connectWith(port, header(2, "192.0.2.1"));
  assertEquals(decode(await readExact(conn, 2)), "ok");
  await handled.promise;
  assertEquals(seen!.remote, tcp("192.0.2.1", 4000));
  assertEquals(seen!.local, tcp("198.51.100.7", 443));
  assertEquals(seen!.header?.version, 2);
});

Deno.test("--accept-proxy and --proxy-timeout usage errors: one line, exit 2", async () => {
  const permissions = ["--allow-net=127.0.0.1"];
  const cases: [string, string[], RegExp][] = [
    [
      ECHO,
      ["--udp", "--accept-proxy"],
      /^error: --accept-proxy applies to TCP and --unix only$/,
    ],
    [
      ECHO,
      ["--unixpacket", "/tmp/x.sock", "--accept-proxy"],
      /^error: --accept-proxy applies to TCP and --unix only$/,
    ],
    [
      ECHO,
      ["--proxy-timeout", "1"],
      /^error: --proxy-timeout needs --accept-proxy$/,
    ],
    [
      ECHO,
      ["--accept-proxy", "--proxy-timeout", "0"],
      /^error: invalid value '0' for --proxy-timeout: expected more than 0 seconds$/,
    ],
    [
      "servers/inetd.ts",
      ["--udp-only", "--accept-proxy"],
      // inetd.ts takes no --unix: the message names only what it takes.
      /^error: --accept-proxy applies to TCP only$/,
    ],
  ];
  for (const [script, args, pattern] of cases) {
    await assertUsageError(script, permissions, args, pattern);
  }
});
