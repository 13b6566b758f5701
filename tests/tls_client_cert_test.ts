/**
 * Client certificates (mutual TLS) against real peers: exec.ts and echo.ts
 * with `--client-ca` beside stunnel (`verify = 2`), the clients' `--cert`
 * against socat `OPENSSL-LISTEN ... verify=1`, haproxy `verify required`
 * and stunnel; the same certificates accepted and refused by ours and by
 * them; both TLS engines; certificate rotation on SIGHUP.
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import { execPermissions, program, startExec } from "./_exec.ts";
import { startHaproxy } from "./_haproxy.ts";
import {
  freePort,
  makeCertificates,
  missing,
  runCommand,
  runScript,
  spawn,
  startServer,
  type TestCertificates,
  TLS_ENGINE,
  waitListening,
} from "./_helpers.ts";
import { NativeTlsConn } from "../lib/tls_native.ts";
import { NodeTlsConn } from "../lib/tls_node.ts";
import type { TlsConnInfo } from "../lib/tls_peer.ts";

const noOpenssl = missing("openssl");

/** `openssl s_client` with `args`; its stdout and stderr once it ends. */
async function sClient(
  port: number,
  args: string[],
  input = "",
): Promise<{ stdout: string; stderr: string }> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", "-quiet", "-connect", `127.0.0.1:${port}`, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  // Kept open until the server ends the connection: s_client would
  // otherwise close before the program's answer.
  const output = child.output();
  const { stdout, stderr } = await output.finally(() =>
    writer.close().catch(() => {})
  );
  return {
    stdout: new TextDecoder().decode(stdout),
    stderr: new TextDecoder().decode(stderr),
  };
}

function envOf(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0 && /^[A-Z_0-9]+$/.test(line.slice(0, at))) {
      env[line.slice(0, at)] = line.slice(at + 1);
    }
  }
  return env;
}

