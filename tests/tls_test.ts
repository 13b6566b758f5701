import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertMatch,
  assertNotEquals,
  assertNotMatch,
  assertRejects,
} from "@std/assert";
import {
  AccessList,
  readExact,
  readTlsFiles,
  type TlsCertificate,
  writeAll,
} from "../mod.ts";
import { serveEcho } from "../servers/echo.ts";
import {
  assertSameBytes,
  connectTls,
  freePort,
  makeCertificates,
  missing,
  pseudoRandomBytes,
  readAll,
  repoPath,
  runCommand,
  runScript,
  spawn,
  startTlsEcho,
  type TestCertificates,
  tlsEngineOption,
} from "./_helpers.ts";

const noOpenssl = missing("openssl");

function tlsOf(certs: TestCertificates): TlsCertificate {
  return readTlsFiles(certs.cert, certs.key);
}

Deno.test({
  name:
    "echo.ts --tls echoes 4 MB byte-exact to socat OPENSSL:, verifying our CA",
  ignore: noOpenssl || missing("socat"),
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startTlsEcho(certs);
    const data = pseudoRandomBytes(4 * 1024 * 1024, 11);
    const { code, stdout, stderr } = await runCommand("socat", [
      "-t",
      "30",
      "-",
      `OPENSSL:127.0.0.1:${server.port},cafile=${certs.ca},commonname=localhost`,
    ], data);
    assertEquals(code, 0, stderr);
    assertEquals(stdout.byteLength, data.byteLength);
    assertSameBytes(stdout, data, "echo");
    await server.proc.waitForStderr(
      new RegExp(
        `^closed 127\\.0\\.0\\.1:\\d+ \\(${data.byteLength} bytes in, ${data.byteLength} bytes out\\)$`,
      ),
    );
  },
});

Deno.test({
  name:
    "echo.ts --tls under ulimit -n 1024, with FFI to libc, says at start that 4096 TLS connections of 2 descriptors cannot all be open, and how many can",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const ffi = `--allow-ffi=/lib/${
      Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"
    }-linux-gnu/libc.so.6`;
    await using server = await startTlsEcho(certs, [], {
      prefix: ["sh", "-c", 'ulimit -n 1024 && exec "$@"', "sh"],
      morePermissions: [ffi],
    });
    assertEquals(
      server.proc.stderrLines.filter((line) => line.startsWith("descriptors:")),
      [
        'descriptors: 4096 connections at 2 descriptors each (TLS) need up to 8224 open files, over this process\'s limit of 1024: past 496 connections, new ones fail with "Too many open files"; raise the limit (ulimit -n) or lower --max-connections to 496',
      ],
    );
  },
});

