// The TLS engine proves itself before the first connection
// (lib/tls_engine.ts, proveNativeTls in lib/tls_native.ts): on this Deno it
// passes and serves; on a runtime whose engine was broken on purpose
// (tests/_broken_tls_engine.ts, preloaded into the server's process) the
// server says so in one line and serves with node:tls, or, with
// `--tls-engine native`, exits 1 with one line; `--tls-engine node` uses
// node:tls without asking.
import { assert, assertEquals, assertMatch } from "@std/assert";
import { readExact, readTlsFiles, serve, writeAll } from "../mod.ts";
import { silentLog } from "../lib/log.ts";
import { NativeTlsConn, proveNativeTls } from "../lib/tls_native.ts";
import { NodeTlsConn, tlsServerContext } from "../lib/tls_node.ts";
import { chooseTlsEngine } from "../lib/tls_engine.ts";
import {
  assertUsageError,
  makeCertificates,
  missing,
  repoPath,
  runScript,
  startServer,
  type TestCertificates,
} from "./_helpers.ts";

const noOpenssl = missing("openssl");
/** Preloaded into a server's process: its TLS engine drops what it is given. */
const BROKEN_ENGINE = ["--preload", repoPath("tests/_broken_tls_engine.ts")];
const FALLBACK_LINE =
  /^TLS engine: the runtime's engine failed its self-test \(no handshake\); serving TLS with node:tls$/;

function echoTlsPermissions(certs: TestCertificates): string[] {
  return ["--allow-net=127.0.0.1:0", `--allow-read=${certs.cert},${certs.key}`];
}

function echoTlsArgs(certs: TestCertificates, engine: string): string[] {
  return [
    "--hostname",
    "127.0.0.1",
    "--port",
    "0",
    "--tls",
    "--tls-engine",
    engine,
    "--cert",
    certs.cert,
    "--key",
    certs.key,
  ];
}

/** A TLS round trip through an echo server: what comes back is what went. */
async function assertEchoes(port: number, certs: TestCertificates) {
  using conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [Deno.readTextFileSync(certs.ca)],
  });
  const sent = new TextEncoder().encode("proven\n");
  await writeAll(conn, sent);
  assertEquals(await readExact(conn, sent.byteLength), sent);
}

Deno.test({
  name:
    "a runtime whose TLS engine is broken: echo.ts --tls says so in one line before listening, and serves over node:tls",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startServer("servers/echo.ts", {
      permissions: [...BROKEN_ENGINE, ...echoTlsPermissions(certs)],
      args: echoTlsArgs(certs, "auto"),
    });
    await assertEchoes(server.port, certs);
    const lines = server.proc.stderrLines;
    const fallback = lines.filter((line) => line.startsWith("TLS engine:"));
    assertEquals(fallback.length, 1, lines.join("\n"));
    assertMatch(fallback[0], FALLBACK_LINE);
    assert(
      lines.indexOf(fallback[0]) <
        lines.findIndex((line) => line.startsWith("listening on")),
      lines.join("\n"),
    );
  },
});

Deno.test({
  name:
    "a runtime whose TLS engine is broken: echo.ts --tls --tls-engine native exits 1 with one line",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const result = await runScript("servers/echo.ts", {
      permissions: [...BROKEN_ENGINE, ...echoTlsPermissions(certs)],
      args: echoTlsArgs(certs, "native"),
    });
    assertEquals(result.code, 1, result.stderr);
    assertEquals(
      result.stderr.trimEnd(),
      "error: --tls-engine native: the runtime's TLS engine failed its self-test (no handshake); use --tls-engine auto or node",
    );
  },
});

Deno.test({
  name:
    "a runtime whose TLS engine is broken: echo.ts --tls --tls-engine node serves without asking it (no fallback line)",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startServer("servers/echo.ts", {
      permissions: [...BROKEN_ENGINE, ...echoTlsPermissions(certs)],
      args: echoTlsArgs(certs, "node"),
    });
    await assertEchoes(server.port, certs);
    assert(
      !server.proc.stderrLines.some((line) => line.startsWith("TLS engine")),
      server.proc.stderr,
    );
  },
});

Deno.test({
  name:
    "this Deno's TLS engine proves itself: auto and native serve with no fallback line",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    await proveNativeTls(tlsServerContext(readTlsFiles(certs.cert, certs.key)));
    for (const engine of ["auto", "native"]) {
      await using server = await startServer("servers/echo.ts", {
        permissions: echoTlsPermissions(certs),
        args: echoTlsArgs(certs, engine),
      });
      await assertEchoes(server.port, certs);
      assert(
        !server.proc.stderrLines.some((line) => line.startsWith("TLS engine")),
        server.proc.stderr,
      );
    }
  },
});

Deno.test({
  name:
    "tlsEngine picks what connections run on: native (proven) or node (not asked)",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const tls = readTlsFiles(certs.cert, certs.key);
    assertEquals(await chooseTlsEngine(tlsServerContext(tls), "node"), {
      engine: "node",
    });
    for (
      const [tlsEngine, expected] of [
        ["native", NativeTlsConn],
        ["node", NodeTlsConn],
      ] as const
    ) {
      // The handler says which class its connection is.
      await using server = serve({
        name: "which",
        defaultPort: 0,
        async stream(conn) {
          const which = conn instanceof expected ? "expected" : "other";
          await writeAll(conn, new TextEncoder().encode(which));
        },
      }, {
        hostname: "127.0.0.1",
        port: 0,
        tls,
        tlsEngine,
        log: silentLog,
      });
      await server.ready;
      using conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: (server.addr as Deno.NetAddr).port,
        caCerts: [Deno.readTextFileSync(certs.ca)],
      });
      const got = await readExact(conn, "expected".length);
      assertEquals(new TextDecoder().decode(got), "expected", tlsEngine);
    }
  },
});

Deno.test("--tls-engine: a wrong value or no --tls is a usage error", async () => {
  for (
    const [args, pattern] of [
      [
        ["--tls-engine", "fast"],
        /^error: invalid value 'fast' for --tls-engine: expected auto, native, node$/,
      ],
      [["--tls-engine", "node"], /^error: --tls-engine needs --tls$/],
    ] as const
  ) {
    await assertUsageError(
      "servers/echo.ts",
      ["--allow-net=127.0.0.1:0"],
      ["--port", "0", ...args],
      pattern,
    );
  }
});