/** stunnel in the foreground with `service` (one section); ready once it listens. */
async function startStunnel(port: number, service: string) {
  const dir = await Deno.makeTempDir({ prefix: "sockets-stunnel-" });
  await Deno.writeTextFile(
    `${dir}/stunnel.conf`,
    `foreground = yes\npid =\ndebug = 5\n[t]\naccept = 127.0.0.1:${port}\n${service}\n`,
  );
  const proc = spawn("stunnel", { args: [`${dir}/stunnel.conf`] });
  await waitListening(proc.child.pid, { port });
  return {
    proc,
    [Symbol.asyncDispose]: async () => {
      await proc[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function tlsFlags(certs: TestCertificates, ...more: string[]): string[] {
  return [
    "--tls",
    "--cert",
    certs.cert,
    "--key",
    certs.key,
    "--client-ca",
    certs.ca,
    ...more,
  ];
}

Deno.test({
  name:
    "exec.ts --client-ca gives the program SSL_* as mod_ssl names them, SSL_CLIENT_S_DN as stunnel writes it (s_client and socat OPENSSL:...,cert= alike); no certificate or a stranger's is refused by both",
  ignore: noOpenssl || missing("stunnel", "socat"),
  async fn() {
    await using certs = await makeCertificates();
    const env = program("env.sh");
    await using server = await startExec([env], tlsFlags(certs), {
      permissions: [
        ...execPermissions(env),
        `--allow-read=${env},${certs.dir}`,
      ],
    });
    const stunnelPort = freePort();
    await using _stunnel = await startStunnel(
      stunnelPort,
      `cert = ${certs.cert}\nkey = ${certs.key}\nCAfile = ${certs.ca}\nverify = 2\nexec = /usr/bin/env\nexecArgs = env`,
    );
    const alice = ["-cert", certs.clientCert, "-key", certs.clientKey];
    const ours = envOf((await sClient(server.port, alice)).stdout);
    const theirs = envOf((await sClient(stunnelPort, alice)).stdout);
    assertEquals(ours.SSL_CLIENT_S_DN, 'C=DE, O="Example, Inc.", CN=alice');
    assertEquals(ours.SSL_CLIENT_S_DN, theirs.SSL_CLIENT_DN);
    assertEquals(ours.SSL_CLIENT_I_DN, theirs.SSL_CLIENT_I_DN);
    assertEquals(ours.SSL_CLIENT_VERIFY, "SUCCESS");
    assertEquals(ours.SSL_SERVER_S_DN, "CN=localhost");
    assertEquals(ours.SSL_PROTOCOL, "TLSv1.3");
    assertEquals(ours.SSL_CIPHER, "TLS_AES_256_GCM_SHA384");
    const x509 = async (...args: string[]) =>
      new TextDecoder().decode(
        (await runCommand("openssl", [
          "x509",
          "-in",
          certs.clientCert,
          "-noout",
          ...args,
        ])).stdout,
      ).trim().replace(/^[^=]*=/, "");
    assertEquals(ours.SSL_CLIENT_M_SERIAL, await x509("-serial"));
    assertEquals(ours.SSL_CLIENT_V_END, await x509("-enddate"));
    assert(
      server.proc.stderrLines.some((line) =>
        line.includes(`(certificate C=DE, O="Example, Inc.", CN=alice)`)
      ),
      server.proc.stderrLines.join("\n"),
    );
    // socat's OPENSSL client with the same certificate: the same subject.
    const socat = await runCommand("socat", [
      "-t",
      "5",
      "-",
      `OPENSSL:127.0.0.1:${server.port},cert=${certs.clientCert},key=${certs.clientKey},cafile=${certs.ca},commonname=localhost`,
    ]);
    assertEquals(
      envOf(new TextDecoder().decode(socat.stdout)).SSL_CLIENT_S_DN,
      theirs.SSL_CLIENT_DN,
      socat.stderr,
    );
    // TLS 1.2: the same, with OpenSSL's name for the cipher.
    const tls12 = envOf(
      (await sClient(server.port, ["-tls1_2", ...alice])).stdout,
    );
    assertEquals(tls12.SSL_PROTOCOL, "TLSv1.2");
    assertMatch(tls12.SSL_CIPHER, /^ECDHE-ECDSA-AES\d+-GCM-SHA\d+$/);

    // No certificate: certificate_required (116) from ours; stunnel
    // refuses too (its own alert); neither program runs.
    // (The node:tls adapter cannot send that alert on TLS 1.3, a
    // documented limit: the session is cut.)
    const bare = await sClient(server.port, []);
    assertMatch(
      bare.stderr,
      TLS_ENGINE === "node"
        ? /alert certificate required|unexpected eof/
        : /alert certificate required/,
    );
    assertEquals(bare.stdout, "");
    assertEquals((await sClient(stunnelPort, [])).stdout, "");
    await server.proc.waitForStderr(
      /TLS handshake failed: .*no certificates|: no client certificate/,
    );

    // A certificate of another CA: refused by both, after our handshake.
    const mallory = ["-cert", certs.strangerCert, "-key", certs.strangerKey];
    assertEquals((await sClient(server.port, mallory)).stdout, "");
    assertEquals((await sClient(stunnelPort, mallory)).stdout, "");
    await server.proc.waitForStderr(
      /refused 127\.0\.0\.1:\d+: client certificate CN=mallory refused: not signed by a client CA/,
    );
  },
});

Deno.test({
  name:
    "exec.ts --client-cert optional lets a client without a certificate in (SSL_CLIENT_VERIFY=NONE); --client-subject refuses a subject that does not match",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const env = program("env.sh");
    const permissions = [
      ...execPermissions(env),
      `--allow-read=${env},${certs.dir}`,
    ];
    {
      await using server = await startExec(
        [env],
        tlsFlags(certs, "--client-cert", "optional"),
        { permissions },
      );
      const none = envOf((await sClient(server.port, [])).stdout);
      assertEquals(none.SSL_CLIENT_VERIFY, "NONE");
      assertEquals(none.SSL_CLIENT_S_DN, undefined);
      const alice = envOf(
        (await sClient(server.port, [
          "-cert",
          certs.clientCert,
          "-key",
          certs.clientKey,
        ])).stdout,
      );
      assertEquals(alice.SSL_CLIENT_VERIFY, "SUCCESS");
    }
    await using server = await startExec(
      [env],
      tlsFlags(certs, "--client-subject", "CN=bob$"),
      { permissions },
    );
    const alice = await sClient(server.port, [
      "-cert",
      certs.clientCert,
      "-key",
      certs.clientKey,
    ]);
    assertEquals(alice.stdout, "");
    await server.proc.waitForStderr(
      /refused .*: client certificate C=DE, O="Example, Inc.", CN=alice refused: subject does not match \/CN=bob\$\//,
    );
  },
});

Deno.test({
  name:
    "--client-cert and --client-subject need --client-ca; --client-ca needs --tls",
  async fn() {
    for (
      const [args, error] of [
        [["--client-ca", "ca.pem"], /--client-ca needs --tls/],
        [
          ["--tls", "--cert", "c", "--key", "k", "--client-cert", "optional"],
          /--client-cert needs --client-ca FILE/,
        ],
        [
          ["--tls", "--cert", "c", "--key", "k", "--client-cert", "maybe"],
          /invalid value 'maybe' for --client-cert: expected required or optional/,
        ],
      ] as const
    ) {
      const { code, stderr } = await runScript("servers/echo.ts", {
        permissions: ["--allow-net=127.0.0.1:0"],
        args: ["--hostname", "127.0.0.1", "--port", "0", ...args],
      });
      assertEquals(code, 2, stderr);
      assertMatch(stderr, error);
    }
  },
});

/** An echo server over TLS from socat, asking for a client certificate. */
async function socatMutualEcho(certs: TestCertificates) {
  const port = freePort();
  const proc = spawn("socat", {
    args: [
      `OPENSSL-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,cert=${certs.cert},key=${certs.key},cafile=${certs.ca},verify=1`,
      "EXEC:cat",
    ],
  });
  await waitListening(proc.child.pid, { port });
  return { port, [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose]() };
}

Deno.test({
  name:
    "connect.ts --cert/--key is let in by socat verify=1, haproxy verify required, stunnel verify=2 and echo.ts --client-ca; a stranger's certificate or none is refused by each, an error",
  ignore: noOpenssl || missing("socat", "haproxy", "stunnel"),
  async fn() {
    await using certs = await makeCertificates();
    await using socat = await socatMutualEcho(certs);
    const combined = `${certs.dir}/combined.pem`;
    await Deno.writeTextFile(
      combined,
      (await Deno.readTextFile(certs.cert)) +
        (await Deno.readTextFile(certs.key)),
    );
    const plainPort = freePort();
    await using plain = spawn("socat", {
      args: [
        `TCP-LISTEN:${plainPort},bind=127.0.0.1,reuseaddr,fork`,
        "EXEC:cat",
      ],
    });
    await waitListening(plain.child.pid, { port: plainPort });
    const haproxyPort = freePort();
    await using _haproxy = await startHaproxy(
      haproxyPort,
      `listen mtls
  bind 127.0.0.1:${haproxyPort} ssl crt ${combined} verify required ca-file ${certs.ca}
  server echo 127.0.0.1:${plainPort}
`,
    );
    const stunnelPort = freePort();
    await using _stunnel = await startStunnel(
      stunnelPort,
      `cert = ${certs.cert}\nkey = ${certs.key}\nCAfile = ${certs.ca}\nverify = 2\nexec = /bin/cat\nexecArgs = cat`,
    );
    const connect = (port: number, cert: string, key: string) =>
      runScript("clients/connect.ts", {
        permissions: ["--allow-net=127.0.0.1", `--allow-read=${certs.dir}`],
        args: [
          "--tls",
          "--ca",
          certs.ca,
          "--servername",
          "localhost",
          ...(cert ? ["--cert", cert, "--key", key] : []),
          "127.0.0.1",
          String(port),
        ],
        input: "hello\n",
      });
    await using ours = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${certs.dir}`],
      args: ["--hostname", "127.0.0.1", "--port", "0", ...tlsFlags(certs)],
    });
    for (const port of [socat.port, haproxyPort, stunnelPort, ours.port]) {
      const alice = await connect(port, certs.clientCert, certs.clientKey);
      assertEquals(alice.stdout, "hello\n", `${port}: ${alice.stderr}`);
      assertEquals(alice.code, 0);
      const mallory = await connect(
        port,
        certs.strangerCert,
        certs.strangerKey,
      );
      assertEquals(mallory.stdout, "", `${port}: ${mallory.stderr}`);
      // An error, not an empty answer: an alert, or the connection cut.
      assertEquals(mallory.code, 1, `${port}: ${mallory.stderr}`);
      const none = await connect(port, "", "");
      assertEquals(none.stdout, "", `${port}: ${none.stderr}`);
      assertEquals(none.code, 1);
      assertMatch(
        none.stderr,
        port === ours.port && TLS_ENGINE === "node"
          // The node:tls adapter cannot send certificate_required on TLS
          // 1.3 (a documented limit): the client sees the session cut.
          ? /^error: .*127\.0\.0\.1:\d+: .*\n?$/m
          : /error: 127\.0\.0\.1:\d+: the server refused the TLS session \(CertificateRequired\): it wants a client certificate\n?$/,
      );
    }
  },
});

for (const engine of ["native", "node"] as const) {
  Deno.test({
    name:
      `the ${engine} engine asks for a client certificate and reports it; on TLS 1.2 it refuses none with handshake_failure and a stranger's with unknown_ca, as OpenSSL servers do`,
    ignore: noOpenssl,
    async fn() {
      await using certs = await makeCertificates();
      const ca = await Deno.readTextFile(certs.ca);
      const context = createSecureContext({
        cert: await Deno.readTextFile(certs.cert),
        key: await Deno.readTextFile(certs.key),
        ca,
      });
      const request = {
        mode: "required" as const,
        ca: [new X509Certificate(ca)],
      };
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const handshake = async (args: string[]) => {
        const client = sClient(listener.addr.port, args);
        const raw = await listener.accept();
        const conn: Deno.TlsConn & TlsConnInfo = engine === "native"
          ? NativeTlsConn.start(raw, context, request)!
          : new NodeTlsConn(raw, { server: context, clientCerts: request });
        assert(conn, "this runtime has the native engine");
        const outcome = await conn.handshake().then(
          () => conn.handshakeFacts(),
          (error: Error) => error.message,
        );
        conn.close();
        return { outcome, client: await client };
      };
      const alice = ["-cert", certs.clientCert, "-key", certs.clientKey];
      const mallory = ["-cert", certs.strangerCert, "-key", certs.strangerKey];
      for (const version of ["-tls1_3", "-tls1_2"]) {
        const { outcome } = await handshake([version, ...alice]);
        assert(typeof outcome === "object", String(outcome));
        assert(outcome.peerCertificate, "alice's certificate");
        assertEquals(outcome.verifyError, undefined);
      }
      // TLS 1.3: encrypted, so the engine lets it finish and says why.
      const late = (await handshake(["-tls1_3", ...mallory])).outcome;
      assert(typeof late === "object", String(late));
      assertEquals(late.verifyError, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
      const bare13 = await handshake(["-tls1_3"]);
      assertEquals(bare13.outcome, "peer sent no certificates");
      // The adapter cannot send it: by then the handshake keys encrypt
      // every record, and `node:tls` drops the engine's own (a plaintext
      // alert is "bad record type" to OpenSSL).
      if (engine === "native") {
        assertMatch(bare13.client.stderr, /alert certificate required/);
      }
      // TLS 1.2: refused in the handshake, with OpenSSL's alerts.
      const stranger = await handshake(["-tls1_2", ...mallory]);
      assertEquals(
        stranger.outcome,
        "client certificate CN=mallory refused: not signed by a client CA",
      );
      assertMatch(stranger.client.stderr, /alert unknown ca/);
      const bare12 = await handshake(["-tls1_2"]);
      assertEquals(bare12.outcome, "no client certificate");
      assertMatch(bare12.client.stderr, /alert handshake failure/);
    },
  });
}

/** The serial of the certificate a TLS server on `port` presents. */
async function servedSerial(port: number): Promise<string> {
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `openssl s_client -connect 127.0.0.1:${port} </dev/null 2>/dev/null | openssl x509 -noout -serial`,
    ],
    stdout: "piped",
  });
  return new TextDecoder().decode((await child.output()).stdout).trim();
}

/**
 * The server's certificate and key copied into `live/` under the
 * certificates' directory, where a test renews them; that directory.
 */
async function liveServerFiles(certs: TestCertificates): Promise<string> {
  const dir = `${certs.dir}/live`;
  await Deno.mkdir(dir);
  await Deno.copyFile(certs.cert, `${dir}/cert.pem`);
  await Deno.copyFile(certs.key, `${dir}/key.pem`);
  return dir;
}

/**
 * Renews the server's certificate in `dir` as certbot does: the same key,
 * a new certificate (serial `serial`) written beside, renamed into place.
 */
async function renewServerCertificate(
  certs: TestCertificates,
  dir: string,
  serial: number,
): Promise<void> {
  const renewed = await runCommand("openssl", [
    "x509",
    "-req",
    "-in",
    `${certs.dir}/server.csr`,
    "-extfile",
    `${certs.dir}/server.ext`,
    "-days",
    "2",
    "-CA",
    certs.ca,
    "-CAkey",
    `${certs.dir}/ca.key`,
    "-set_serial",
    String(serial),
    "-out",
    `${dir}/cert.pem.new`,
  ]);
  assertEquals(renewed.code, 0, renewed.stderr);
  await Deno.rename(`${dir}/cert.pem.new`, `${dir}/cert.pem`);
}

/** Sends `hi\n` through `port`; what came back first ("" for nothing or a reset). */
async function exchangeHi(port: number): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode("hi\n"));
  const buffer = new Uint8Array(16);
  const n = await conn.read(buffer).catch(() => null);
  return n === null ? "" : new TextDecoder().decode(buffer.subarray(0, n));
}

