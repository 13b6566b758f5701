/**
 * servers/forward.ts with real peers on either side: socat and nc as
 * clients and targets, TCP to Unix and back, TLS checked by
 * `openssl s_client` and spoken to `socat OPENSSL-LISTEN`, the PROXY
 * protocol against haproxy both ways, 64 clients of 1 MB each, and peers
 * that reset mid-stream. The forwarder runs as a subprocess with its
 * header's permissions.
 */

import {
  assert,
  assertEquals,
  assertLess,
  assertMatch,
  assertStringIncludes,
} from "@std/assert";
import { concat } from "@std/bytes";
import { readExact, writeAll } from "../mod.ts";
import { startHaproxy } from "./_haproxy.ts";
import {
  assertSameBytes,
  descriptorCount,
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
  startServer,
} from "./_helpers.ts";

const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** A socat listener (`-d -d` says when it listens). */
async function socatListener(
  args: string[],
): Promise<ScriptProcess & AsyncDisposable> {
  const proc = spawn("socat", { args: ["-d", "-d", ...args] });
  await proc.waitForStderr(/listening on/);
  return proc;
}

/** An echo target in this process. */
function echoTarget() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const handlers: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      handlers.push((async () => {
        try {
          const buffer = new Uint8Array(64 * 1024);
          for (let n; (n = await conn.read(buffer)) !== null;) {
            await writeAll(conn, buffer.subarray(0, n));
          }
          await conn.closeWrite();
        } catch {
          // Reset.
        } finally {
          conn.close();
        }
      })());
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    address: `127.0.0.1:${listener.addr.port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      await Promise.allSettled(handlers);
    },
  };
}

Deno.test({
  name:
    "forward.ts between socat (client) and nc (target): both directions byte-exact, half-closed each on its own",
  ignore: missing("socat", "nc"),
  async fn() {
    const port = freePort();
    await using target = spawn("nc", {
      args: ["-l", "-v", "-N", "127.0.0.1", String(port)],
      stdin: true,
    });
    await target.waitForStderr(/Listening on/);
    await using forward = await startForward(`tcp://127.0.0.1:${port}`);
    const request = pseudoRandomBytes(300_000, 21);
    // Within one pipe buffer (64 KiB): nc has its whole stdin at once. A
    // larger answer races nc, which may quit once the network side is done
    // before it read the rest of its stdin (seen under load: 196,608 of
    // 200,000 bytes), which is nc's behaviour, not the forwarder's.
    const answer = pseudoRandomBytes(60_000, 22);
    // nc sends its answer and shuts down its writing (-N) at once;
    // socat sends the request and half-closes; each gets all of the other's.
    // (nc reads its stdin once connected: written meanwhile.)
    const writer = target.child.stdin.getWriter();
    // nc may go once both ends are done, before this last close: what
    // counts is that socat got every byte, checked below.
    const feeding = writer.write(answer).then(() => writer.close()).catch(
      () => {},
    );
    const client = await runCommand(
      "socat",
      ["-t", "5", "-", `TCP:127.0.0.1:${forward.port}`],
      request,
    );
    await feeding;
    assertEquals(client.code, 0, client.stderr);
    assertSameBytes(client.stdout, answer, "what socat got");
    // nc -l stays up after both ends are done: wait for the bytes instead.
    const got = () => target.stdoutChunks.reduce((n, c) => n + c.byteLength, 0);
    await target.until(() => got() >= request.byteLength, "all the request");
    assertSameBytes(concat(target.stdoutChunks), request, "what nc got");
    await forward.proc.waitForStderr(
      /\(300000 bytes in, 60000 bytes out\) .* (client|target) closed first$/,
    );
  },
});

