/**
 * The clients against servers that answer wrongly or go away: the wrong
 * service on the port, a reset, a full Unix backlog, a closed UDP port, a
 * spoofed UDP reply. Each failure is one `error:` line naming the server.
 */
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
} from "@std/assert";
import { dateFromRfc868, NoReplyError } from "../mod.ts";
import { queryTime } from "../clients/time.ts";
import { sendUdpHello } from "../clients/udp.ts";
import {
  DAYTIME_MAX_BYTES,
  DaytimeReplyTooLongError,
  fetchDaytime,
} from "../clients/daytime.ts";
import {
  freePort,
  missing,
  runScript,
  spawn,
  startServer,
} from "./_helpers.ts";

/** A TCP server that sends `payload` to one client, then closes. */
function sendingServer(payload: Uint8Array) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = listener.accept().then(async (conn) => {
    try {
      for (let offset = 0; offset < payload.byteLength;) {
        offset += await conn.write(payload.subarray(offset));
      }
    } catch {
      // The client gave up first.
    } finally {
      conn.close();
    }
  });
  return {
    port: listener.addr.port,
    served,
    [Symbol.dispose]: () => listener.close(),
  };
}

/**
 * runScript, but killed after 20 s or 1 MiB of output (a client that never
 * stops copying a chargen stream must fail the test, not hang it or fill
 * its memory).
 */
async function runBounded(
  script: string,
  options: { permissions: string[]; args: string[] },
): Promise<{ code: number; stdout: string; stderr: string }> {
  const began = performance.now();
  await using proc = spawn(script, options);
  const watchdog = setInterval(() => {
    const bytes = proc.stdoutChunks.reduce((n, c) => n + c.byteLength, 0);
    if (bytes > 1024 * 1024 || performance.now() - began > 20_000) {
      proc.kill("SIGKILL");
    }
  }, 50);
  try {
    return await proc.finished();
  } finally {
    clearInterval(watchdog);
  }
}

/** stderr's lines, without the empty last one. */
const lines = (stderr: string) => stderr.trimEnd().split("\n");

Deno.test("time.ts refuses a daytime answer on the time port: more than 4 bytes is not a time", async () => {
  await using daytime = await startServer("servers/daytime.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  const run = await runScript("clients/time.ts", {
    permissions: [`--allow-net=127.0.0.1:${daytime.port}`],
    args: ["127.0.0.1", "--port", String(daytime.port)],
  });
  assertEquals(run.code, 1, run.stderr);
  assertEquals(run.stdout, "");
  assertEquals(lines(run.stderr), [
    `error: 127.0.0.1:${daytime.port} sent more than 4 bytes, so it is not an RFC 868 time server: check the address and --port`,
  ]);
});

Deno.test("queryTime() refuses 5 bytes and accepts exactly 4 before the close", async () => {
  {
    using server = sendingServer(
      new Uint8Array([0xec, 0x4f, 0x2b, 0x00, 0x0a]),
    );
    const error = await queryTime({ hostname: "127.0.0.1", port: server.port })
      .catch((e) => e);
    await server.served;
    assertMatch(String(error?.message), /sent more than 4 bytes/);
  }
  using server = sendingServer(new Uint8Array([0xec, 0x4f, 0x2b, 0x00]));
  const date = await queryTime({ hostname: "127.0.0.1", port: server.port });
  await server.served;
  assertEquals(date.getTime() % 1000, 0);
});

Deno.test("daytime.ts stops a chargen stream at 64 KiB with one error line, exit 1", async () => {
  await using chargen = await startServer("servers/chargen.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  const run = await runBounded("clients/daytime.ts", {
    permissions: [`--allow-net=127.0.0.1:${chargen.port}`],
    args: ["127.0.0.1", "--port", String(chargen.port)],
  });
  assertEquals(run.code, 1, run.stderr);
  assert(run.stdout.length <= DAYTIME_MAX_BYTES, `${run.stdout.length} bytes`);
  assertEquals(lines(run.stderr), [
    `error: 127.0.0.1:${chargen.port} sent more than 64 KiB, so it is not a daytime server (its answer is one line): check the address and --port`,
  ]);
});

Deno.test("fetchDaytime() keeps at most 64 KiB: one byte more is DaytimeReplyTooLongError", async () => {
  {
    using server = sendingServer(new Uint8Array(DAYTIME_MAX_BYTES).fill(65));
    const bytes = await fetchDaytime({
      hostname: "127.0.0.1",
      port: server.port,
    });
    await server.served;
    assertEquals(bytes.byteLength, DAYTIME_MAX_BYTES);
  }
  using server = sendingServer(new Uint8Array(DAYTIME_MAX_BYTES + 1).fill(65));
  const error = await fetchDaytime({ hostname: "127.0.0.1", port: server.port })
    .catch((e) => e);
  await server.served;
  assertInstanceOf(error, DaytimeReplyTooLongError);
});