Deno.test({
  name:
    "SIGHUP: new handshakes get the certificate renamed into place, connections in flight go on; a mismatched pair is one error line and the old stays",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const dir = await liveServerFiles(certs);
    await using server = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${dir}`],
      args: [
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--tls",
        "--cert",
        `${dir}/cert.pem`,
        "--key",
        `${dir}/key.pem`,
      ],
    });
    const before = await servedSerial(server.port);
    // A connection in flight across the reload.
    using inFlight = await Deno.connectTls({
      hostname: "localhost",
      port: server.port,
      caCerts: [await Deno.readTextFile(certs.ca)],
    });
    await inFlight.handshake();
    // certbot's way: a new certificate (same key, new serial) written
    // beside, renamed into place, then HUP.
    await renewServerCertificate(certs, dir, 4242);
    Deno.kill(server.proc.child.pid, "SIGHUP");
    await server.proc.waitForStderr(/SIGHUP: TLS files reloaded/);
    assertEquals(await servedSerial(server.port), "serial=1092");
    assert(before !== "serial=1092", before);
    await inFlight.write(new TextEncoder().encode("still here\n"));
    const buffer = new Uint8Array(64);
    const n = await inFlight.read(buffer);
    assertEquals(
      new TextDecoder().decode(buffer.subarray(0, n!)),
      "still here\n",
    );

    // The key of another certificate: one error line, the renewed one stays.
    await Deno.copyFile(certs.clientKey, `${dir}/key.pem.new`);
    await Deno.rename(`${dir}/key.pem.new`, `${dir}/key.pem`);
    Deno.kill(server.proc.child.pid, "SIGHUP");
    const [line] = await server.proc.waitForStderr(
      /^error: .*; keeping the TLS files in use$/,
    );
    assertMatch(line, /certificate and key do not match/);
    assertEquals(await servedSerial(server.port), "serial=1092");
  },
});

Deno.test({
  name:
    "forward.ts --to-tls --to-cert/--to-key is let in by socat verify=1; stunnel as a client with a certificate is let into echo.ts --client-ca",
  ignore: noOpenssl || missing("socat", "stunnel"),
  async fn() {
    await using certs = await makeCertificates();
    await using socat = await socatMutualEcho(certs);
    const forward = (...extra: string[]) =>
      startServer("servers/forward.ts", {
        permissions: ["--allow-net=127.0.0.1", `--allow-read=${certs.dir}`],
        args: [
          "tcp://127.0.0.1:0",
          `tcp://127.0.0.1:${socat.port}`,
          "--servername",
          "localhost",
          "--to-tls",
          "--ca",
          certs.ca,
          ...extra,
        ],
      });
    {
      await using withCert = await forward(
        "--to-cert",
        certs.clientCert,
        "--to-key",
        certs.clientKey,
      );
      assertEquals(
        await exchangeHi(withCert.port),
        "hi\n",
        withCert.proc.stderrLines.join("\n"),
      );
    }
    {
      await using without = await forward();
      assertEquals(await exchangeHi(without.port), "");
    }

    // stunnel's client side, presenting alice's certificate to echo.ts.
    await using echo = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${certs.dir}`],
      args: ["--hostname", "127.0.0.1", "--port", "0", ...tlsFlags(certs)],
    });
    const stunnelPort = freePort();
    await using _stunnel = await startStunnel(
      stunnelPort,
      `client = yes\nconnect = 127.0.0.1:${echo.port}\ncert = ${certs.clientCert}\nkey = ${certs.clientKey}\nCAfile = ${certs.ca}\nverify = 2`,
    );
    assertEquals(await exchangeHi(stunnelPort), "hi\n");
    await echo.proc.waitForStderr(
      /accepted 127\.0\.0\.1:\d+ \(certificate C=DE, O="Example, Inc\.", CN=alice\)/,
    );
  },
});

Deno.test({
  name:
    "inetd.ts --conf --tls: one SIGHUP reads the file and the TLS files; a line it adds serves the new certificate, and so does the one that stayed",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const dir = await liveServerFiles(certs);
    const [first, second] = [freePort(), freePort()];
    const conf = `${certs.dir}/inetd.conf`;
    const line = (port: number) =>
      `127.0.0.1:${port} stream tcp nowait root internal echo\n`;
    await Deno.writeTextFile(conf, line(first));
    await using inetd = await startServer("servers/inetd.ts", {
      permissions: [
        "--unstable-net",
        "--allow-net",
        `--allow-read=${conf},/etc/services,${dir}`,
        "--allow-sys=uid,gid,userInfo",
      ],
      args: [
        "--conf",
        conf,
        "--tls",
        "--cert",
        `${dir}/cert.pem`,
        "--key",
        `${dir}/key.pem`,
      ],
    });
    const before = await servedSerial(first);
    await renewServerCertificate(certs, dir, 4243);
    await Deno.writeTextFile(conf, line(first) + line(second));
    Deno.kill(inetd.proc.child.pid, "SIGHUP");
    await inetd.proc.waitForStderr(/reloaded .*: 1 added, 0 removed/);
    await inetd.proc.waitForStderr(/SIGHUP: TLS files reloaded/);
    assert(before !== "serial=1093", before);
    assertEquals(await servedSerial(first), "serial=1093");
    assertEquals(await servedSerial(second), "serial=1093");
  },
});

Deno.test({
  name:
    "echo.ts --workers 2 --tls: after SIGHUP's one line every thread serves the renewed certificate",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const dir = await liveServerFiles(certs);
    const mirror = Deno.env.get("JSR_URL")?.startsWith("file:")
      ? `,${new URL(Deno.env.get("JSR_URL")!).pathname}`
      : "";
    const port = freePort();
    await using server = await startServer("servers/echo.ts", {
      permissions: [
        `--allow-net=127.0.0.1:${port}`,
        `--allow-read=servers/echo.ts,mod.ts,lib${mirror},${dir}`,
      ],
      args: [
        "--hostname",
        "127.0.0.1",
        "--port",
        String(port),
        "--workers",
        "2",
        "--tls",
        "--cert",
        `${dir}/cert.pem`,
        "--key",
        `${dir}/key.pem`,
      ],
    });
    await renewServerCertificate(certs, dir, 4244);
    Deno.kill(server.proc.child.pid, "SIGHUP");
    await server.proc.waitForStderr(/SIGHUP: TLS files reloaded/);
    // The kernel spreads connections over both threads' sockets: each
    // must have the new certificate by the time that line is out.
    for (let i = 0; i < 8; i++) {
      assertEquals(await servedSerial(port), "serial=1094");
    }
  },
});

Deno.test({
  name:
    "forward.ts --to-tls: SIGHUP reads --ca, --to-cert and --to-key again; the connections after it present the new certificate",
  ignore: noOpenssl || missing("socat"),
  async fn() {
    await using certs = await makeCertificates();
    await using socat = await socatMutualEcho(certs);
    const dir = `${certs.dir}/live`;
    await Deno.mkdir(dir);
    // A certificate socat does not trust, to begin with.
    await Deno.copyFile(certs.strangerCert, `${dir}/client.pem`);
    await Deno.copyFile(certs.strangerKey, `${dir}/client.key`);
    await using forward = await startServer("servers/forward.ts", {
      permissions: ["--allow-net=127.0.0.1", `--allow-read=${certs.dir}`],
      args: [
        "tcp://127.0.0.1:0",
        `tcp://127.0.0.1:${socat.port}`,
        "--to-tls",
        "--servername",
        "localhost",
        "--ca",
        certs.ca,
        "--to-cert",
        `${dir}/client.pem`,
        "--to-key",
        `${dir}/client.key`,
      ],
    });
    assertEquals(await exchangeHi(forward.port), "");
    // Key first, then certificate: a HUP in between would find them
    // mismatched and keep the old pair (one error line).
    await Deno.copyFile(certs.clientKey, `${dir}/client.key.new`);
    await Deno.rename(`${dir}/client.key.new`, `${dir}/client.key`);
    await Deno.copyFile(certs.clientCert, `${dir}/client.pem.new`);
    await Deno.rename(`${dir}/client.pem.new`, `${dir}/client.pem`);
    Deno.kill(forward.proc.child.pid, "SIGHUP");
    await forward.proc.waitForStderr(/SIGHUP: TLS files reloaded/);
    assertEquals(await exchangeHi(forward.port), "hi\n");
  },
});