Deno.test({
  name: "echo.ts --tls echoes 3 MB byte-exact to openssl s_client",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startTlsEcho(certs);
    const data = pseudoRandomBytes(3 * 1024 * 1024, 12);
    const child = new Deno.Command("openssl", {
      args: [
        "s_client",
        "-quiet",
        "-verify_return_error",
        "-CAfile",
        certs.ca,
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-connect",
        `127.0.0.1:${server.port}`,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderrText = new Response(child.stderr).text();
    // s_client never half-closes on end of input: read exactly what was
    // sent, then stop it.
    const received = new Uint8Array(data.byteLength);
    const reading = (async () => {
      let offset = 0;
      for await (const chunk of child.stdout) {
        received.set(
          chunk.subarray(0, received.byteLength - offset),
          offset,
        );
        offset += chunk.byteLength;
        if (offset >= data.byteLength) break;
      }
      return offset;
    })();
    const writer = child.stdin.getWriter();
    await writer.write(data);
    const total = await reading;
    child.kill("SIGTERM");
    await writer.close().catch(() => {});
    await child.status;
    await stderrText;
    assertEquals(total, data.byteLength);
    assertSameBytes(received, data, "echo");
  },
});

Deno.test({
  name:
    "a client sending garbage, or nothing, instead of a handshake disturbs no one",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const lines: string[] = [];
    await using server = serveEcho({
      hostname: "127.0.0.1",
      port: 0,
      tls: tlsOf(certs),
      ...tlsEngineOption(),
      handshakeTimeoutMs: 1500,
      log: (line) => lines.push(line),
    });
    const { port } = server.addr as Deno.NetAddr;
    // A good client mid-conversation.
    using good = await connectTls(port, certs.ca);
    await writeAll(good, new TextEncoder().encode("before "));
    assertEquals(
      new TextDecoder().decode(await readExact(good, 7)),
      "before ",
    );
    // A client that sends garbage, and one that sends nothing at all.
    using garbage = await Deno.connect({ hostname: "127.0.0.1", port });
    using silent = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(garbage, new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
    // Whatever comes back is a TLS alert record (type 21), never an echo.
    const answer = await readAll(garbage).catch(() => new Uint8Array());
    assert(answer.byteLength === 0 || answer[0] === 21, String(answer));
    // The good client and a new one are served meanwhile.
    await writeAll(good, new TextEncoder().encode("after"));
    assertEquals(new TextDecoder().decode(await readExact(good, 5)), "after");
    {
      using fresh = await connectTls(port, certs.ca);
      await writeAll(fresh, new TextEncoder().encode("fresh"));
      assertEquals(
        new TextDecoder().decode(await readExact(fresh, 5)),
        "fresh",
      );
    }
    // The silent one is closed at the handshake deadline.
    const silentEnd = await readAll(silent).catch(() => new Uint8Array());
    assertEquals(silentEnd.byteLength, 0);
    await good.closeWrite();
    assertEquals((await readAll(good)).byteLength, 0);
    await server.shutdown();
    // One line for the garbage; the silent one has its own line, or is
    // counted when it fell within a second of the first.
    const failed = lines.filter((l) => l.startsWith("TLS handshake failed:"));
    assert(failed.length >= 1 && failed.length <= 2, lines.join("\n"));
    assertMatch(
      failed[0],
      /^TLS handshake failed: 127\.0\.0\.1:\d+: .*(corrupt|wrong version)/,
    );
    assertMatch(
      failed[1] ?? "",
      /: no handshake within 1\.5 s$|^TLS handshake failed: 1 more/,
    );
    assertEquals(
      lines.filter((l) => l.startsWith("accepted")).length,
      2,
      lines.join("\n"),
    );
  },
});

Deno.test({
  name:
    "TLS echo: half-close, backpressure, idle timeout and graceful shutdown hold",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const lines: string[] = [];
    const server = serveEcho({
      hostname: "127.0.0.1",
      port: 0,
      tls: tlsOf(certs),
      ...tlsEngineOption(),
      idleTimeoutMs: 1500,
      gracePeriodMs: 5000,
      log: (line) => lines.push(line),
    });
    const { port } = server.addr as Deno.NetAddr;

    // Half-close: everything owed still arrives after close_notify.
    {
      using conn = await connectTls(port, certs.ca);
      const data = pseudoRandomBytes(256 * 1024, 3);
      const reading = readAll(conn);
      await writeAll(conn, data);
      await conn.closeWrite();
      assertSameBytes(await reading, data, "echo");
    }

    // Backpressure: a client that does not read stops the server reading,
    // so its own writes stall instead of filling the server's memory.
    {
      using conn = await connectTls(port, certs.ca);
      const data = pseudoRandomBytes(32 * 1024 * 1024, 4);
      let written = false;
      const writing = writeAll(conn, data).then(() => written = true);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assertEquals(written, false, "32 MB written to a client not reading");
      const back = await readExact(conn, data.byteLength);
      await writing;
      assertEquals(back.byteLength, data.byteLength);
      assert(back.every((b, i) => b === data[i]), "echo differs");
    }

    // Idle timeout: a TLS client that goes quiet is closed.
    {
      using conn = await connectTls(port, certs.ca);
      await writeAll(conn, new TextEncoder().encode("x"));
      await readExact(conn, 1);
      const started = performance.now();
      const rest = await readAll(conn).catch(() => new Uint8Array());
      assertEquals(rest.byteLength, 0);
      assertGreaterOrEqual(
        performance.now() - started,
        1000,
        "closed too early",
      );
      assert(lines.some((l) => l.startsWith("idle timeout: closing")));
    }

    // Graceful shutdown: a connection in flight keeps being served.
    using conn = await connectTls(port, certs.ca);
    await writeAll(conn, new TextEncoder().encode("one"));
    await readExact(conn, 3);
    const stopping = server.shutdown();
    await writeAll(conn, new TextEncoder().encode("two"));
    assertEquals(new TextDecoder().decode(await readExact(conn, 3)), "two");
    await conn.closeWrite();
    await readAll(conn);
    await stopping;
    assert(lines.some((l) => l.startsWith("shutting down: waiting")));
    assert(!lines.some((l) => l.startsWith("grace period over")));
  },
});

Deno.test({
  name:
    "TLS: a client verifying against the wrong CA fails; the server logs one line and serves on",
  ignore: noOpenssl || missing("socat"),
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startTlsEcho(certs);
    const wrong = await runCommand("socat", [
      "-t",
      "5",
      "-",
      `OPENSSL:127.0.0.1:${server.port},cafile=${certs.wrongCa},commonname=localhost`,
    ], "secret\n");
    assertNotEquals(wrong.code, 0);
    assertEquals(wrong.stdout.byteLength, 0);
    assertMatch(wrong.stderr, /certificate verify failed/);
    const refused = await assertRejects(
      () =>
        connectTls(server.port, certs.wrongCa).then((c) =>
          c.handshake().finally(() => c.close())
        ),
      Error,
    );
    assertMatch(refused.message, /invalid peer certificate|UnknownIssuer/);
    await server.proc.waitForStderr(/^TLS handshake failed: 127\.0\.0\.1:\d+/);
    const right = await runCommand("socat", [
      "-t",
      "5",
      "-",
      `OPENSSL:127.0.0.1:${server.port},cafile=${certs.ca},commonname=localhost`,
    ], "still here\n");
    assertEquals(new TextDecoder().decode(right.stdout), "still here\n");
  },
});

