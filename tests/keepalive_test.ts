import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertMatch,
  assertThrows,
} from "@std/assert";
import {
  getKeepAlive,
  KeepAliveError,
  parseCommandLine,
  serve,
  serverFlags,
  serverOptionsFromFlags,
  setKeepAlive,
  silentLog,
  UsageError,
} from "../mod.ts";
import { keepAliveFlag } from "../lib/server_cli.ts";
import {
  missing,
  runCommand,
  runScript,
  ScriptProcess,
  spawn,
  startServer,
  tlsEngineOption,
} from "./_helpers.ts";

const SCRIPT = "servers/keepalive.ts";
/** The least privilege for tuning, as the script's header gives it. */
const FFI = `--allow-ffi=/lib/${
  Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"
}-linux-gnu/libc.so.6`;

function notRoot(): boolean {
  if (Deno.uid() === 0) return false;
  console.error("SKIP: network namespaces need root (CI runs as root)");
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("setKeepAlive() tunes the accepted socket and leaves its peer alone (IPv4, IPv6)", async () => {
  for (const hostname of ["127.0.0.1", "::1"]) {
    using listener = Deno.listen({ hostname, port: 0 });
    using client = await Deno.connect({
      ...(listener.addr as Deno.NetAddr),
      transport: "tcp",
    });
    using accepted = await listener.accept();
    const before = getKeepAlive(client);
    setKeepAlive(accepted, { idle: 2, interval: 3, count: 4 });
    assertEquals(getKeepAlive(accepted), {
      enable: true,
      idle: 2,
      interval: 3,
      count: 4,
    });
    assertEquals(getKeepAlive(client), before);
    assertEquals(before.enable, false);
    setKeepAlive(accepted, false);
    assertEquals(getKeepAlive(accepted).enable, false);
  }
});

Deno.test("setKeepAlive() tunes the right socket among many, through churn", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const addr = {
    ...(listener.addr as Deno.NetAddr),
    transport: "tcp" as const,
  };
  const pairs: { client: Deno.Conn; accepted: Deno.Conn; idle: number }[] = [];
  const open = async (idle: number) => {
    const client = await Deno.connect(addr);
    const accepted = await listener.accept();
    setKeepAlive(accepted, { idle });
    return { client, accepted, idle };
  };
  try {
    for (let i = 0; i < 60; i++) pairs.push(await open(100 + i));
    // Free descriptors in the middle, so new sockets reuse low numbers.
    for (let i = 5; i < 60; i += 7) {
      pairs[i].client.close();
      pairs[i].accepted.close();
      pairs[i] = await open(1000 + i);
    }
    for (const { client, accepted, idle } of pairs) {
      assertEquals(getKeepAlive(accepted).idle, idle);
      assertEquals(getKeepAlive(client).enable, false);
    }
  } finally {
    for (const { client, accepted } of pairs) {
      client.close();
      accepted.close();
    }
  }
});