Deno.test({
  name:
    "forward.ts between nc (client) and socat (target), and TCP to a socat Unix socket and back through a Unix listener",
  ignore: missing("socat", "nc"),
  async fn() {
    const port = freePort();
    await using _echo = await socatListener([
      `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`,
      "PIPE",
    ]);
    {
      await using forward = await startForward(`tcp://127.0.0.1:${port}`);
      const data = pseudoRandomBytes(100_000, 23);
      const nc = await runCommand("nc", [
        "-N",
        "127.0.0.1",
        String(forward.port),
      ], data);
      assertEquals(nc.code, 0, nc.stderr);
      assertSameBytes(nc.stdout, data, "what nc got back");
    }
    const dir = await Deno.makeTempDir({ prefix: "sockets-forward-" });
    try {
      const backendPath = `${dir}/echo.sock`;
      const frontPath = `${dir}/front.sock`;
      await using _unixEcho = await socatListener([
        `UNIX-LISTEN:${backendPath},fork`,
        "PIPE",
      ]);
      // TCP in front of a Unix socket...
      await using toUnix = await startForward(`unix:${backendPath}`, {
        permissions: [
          `--allow-net=127.0.0.1:0,unix:${backendPath}`,
          `--allow-read=${backendPath}`,
          `--allow-write=${backendPath}`,
        ],
      });
      // ...and a Unix socket in front of that TCP port.
      await using fromUnix = await startForward(
        `tcp://127.0.0.1:${toUnix.port}`,
        {
          listen: `unix:${frontPath}`,
          permissions: [
            `--allow-net=unix:${frontPath},127.0.0.1:${toUnix.port}`,
            `--allow-read=${frontPath}`,
            `--allow-write=${frontPath}`,
          ],
        },
      );
      const data = pseudoRandomBytes(100_000, 24);
      const socat = await runCommand(
        "socat",
        ["-t", "5", "-", `UNIX-CONNECT:${frontPath}`],
        data,
      );
      assertEquals(socat.code, 0, socat.stderr);
      assertSameBytes(socat.stdout, data, "unix -> tcp -> unix and back");
      await fromUnix.proc.waitForStderr(
        new RegExp(`to 127\\.0\\.0\\.1:${toUnix.port}, .* client closed first`),
      );
      await toUnix.proc.waitForStderr(
        new RegExp(`to ${backendPath}, .* closed first`),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "forward.ts --tls: openssl s_client verifies the certificate and talks through to a plain target",
  ignore: missing("openssl"),
  async fn() {
    await using certs = await makeCertificates();
    // A target that answers one line and closes.
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = listener.accept().then(async (conn) => {
      const line = decode(await readExact(conn, 6));
      await writeAll(conn, encode(`you said ${line}`));
      conn.close();
    });
    await using forward = await startForward(
      `tcp://127.0.0.1:${listener.addr.port}`,
      {
        args: ["--tls", "--cert", certs.cert, "--key", certs.key],
        permissions: [
          `--allow-net=127.0.0.1:0,127.0.0.1:${listener.addr.port}`,
          `--allow-read=${certs.cert},${certs.key}`,
        ],
      },
    );
    const { code, stdout, stderr } = await runCommand("openssl", [
      "s_client",
      "-connect",
      `127.0.0.1:${forward.port}`,
      "-servername",
      "localhost",
      "-CAfile",
      certs.ca,
      "-verify_return_error",
      "-ign_eof",
    ], "hello\n");
    await serving;
    const text = decode(stdout);
    assertEquals(code, 0, stderr);
    assertStringIncludes(text, "Verify return code: 0 (ok)");
    assertStringIncludes(text, "you said hello\n");
  },
});

Deno.test({
  name:
    "forward.ts --to-tls speaks TLS to socat OPENSSL-LISTEN, verifying it with --ca and --servername",
  ignore: missing("socat", "openssl"),
  async fn() {
    await using certs = await makeCertificates();
    const port = freePort();
    await using _tls = await socatListener([
      `OPENSSL-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,cert=${certs.cert},key=${certs.key},verify=0`,
      "PIPE",
    ]);
    await using forward = await startForward(`tcp://127.0.0.1:${port}`, {
      args: ["--to-tls", "--ca", certs.ca, "--servername", "localhost"],
      permissions: [
        `--allow-net=127.0.0.1:0,127.0.0.1:${port}`,
        `--allow-read=${certs.ca}`,
      ],
    });
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: forward.port,
    });
    const data = pseudoRandomBytes(200_000, 25);
    const reading = readExact(conn, data.byteLength);
    await writeAll(conn, data);
    assertSameBytes(await reading, data);
  },
});

for (const send of ["send-proxy", "send-proxy-v2"]) {
  Deno.test({
    name:
      `forward.ts --accept-proxy behind haproxy ${send}: logs the client haproxy accepted, not haproxy`,
    ignore: missing("haproxy"),
    async fn() {
      await using echo = echoTarget();
      await using forward = await startForward(`tcp://${echo.address}`, {
        args: ["--accept-proxy"],
      });
      const port = freePort();
      await using _haproxy = await startHaproxy(
        port,
        `frontend f
  bind 127.0.0.1:${port}
  default_backend b
backend b
  server s 127.0.0.1:${forward.port} ${send}
`,
      );
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const reading = readAll(conn);
      await writeAll(conn, encode("through haproxy"));
      await conn.closeWrite();
      assertEquals(decode(await reading), "through haproxy");
      // The TCP peer is haproxy; the address logged is ours, from the header.
      const line = await forward.proc.waitForStderr(
        new RegExp(
          `^closed 127\\.0\\.0\\.1:\\d+ \\(15 bytes in, 15 bytes out\\) for 127\\.0\\.0\\.1:${
            localPort(conn)
          } \\(PROXY v${send === "send-proxy" ? 1 : 2}\\) to ${echo.address}, `,
        ),
      );
      assert(line);
    },
  });
}

for (const version of [1, 2]) {
  Deno.test({
    name:
      `forward.ts --send-proxy v${version} in front of haproxy accept-proxy: haproxy believes the original client`,
    ignore: missing("haproxy"),
    async fn() {
      // haproxy accepts our header and passes on what it believed (its own
      // send-proxy) to this target, which reads it.
      using target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const seen = target.accept().then(async (conn) => {
        try {
          return decode(await readAll(conn));
        } finally {
          conn.close();
        }
      });
      const port = freePort();
      await using _haproxy = await startHaproxy(
        port,
        `frontend f
  bind 127.0.0.1:${port} accept-proxy
  default_backend b
backend b
  server s 127.0.0.1:${target.addr.port} send-proxy
`,
      );
      await using forward = await startForward(`tcp://127.0.0.1:${port}`, {
        args: ["--send-proxy", `v${version}`],
      });
      using conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: forward.port,
      });
      await writeAll(conn, encode("payload"));
      await conn.closeWrite();
      assertEquals(
        await seen,
        `PROXY TCP4 127.0.0.1 127.0.0.1 ${
          localPort(conn)
        } ${forward.port}\r\npayload`,
      );
    },
  });
}