Deno.test({
  name:
    "TLS with --allow: a refused client gets no byte, not even a ServerHello",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startTlsEcho(certs, ["--allow", "127.0.0.2"]);
    await assertRejects(() =>
      connectTls(server.port, certs.ca).then((c) =>
        c.handshake().finally(() => c.close())
      )
    );
    using raw = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const got = await readAll(raw).catch(() => new Uint8Array());
    assertEquals(got.byteLength, 0);
    await server.proc.waitForStderr(/^refused 127\.0\.0\.1:\d+: not allowed$/);
    assert(!server.proc.stderrLines.some((l) => l.startsWith("accepted")));
  },
});

Deno.test({
  name:
    "echo.ts --tls: missing or unreadable files exit 1 with one line; bad flags exit 2",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const run = (permissions: string[], args: string[]) =>
      runScript("servers/echo.ts", {
        permissions: ["--allow-net=127.0.0.1:0", ...permissions],
        args: ["--hostname", "127.0.0.1", "--port", "0", ...args],
      });
    const oneLine = (stderr: string, pattern: RegExp) => {
      const lines = stderr.trimEnd().split("\n");
      assertEquals(lines.length, 1, stderr);
      assertMatch(lines[0], pattern);
    };
    const missingCert = `${certs.dir}/nope.pem`;
    let result = await run(
      [`--allow-read=${missingCert},${certs.key}`],
      ["--tls", "--cert", missingCert, "--key", certs.key],
    );
    assertEquals(result.code, 1, result.stderr);
    oneLine(
      result.stderr,
      /^error: cannot read certificate file '.*nope\.pem': no such file$/,
    );
    result = await run([], ["--tls", "--cert", certs.cert, "--key", certs.key]);
    assertEquals(result.code, 1, result.stderr);
    oneLine(
      result.stderr,
      /^error: cannot read certificate file '.*cert\.pem': no read permission \(run again as: deno run --allow-read=.*cert\.pem,.*key\.pem servers\/echo\.ts .*\)$/,
    );
    // A key file that is a certificate: exit 1, naming the file.
    result = await run(
      [`--allow-read=${certs.cert}`],
      ["--tls", "--cert", certs.cert, "--key", certs.cert],
    );
    assertEquals(result.code, 1, result.stderr);
    oneLine(
      result.stderr,
      /^error: private key file '.*cert\.pem' holds no PEM private key/,
    );
    // A key that does not match the certificate.
    const wrongKey = `${certs.dir}/wrong-ca.key`;
    result = await run(
      [`--allow-read=${certs.cert},${wrongKey}`],
      ["--tls", "--cert", certs.cert, "--key", wrongKey],
    );
    assertEquals(result.code, 1, result.stderr);
    oneLine(
      result.stderr,
      /^error: certificate and key do not match/,
    );
    for (
      const [args, pattern] of [
        [["--tls"], /^error: --tls needs --cert FILE and --key FILE$/],
        [["--cert", certs.cert], /^error: --cert needs --tls$/],
        [
          ["--tls", "--udp", "--cert", certs.cert, "--key", certs.key],
          /^error: --tls cannot be used with --udp/,
        ],
      ] as const
    ) {
      result = await run([], [...args]);
      assertEquals(result.code, 2, result.stderr);
      oneLine(result.stderr, pattern);
    }
  },
});