Deno.test({
  name: "connect.ts: a reset while relaying names the server, exit 1",
  ignore: missing("perl"),
  async fn() {
    // Answers, then resets (SO_LINGER 0: an RST instead of a FIN).
    await using peer = spawn("perl", {
      args: [
        "-MSocket",
        "-e",
        `socket(S, PF_INET, SOCK_STREAM, 0) or die;
       bind(S, pack_sockaddr_in(0, inet_aton("127.0.0.1"))) or die;
       listen(S, 1) or die;
       my ($port) = unpack_sockaddr_in(getsockname(S));
       print STDERR "listening on 127.0.0.1:$port\\n";
       accept(C, S) or die;
       sysread(C, my $request, 100);
       syswrite(C, "partial\\n");
       select(undef, undef, undef, 0.3);
       setsockopt(C, SOL_SOCKET, SO_LINGER, pack("ii", 1, 0)) or die;
       close(C);`,
      ],
    });
    const port =
      (await peer.waitForStderr(/^listening on 127\.0\.0\.1:(\d+)/))[1];
    await using client = spawn("clients/connect.ts", {
      permissions: [`--allow-net=127.0.0.1:${port}`],
      args: ["127.0.0.1", port],
      stdin: true,
    });
    // stdin stays open: only the reset can end the relay.
    const writer = client.child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("hello\n"));
    const { code, stdout } = await client.finished();
    await writer.close().catch(() => {});
    assertEquals(code, 1, client.stderr);
    assertEquals(stdout, "partial\n");
    assertEquals(client.stderrLines.filter((l) => l.startsWith("error:")), [
      `error: connection to 127.0.0.1:${port} was reset by the peer`,
    ]);
  },
});

Deno.test("connect.ts --unix to a live socket whose backlog is full names the path and the fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sockets-backlog-" });
  const path = `${dir}/full.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const pending: Deno.UnixConn[] = [];
  try {
    // Never accepted: the backlog fills, then connecting would block.
    for (let i = 0; i < 5000; i++) {
      try {
        pending.push(await Deno.connect({ transport: "unix", path }));
      } catch (error) {
        assertInstanceOf(error, Deno.errors.WouldBlock);
        break;
      }
    }
    const run = await runScript("clients/connect.ts", {
      permissions: [
        `--allow-net=unix:${path}`,
        `--allow-read=${path}`,
        `--allow-write=${path}`,
      ],
      args: ["--unix", path],
    });
    assertEquals(run.code, 1, run.stderr);
    assertEquals(lines(run.stderr), [
      `error: cannot connect to ${path}: not accepting connections (its backlog is full); try again later`,
    ]);
  } finally {
    for (const conn of pending) conn.close();
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connect.ts --udp to a closed port says no reply came (a closed UDP port cannot be told from a silent server)", async () => {
  const port = freePort();
  const run = await runScript("clients/connect.ts", {
    permissions: ["--unstable-net", `--allow-net=0.0.0.0:0,127.0.0.1:${port}`],
    args: ["--udp", "--timeout", "0.3", "127.0.0.1", String(port)],
    input: "anyone?\n",
  });
  assertEquals(run.code, 0, run.stderr);
  assertEquals(lines(run.stderr), [
    `address 127.0.0.1:${port}`,
    `connected to 127.0.0.1:${port}`,
    `no reply from 127.0.0.1:${port} (over UDP a closed port and a silent server look alike)`,
  ]);
});

Deno.test("the UDP clients fail with the one NoReplyError", async () => {
  const port = freePort();
  const time = await queryTime({
    hostname: "127.0.0.1",
    port,
    transport: "udp",
    timeoutMs: 200,
  }).catch((e) => e);
  assertInstanceOf(time, NoReplyError);
  assertEquals(
    time.message,
    `no reply from 127.0.0.1:${port} within 0.2 s (UDP)`,
  );
  const hello = await sendUdpHello({ port, timeoutMs: 100, retries: 1 })
    .catch((e) => e);
  assertInstanceOf(hello, NoReplyError);
  assertEquals(hello.attempts, 2);
});

Deno.test("time.ts over UDP takes only the server's reply, not one from another address on its port", async () => {
  const server = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const { port } = server.addr as Deno.NetAddr;
  // Same port, another local address: not the server.
  const spoofer = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.2",
    port,
  });
  try {
    const answering = (async () => {
      const [, client] = await server.receive();
      await spoofer.send(new Uint8Array([0, 0, 0, 1]), client); // 1900
      await new Promise((resolve) => setTimeout(resolve, 100));
      await server.send(new Uint8Array([0xec, 0x4f, 0x2b, 0x00]), client);
    })();
    const date = await queryTime({
      hostname: "127.0.0.1",
      port,
      transport: "udp",
      timeoutMs: 3000,
    });
    await answering;
    assertEquals(date.toISOString(), dateFromRfc868(0xec4f2b00).toISOString());
  } finally {
    server.close();
    spoofer.close();
  }
});