Deno.test("setKeepAlive() finds an IPv4 client accepted on an IPv6 wildcard socket", async () => {
  using listener = Deno.listen({ hostname: "::", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  using _client = await Deno.connect({ hostname: "127.0.0.1", port });
  using accepted = await listener.accept();
  setKeepAlive(accepted, { idle: 5 });
  assertEquals(getKeepAlive(accepted).idle, 5);
  assertEquals(getKeepAlive(accepted).enable, true);
});

Deno.test("setKeepAlive() rejects out-of-range values with a KeepAliveError", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using _client = await Deno.connect({
    ...(listener.addr as Deno.NetAddr),
    transport: "tcp",
  });
  using accepted = await listener.accept();
  for (const bad of [{ idle: 0 }, { interval: 1.5 }, { count: 128 }]) {
    const error = assertThrows(
      () => setKeepAlive(accepted, bad),
      KeepAliveError,
    );
    assertEquals(error.reason, "invalid");
  }
});

Deno.test("serve() with keepAlive tunes every accepted TCP connection", async () => {
  const seen: unknown[] = [];
  await using server = serve({
    name: "probe",
    defaultPort: 0,
    async stream(conn) {
      seen.push(getKeepAlive(conn));
      await conn.write(new Uint8Array([1]));
    },
  }, {
    hostname: "127.0.0.1",
    port: 0,
    keepAlive: { idle: 7, interval: 2, count: 5 },
    log: silentLog,
  });
  for (let i = 0; i < 2; i++) {
    using conn = await Deno.connect({
      ...(server.addr as Deno.NetAddr),
      transport: "tcp",
    });
    await conn.read(new Uint8Array(1));
  }
  assertEquals(seen, [
    { enable: true, idle: 7, interval: 2, count: 5 },
    { enable: true, idle: 7, interval: 2, count: 5 },
  ]);
});

Deno.test({
  name:
    "serve() with keepAlive and TLS sets keepalive through libc (TlsConn has no setKeepAlive)",
  ignore: missing("openssl"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ka4-tls-" });
    try {
      // A CA and a leaf for 127.0.0.1 (rustls refuses a CA as the leaf).
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
      const f = (name: string) => `${dir}/${name}`;
      await Deno.writeTextFile(
        f("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
      );
      const commands = [
        ["req", "-x509", ...ec, "-nodes", "-days", "1", "-subj", "/CN=ka4"]
          .concat(["-keyout", f("ca.key"), "-out", f("ca.pem")]),
        ["req", ...ec, "-nodes", "-subj", "/CN=localhost"]
          .concat(["-keyout", f("key.pem"), "-out", f("leaf.csr")]),
        ["x509", "-req", "-in", f("leaf.csr"), "-CA", f("ca.pem")]
          .concat(["-CAkey", f("ca.key"), "-CAcreateserial", "-days", "1"])
          .concat(["-extfile", f("ext.cnf"), "-out", f("cert.pem")]),
      ];
      for (const args of commands) {
        const made = await runCommand("openssl", args);
        assertEquals(made.code, 0, made.stderr);
      }
      const ca = await Deno.readTextFile(f("ca.pem"));
      const cert = await Deno.readTextFile(`${dir}/cert.pem`);
      const key = await Deno.readTextFile(`${dir}/key.pem`);
      for (const keepAlive of [{}, { idle: 4, interval: 2, count: 6 }]) {
        const seen: unknown[] = [];
        await using server = serve({
          name: "probe",
          defaultPort: 0,
          async stream(conn) {
            seen.push(getKeepAlive(conn));
            await conn.write(new Uint8Array([1]));
          },
        }, {
          hostname: "127.0.0.1",
          port: 0,
          tls: { cert, key },
          ...tlsEngineOption(),
          keepAlive,
          log: silentLog,
        });
        const { port } = server.addr as Deno.NetAddr;
        using conn = await Deno.connectTls({
          hostname: "127.0.0.1",
          port,
          caCerts: [ca],
        });
        await conn.read(new Uint8Array(1));
        assertEquals(seen.length, 1);
        assertEquals((seen[0] as { enable: boolean }).enable, true);
        if ("idle" in keepAlive) {
          assertEquals(seen[0], { enable: true, ...keepAlive });
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("--keepalive parses on, off and IDLE[,INTERVAL[,COUNT]]", () => {
  assertEquals(keepAliveFlag("--keepalive", "on"), {});
  assertEquals(keepAliveFlag("--keepalive", "off"), undefined);
  assertEquals(keepAliveFlag("--keepalive", "60"), { idle: 60 });
  const { values } = parseCommandLine(["--keepalive", "1,1,3"], {
    usage: "",
    flags: serverFlags({ port: 0 }),
  });
  assertEquals(serverOptionsFromFlags(values).keepAlive, {
    idle: 1,
    interval: 1,
    count: 3,
  });
  for (const bad of ["", "1,,3", "1,1,3,4", "0", "1,1,200", "x", "1.5"]) {
    assertThrows(
      () => keepAliveFlag("--keepalive", bad),
      UsageError,
      undefined,
      `accepted '${bad}'`,
    );
  }
  assertThrows(
    () => serverOptionsFromFlags({ udp: true, keepalive: {} }),
    Error,
    "--keepalive applies to TCP only",
  );
});

Deno.test("keepalive.ts without --allow-ffi: one error line naming the flag, exit 1", async () => {
  const result = await runScript(SCRIPT, {
    permissions: ["--allow-net=127.0.0.1"],
    args: ["--port", "0", "127.0.0.1"],
  });
  assertEquals(result.code, 1);
  assertMatch(
    result.stderr,
    /^error: tuning keepalive needs --allow-ffi=\/\S+libc\.so\.6 \(Debian, Ubuntu; find yours with `ldconfig -p \| grep libc\.so\.6`\), or --allow-ffi\n?$/,
  );
  assertEquals(result.stdout, "");
});

Deno.test("keepalive.ts with FFI granted to a libc that is not there: one error line saying how to find it", async () => {
  const result = await runScript(SCRIPT, {
    permissions: [
      "--allow-net=127.0.0.1",
      "--allow-ffi=/lib/aarch64-linux-gnu/libc.so.6,/lib/x86_64-linux-gnu/libc.so.6,/lib64/libc.so.6,/usr/lib/libc.so.6"
        .split(
          ",",
        ).filter((path) => {
          try {
            Deno.statSync(path);
            return false;
          } catch {
            return true;
          }
        }).join(","),
    ],
    args: ["--port", "0", "127.0.0.1"],
  });
  assertEquals(result.code, 1, result.stderr);
  assertMatch(
    result.stderr,
    /^error: tuning keepalive: cannot open libc at \/\S+(, \/\S+)*: grant this machine's libc with --allow-ffi=PATH \(find yours with `ldconfig -p \| grep libc\.so\.6`\), or --allow-ffi\n?$/,
  );
});

Deno.test("echo.ts --keepalive 1,1,3 without --allow-ffi fails at start; --keepalive on needs no FFI", async () => {
  const tuned = await runScript("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args: ["--hostname", "127.0.0.1", "--port", "0", "--keepalive", "1,1,3"],
  });
  assertEquals(tuned.code, 1);
  assertMatch(tuned.stderr, /^error: tuning keepalive needs --allow-ffi\S*/);
  assertEquals(tuned.stderr.trim().split("\n").length, 1);

  // Plain keepalive: on, with the system's timing, seen by `ss` from outside.
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args: ["--hostname", "127.0.0.1", "--port", "0", "--keepalive", "on"],
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await conn.write(new TextEncoder().encode("x"));
  await conn.read(new Uint8Array(1));
  const ss = await runCommand("ss", [
    "-tnoH",
    "state",
    "established",
    `( sport = :${server.port} )`,
  ]);
  assertMatch(new TextDecoder().decode(ss.stdout), /timer:\(keepalive,/);
});

Deno.test("keepalive.ts: usage errors exit 2, --help exits 0", async () => {
  const bad = await runScript(SCRIPT, { args: ["--count", "0", "127.0.0.1"] });
  assertEquals(bad.code, 2);
  assertMatch(bad.stderr, /^error: invalid value '0' for --count/);
  const none = await runScript(SCRIPT, {});
  assertEquals(none.code, 2);
  const help = await runScript(SCRIPT, { args: ["--help"] });
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /--interval S/);
});

/** A capture of `lo` limited to one port, started before the script. */
async function captureLoopback(port: number): Promise<ScriptProcess> {
  const tcpdump = new ScriptProcess(
    new Deno.Command("tcpdump", {
      args: ["-i", "lo", "-n", "-l", "-tt", `tcp port ${port}`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  await tcpdump.waitForStderr(/listening on lo/);
  return tcpdump;
}

Deno.test({
  name:
    "keepalive.ts: tcpdump sees the server's probes about 1 s apart, and SIGINT ends it with 0",
  ignore: missing("tcpdump"),
  async fn() {
    // Not a free port check alone: tcpdump filters on it, so a port from
    // the ephemeral range nobody else binds in this run.
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    await using tcpdump = await captureLoopback(port);
    await using script = spawn(SCRIPT, {
      permissions: [`--allow-net=127.0.0.1:${port}`, FFI],
      args: ["--port", String(port), "127.0.0.1"],
    });
    await script.until(
      () => script.stdout === "connected\naccepted\n",
      "connected and accepted",
    );
    await sleep(5000);
    const stoppedAt = Date.now() / 1000;
    script.kill("SIGINT");
    const result = await script.finished();
    assertEquals(result.code, 0, result.stderr);
    assertEquals(result.stdout, "connected\naccepted\n");
    await sleep(200);
    tcpdump.kill("SIGTERM");
    const capture = await tcpdump.finished();

    // 1795617084.299123 IP 127.0.0.1.PORT > 127.0.0.1.46882: Flags [.], ack 1, ..., length 0
    const packets = capture.stdout.trim().split("\n").map((line) => {
      const m =
        /^(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): Flags \[([^\]]*)\].* length (\d+)/
          .exec(line);
      return m && {
        time: Number(m[1]),
        from: Number(m[2]),
        flags: m[4],
        length: Number(m[5]),
      };
    }).filter((p) => p !== null);
    const syn = packets.find((p) => p.flags === "S");
    assert(syn, `no SYN in:\n${capture.stdout}`);
    // Before the stop, the server sends nothing but its SYN-ACK and the
    // keepalive probes: empty ACKs from the server's port.
    const probes = packets.filter((p) =>
      p.from === port && p.flags === "." && p.length === 0 &&
      p.time < stoppedAt
    );
    const replies = packets.filter((p) =>
      p.from !== port && p.flags === "." && p.length === 0 &&
      p.time > probes[0]?.time && p.time < stoppedAt
    );
    const within5 = probes.filter((p) => p.time - syn.time <= 5.5);
    assert(
      within5.length >= 3,
      `${within5.length} probes in 5 s:\n${capture.stdout}`,
    );
    const first = probes[0].time - syn.time;
    assert(first > 0.6 && first < 2.5, `first probe after ${first} s`);
    for (let i = 1; i < probes.length; i++) {
      const gap = probes[i].time - probes[i - 1].time;
      assert(gap > 0.6 && gap < 1.8, `probe gap ${gap} s`);
    }
    assertGreaterOrEqual(
      replies.length,
      probes.length - 1,
      "probes went unanswered",
    );
    console.log(
      `probes at +${
        probes.map((p) => (p.time - syn.time).toFixed(3)).join(", +")
      } s after the SYN; ${replies.length} answered`,
    );
  },
});

let namespaceCount = 0;

/** Runs `ip ARGS`, throwing its stderr on failure. */
async function ip(...args: string[]): Promise<void> {
  const result = await runCommand("ip", args);
  if (result.code !== 0) {
    throw new Error(`ip ${args.join(" ")}: ${result.stderr.trim()}`);
  }
}

/**
 * Two network namespaces joined by a veth pair, deleted on dispose: the
 * server's end `server.address`, the client's `client.address`.
 */
async function namespacePair(family: 4 | 6): Promise<
  AsyncDisposable & {
    server: { ns: string; link: string; address: string };
    client: { ns: string; link: string; address: string };
  }
> {
  const id = `${Deno.pid % 100000}${namespaceCount++}`;
  const [serverAddress, clientAddress, prefix] = family === 4
    ? ["192.0.2.1", "192.0.2.2", 24]
    : ["fd00:ca4::1", "fd00:ca4::2", 64];
  const server = { ns: `ka4s${id}`, link: `ka4s${id}`, address: serverAddress };
  const client = { ns: `ka4c${id}`, link: `ka4c${id}`, address: clientAddress };
  const cleanup = async () => {
    for (const { ns } of [server, client]) {
      await runCommand("ip", ["netns", "del", ns]);
    }
    // Deleting a namespace destroys the veth end inside it; an end never
    // moved lives here.
    await runCommand("ip", ["link", "del", server.link]);
  };
  try {
    await ip("netns", "add", server.ns);
    await ip("netns", "add", client.ns);
    await ip(
      "link",
      "add",
      server.link,
      "type",
      "veth",
      "peer",
      "name",
      client.link,
    );
    for (const end of [server, client]) {
      await ip("link", "set", end.link, "netns", end.ns);
      await ip(
        "-n",
        end.ns,
        "addr",
        "add",
        `${end.address}/${prefix}`,
        "dev",
        end.link,
        ...(family === 6 ? ["nodad"] : []),
      );
      await ip("-n", end.ns, "link", "set", end.link, "up");
      await ip("-n", end.ns, "link", "set", "lo", "up");
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  return { server, client, [Symbol.asyncDispose]: cleanup };
}

for (const family of [4, 6] as const) {
  Deno.test({
    name:
      `echo.ts --keepalive 1,1,3 reports a peer cut off in another namespace dead after about 4 s (IPv${family})`,
    ignore: missing("ip", "socat") || notRoot(),
    async fn() {
      await using net = await namespacePair(family);
      const host = family === 4
        ? net.server.address
        : `[${net.server.address}]`;
      await using server = await startServer("servers/echo.ts", {
        prefix: ["ip", "netns", "exec", net.server.ns],
        permissions: [`--allow-net=${host}:15000`, FFI],
        args: [
          "--hostname",
          net.server.address,
          "--port",
          "15000",
          "--keepalive",
          "1,1,3",
        ],
      });
      await using client = new ScriptProcess(
        new Deno.Command("ip", {
          args: [
            "netns",
            "exec",
            net.client.ns,
            "socat",
            "-",
            `TCP${family === 6 ? "6" : ""}:${host}:15000`,
          ],
          stdin: "piped",
          stdout: "piped",
          stderr: "piped",
        }).spawn(),
      );
      const writer = client.child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("ping\n"));
      await client.until(() => client.stdout === "ping\n", "the echo");
      await server.proc.waitForStderr(/^accepted /);
      // The echo was the last traffic: from here the kernel waits idle
      // (1 s), then sends 3 probes 1 s apart, all lost.
      const cutAt = Date.now();
      await ip("-n", net.client.ns, "link", "set", net.client.link, "down");
      const [line] = await server.proc.waitForStderr(
        /^closed .*: peer dead \(keepalive probes unanswered\)$/,
        20_000,
      );
      const seconds = (Date.now() - cutAt) / 1000;
      assert(
        seconds > 2.5 && seconds < 9,
        `declared dead after ${seconds} s: ${line}`,
      );
      assertMatch(line, /\(5 bytes in, 5 bytes out\)/);
      console.log(`declared dead ${seconds.toFixed(2)} s after the cut`);
      // The server goes on serving, and stops cleanly.
      server.proc.kill("SIGTERM");
      assertEquals((await server.proc.finished()).code, 0);
      await writer.close().catch(() => {});
    },
  });
}

Deno.test({
  name:
    "keepalive.ts reports the peer dead on stderr when its loopback goes down (namespace)",
  ignore: missing("ip") || notRoot(),
  async fn() {
    const ns = `ka4l${Deno.pid % 100000}${namespaceCount++}`;
    await ip("netns", "add", ns);
    try {
      await ip("-n", ns, "link", "set", "lo", "up");
      await using script = spawn(SCRIPT, {
        prefix: ["ip", "netns", "exec", ns],
        permissions: ["--allow-net=127.0.0.1:12345", FFI],
        args: ["--count", "3", "127.0.0.1"],
      });
      await script.until(
        () => script.stdout === "connected\naccepted\n",
        "connected and accepted",
      );
      await ip("-n", ns, "link", "set", "lo", "down");
      const cutAt = Date.now();
      await script.waitForStderr(
        /: peer dead \(keepalive probes unanswered\)$/,
        20_000,
      );
      const seconds = (Date.now() - cutAt) / 1000;
      // Probes have run since accept, so death comes interval × count
      // (3 s) after the last answered one: at most idle + interval × count.
      assert(seconds > 1.5 && seconds < 9, `dead after ${seconds} s`);
      console.log(`declared dead ${seconds.toFixed(2)} s after lo went down`);
      script.kill("SIGINT");
      const result = await script.finished();
      assertEquals(result.code, 0, result.stderr);
    } finally {
      await runCommand("ip", ["netns", "del", ns]);
    }
  },
});