Deno.test({
  name: "TLS: --max-connections counts clients in their handshake too",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const lines: string[] = [];
    await using server = serveEcho({
      hostname: "127.0.0.1",
      port: 0,
      tls: tlsOf(certs),
      ...tlsEngineOption(),
      maxConnections: 1,
      access: new AccessList({ allow: ["127.0.0.0/8"] }),
      log: (line) => lines.push(line),
    });
    const { port } = server.addr as Deno.NetAddr;
    using first = await connectTls(port, certs.ca);
    await writeAll(first, new TextEncoder().encode("1"));
    await readExact(first, 1);
    await assertRejects(() =>
      connectTls(port, certs.ca).then(async (c) => {
        try {
          await c.handshake();
          await writeAll(c, new TextEncoder().encode("2"));
          await readExact(c, 1);
        } finally {
          c.close();
        }
      })
    );
    assert(
      lines.some((l) => /too many connections \(max 1\)/.test(l)),
      lines.join("\n"),
    );
  },
});

/** socat as a TLS echo server with our certificate; stopped on dispose. */
async function socatTlsEcho(certs: TestCertificates) {
  for (let attempt = 0;; attempt++) {
    const port = freePort();
    const proc = spawn("socat", {
      args: [
        "-d",
        "-d",
        `OPENSSL-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,cert=${certs.cert},key=${certs.key},verify=0`,
        "EXEC:cat",
      ],
    });
    try {
      await proc.waitForStderr(/listening on/);
      return { port, [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose]() };
    } catch (error) {
      await proc[Symbol.asyncDispose]();
      if (attempt >= 3) throw error;
    }
  }
}

Deno.test({
  name:
    "connect.ts --tls --ca relays 1 MB byte-exact with socat OPENSSL-LISTEN",
  ignore: noOpenssl || missing("socat"),
  async fn() {
    await using certs = await makeCertificates();
    await using server = await socatTlsEcho(certs);
    const data = pseudoRandomBytes(1024 * 1024, 21);
    const { code, stdout, stderr } = await runScriptBytes(
      "clients/connect.ts",
      {
        permissions: [
          `--allow-net=127.0.0.1:${server.port}`,
          `--allow-read=${certs.ca}`,
        ],
        args: [
          "--tls",
          "--ca",
          certs.ca,
          "--servername",
          "localhost",
          "127.0.0.1",
          String(server.port),
        ],
        input: data,
      },
    );
    assertEquals(code, 0, stderr);
    assertEquals(stdout.byteLength, data.byteLength);
    assertSameBytes(stdout, data, "relayed");
    assertMatch(stderr, /^TLS handshake done with 127\.0\.0\.1:\d+$/m);
    assertNotMatch(stderr, /warning/);
  },
});