Deno.test({
  name:
    "forward.ts carries 64 clients x 1 MB each way byte-exact to a real echo server",
  async fn() {
    await using echo = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1:0"],
      args: ["--hostname", "127.0.0.1", "--port", "0"],
    });
    await using forward = await startForward(`tcp://127.0.0.1:${echo.port}`);
    await Promise.all(
      Array.from({ length: 64 }, async (_, i) => {
        const data = pseudoRandomBytes(1024 * 1024, 100 + i);
        using conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: forward.port,
        });
        const reading = readAll(conn);
        await writeAll(conn, data);
        await conn.closeWrite();
        assertSameBytes(await reading, data, `client ${i}`);
      }),
    );
    await forward.proc.until(
      () =>
        forward.proc.stderrLines.filter((l) =>
          /\(1048576 bytes in, 1048576 bytes out\) .* client closed first$/
            .test(l)
        ).length === 64,
      "64 closing lines",
    );
  },
});

Deno.test({
  name:
    "forward.ts: a target that resets mid-stream (socat, linger=0) closes the client at once; descriptors back to where they were",
  ignore: missing("socat"),
  async fn() {
    const port = freePort();
    // Reads 100 bytes, answers, and its socket closes with a reset (after
    // a moment: a reset throws away what the forwarder has not read yet).
    await using _target = await socatListener([
      `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,linger=0`,
      "SYSTEM:head -c 100 >/dev/null; echo partial; sleep 0.3",
    ]);
    await using forward = await startForward(`tcp://127.0.0.1:${port}`);
    const pid = forward.proc.child.pid;
    const baseline = descriptorCount(pid);
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: forward.port,
    });
    const sending = (async () => {
      const chunk = pseudoRandomBytes(16 * 1024, 26);
      try {
        while (true) await writeAll(conn, chunk);
      } catch {
        // Closed by the forwarder.
      }
    })();
    assertEquals(decode(await readExact(conn, 8)), "partial\n");
    const began = Date.now();
    await sending;
    assertLess(Date.now() - began, 3000);
    assertMatch(
      (await forward.proc.waitForStderr(
        new RegExp(`^closed 127\\.0\\.0\\.1:${localPort(conn)} .*`),
      ))[0],
      /, target reset$/,
    );
    assertEquals(await settledDescriptorCount(pid, baseline), baseline);
  },
});

Deno.test({
  name:
    "forward.ts: a client that resets mid-stream (socat, linger=0) closes the target at once; descriptors back to where they were",
  ignore: missing("socat"),
  async fn() {
    let closedAt = 0;
    using target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const reading = target.accept().then(async (conn) => {
      try {
        await readAll(conn);
      } catch {
        // A reset is an end too.
      } finally {
        closedAt = Date.now();
        conn.close();
      }
    });
    await using forward = await startForward(
      `tcp://127.0.0.1:${target.addr.port}`,
    );
    const pid = forward.proc.child.pid;
    const baseline = descriptorCount(pid);
    await using client = spawn("socat", {
      args: ["-u", "OPEN:/dev/zero", `TCP:127.0.0.1:${forward.port},linger=0`],
    });
    await forward.proc.waitForStderr(/^accepted 127\.0\.0\.1:\d+/);
    await new Promise((r) => setTimeout(r, 300));
    const killedAt = Date.now();
    client.kill("SIGKILL");
    await reading;
    assertLess(closedAt - killedAt, 2000);
    assertMatch(
      (await forward.proc.waitForStderr(/^closed 127\.0\.0\.1:\d+ .*/))[0],
      /, client reset$/,
    );
    assertEquals(await settledDescriptorCount(pid, baseline), baseline);
  },
});