Deno.test("echo.ts --client-ca: a stranger whose first bytes come only after the refusal still gets an error, never a clean empty end (both engines)", async () => {
  // The TLS 1.3 refusal comes after the handshake, when the engine can no
  // longer send an alert: closed before the client's first bytes arrive,
  // the socket only ended (a FIN), and the client took that for an empty
  // answer, exit 0. A plaintext alert goes first now.
  await using certs = await makeCertificates();
  for (const engine of ["native", "node"]) {
    await using ours = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${certs.dir}`],
      args: [
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        ...tlsFlags(certs, "--tls-engine", engine),
      ],
    });
    const client = spawn("clients/connect.ts", {
      permissions: ["--allow-net=127.0.0.1", `--allow-read=${certs.dir}`],
      args: [
        "--tls",
        "--ca",
        certs.ca,
        "--servername",
        "localhost",
        "--cert",
        certs.strangerCert,
        "--key",
        certs.strangerKey,
        "127.0.0.1",
        String(ours.port),
      ],
      stdin: true,
    });
    // Only once the server has refused it does the client send anything.
    await ours.proc.waitForStderr(/client certificate .* refused/);
    const stdin = client.child.stdin.getWriter();
    await stdin.write(new TextEncoder().encode("hello\n")).catch(() => {});
    await stdin.close().catch(() => {});
    const { code, stdout, stderr } = await client.finished();
    assertEquals(stdout, "", engine);
    assertEquals(code, 1, `${engine}: ${stderr}`);
  }
});