Deno.test({
  name:
    "connect.ts --tls: the wrong CA or the wrong name is exit 1 with one clear line; --insecure warns and connects",
  ignore: noOpenssl || missing("socat"),
  async fn() {
    await using certs = await makeCertificates();
    await using server = await socatTlsEcho(certs);
    const port = String(server.port);
    const net = `--allow-net=127.0.0.1:${server.port}`;
    let result = await runScript("clients/connect.ts", {
      permissions: [net, `--allow-read=${certs.wrongCa}`],
      args: ["--tls", "--ca", certs.wrongCa, "127.0.0.1", port],
      input: "secret\n",
    });
    assertEquals(result.code, 1, result.stderr);
    assertEquals(result.stdout, "");
    let errors = result.stderr.split("\n").filter((l) =>
      l.startsWith("error:")
    );
    assertEquals(errors, [
      `error: TLS handshake with 127.0.0.1:${port} failed: certificate not trusted (unknown issuer): give --ca FILE with the CA that signed it, or --insecure to skip the check`,
    ]);
    result = await runScript("clients/connect.ts", {
      permissions: [net, `--allow-read=${certs.ca}`],
      args: [
        "--tls",
        "--ca",
        certs.ca,
        "--servername",
        "example.com",
        "127.0.0.1",
        port,
      ],
      input: "secret\n",
    });
    assertEquals(result.code, 1, result.stderr);
    errors = result.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assertEquals(errors.length, 1, result.stderr);
    assertMatch(
      errors[0],
      /failed: certificate not valid for name 'example\.com' \(it is for localhost, 127\.0\.0\.1, ::1\): give --servername/,
    );
    // Deno's own roots do not know our test CA either.
    result = await runScript("clients/connect.ts", {
      permissions: [net],
      args: ["--tls", "127.0.0.1", port],
      input: "secret\n",
    });
    assertEquals(result.code, 1, result.stderr);
    assertMatch(
      result.stderr,
      /^error: TLS handshake with .* failed: certificate not trusted \(unknown issuer\)/m,
    );
    result = await runScript("clients/connect.ts", {
      permissions: [net],
      args: ["--tls", "--insecure", "127.0.0.1", port],
      input: "not verified\n",
    });
    assertEquals(result.code, 0, result.stderr);
    assertEquals(result.stdout, "not verified\n");
    assertMatch(
      result.stderr,
      /^warning: --insecure: the server's certificate is not verified/m,
    );
  },
});

Deno.test({
  name:
    "connect.ts --tls talks to echo.ts --tls; flag misuse is exit 2, a missing CA file exit 1",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startTlsEcho(certs);
    const net = `--allow-net=127.0.0.1:${server.port}`;
    let result = await runScript("clients/connect.ts", {
      permissions: [net, `--allow-read=${certs.ca}`],
      args: ["--tls", "--ca", certs.ca, "127.0.0.1", String(server.port)],
      input: "round trip\n",
    });
    assertEquals(result.code, 0, result.stderr);
    assertEquals(result.stdout, "round trip\n");
    for (
      const [args, pattern] of [
        [["--ca", certs.ca, "127.0.0.1", "1"], /^error: --ca needs --tls$/],
        [["--insecure", "127.0.0.1", "1"], /^error: --insecure needs --tls$/],
        [
          ["--tls", "--udp", "127.0.0.1", "1"],
          /^error: --tls cannot be used with --udp$/,
        ],
        [
          ["--tls", "--insecure", "--ca", certs.ca, "127.0.0.1", "1"],
          /^error: --insecure and --ca cannot be used together$/,
        ],
      ] as const
    ) {
      result = await runScript("clients/connect.ts", {
        permissions: [net],
        args: [...args],
      });
      assertEquals(result.code, 2, result.stderr);
      assertMatch(result.stderr.trimEnd(), pattern);
    }
    result = await runScript("clients/connect.ts", {
      permissions: [net, `--allow-read=${certs.dir}`],
      args: [
        "--tls",
        "--ca",
        `${certs.dir}/none.pem`,
        "127.0.0.1",
        String(server.port),
      ],
    });
    assertEquals(result.code, 1, result.stderr);
    assertMatch(
      result.stderr.trimEnd(),
      /^error: cannot read certificate file '.*none\.pem': no such file$/,
    );
  },
});

/** runScript, with stdout as bytes. */
async function runScriptBytes(
  script: string,
  options: { permissions: string[]; args: string[]; input: Uint8Array },
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  return await runCommand(Deno.execPath(), [
    "run",
    "--quiet",
    "--no-prompt",
    ...options.permissions,
    repoPath(script),
    ...options.args,
  ], options.input);
}
