import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertMatch,
  assertNotMatch,
} from "@std/assert";
import {
  assertSameBytes,
  freePort,
  missing,
  pseudoRandomBytes,
  readAll,
  repoPath,
  runCommand,
  spawn,
  startServer,
  waitListening,
} from "./_helpers.ts";
import { runClient, SCRIPT, text } from "./_connect.ts";

const encoder = new TextEncoder();

// ---------------------------------------------------------------- our echo server

Deno.test("connect.ts relays 4 MB byte-exact through our echo server and exits 0", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  const data = pseudoRandomBytes(4 * 1024 * 1024, 3);
  const run = await runClient(
    [`--allow-net=127.0.0.1:${server.port}`],
    ["127.0.0.1", String(server.port)],
    [data.subarray(0, 1_000_000), data.subarray(1_000_000)],
  );
  assertEquals(run.code, 0, run.stderr);
  assertEquals(run.stdout.byteLength, data.byteLength);
  assertSameBytes(run.stdout, data, "stdout");
  assertEquals(run.lines, [
    `address 127.0.0.1:${server.port}`,
    `connected to 127.0.0.1:${server.port}`,
  ]);
});

Deno.test("connect.ts resolves localhost through /etc/hosts with least privilege", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  const p = server.port;
  const run = await runClient(
    [`--allow-net=localhost,127.0.0.1:${p},[::1]:${p}`],
    ["localhost", String(p)],
    ["hello\n"],
  );
  assertEquals(run.code, 0, run.stderr);
  assertEquals(text(run.stdout), "hello\n");
  assert(run.lines.includes(`address 127.0.0.1:${p}`), run.stderr);
  assertEquals(run.lines.at(-1), `connected to 127.0.0.1:${p}`);
});

Deno.test("connect.ts over a Unix socket to our echo server", async () => {
  const dir = await Deno.makeTempDir({ prefix: "seed3b-" });
  const path = `${dir}/echo.sock`;
  const unixPermissions = [
    `--allow-net=unix:${path}`,
    `--allow-read=${path}`,
    `--allow-write=${path}`,
  ];
  try {
    await using _server = await startServer("servers/echo.ts", {
      permissions: unixPermissions,
      args: ["--unix", path],
    });
    const run = await runClient(unixPermissions, ["--unix", path], [
      "over unix\n",
    ]);
    assertEquals(run.code, 0, run.stderr);
    assertEquals(text(run.stdout), "over unix\n");
    assertEquals(run.lines, [`connected to ${path}`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connect.ts --udp sends each stdin chunk as a datagram and exits after the quiet period", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: ["--udp", "--hostname", "127.0.0.1", "--port", "0"],
  });
  const p = server.port;
  const run = await runClient(
    ["--unstable-net", `--allow-net=0.0.0.0:0,127.0.0.1:${p}`],
    ["--udp", "--timeout", "0.5", "127.0.0.1", String(p)],
    ["one\n", "two\n", "three\n"],
    { pauseMs: 150 },
  );
  assertEquals(run.code, 0, run.stderr);
  assertEquals(text(run.stdout), "one\ntwo\nthree\n");
  assertEquals(run.lines, [
    `address 127.0.0.1:${p}`,
    `connected to 127.0.0.1:${p}`,
  ]);
  // Three datagrams, each echoed as one: the server counted them.
  server.proc.kill("SIGTERM");
  await server.proc.finished();
});

Deno.test("connect.ts --udp ends with exit 0 when the server never answers", async () => {
  const silent = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const p = (silent.addr as Deno.NetAddr).port;
  const run = await runClient(
    ["--unstable-net", `--allow-net=0.0.0.0:0,127.0.0.1:${p}`],
    ["--udp", "--timeout", "0.3", "127.0.0.1", String(p)],
    ["anyone?\n"],
  );
  assertEquals(run.code, 0, run.stderr);
  assertEquals(run.stdout.byteLength, 0);
  const [data] = await silent.receive();
  silent.close();
  assertEquals(text(data), "anyone?\n");
});

// ---------------------------------------------------------------- half-close

Deno.test("connect.ts half-closes on stdin EOF and prints until the server closes", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = listener.addr.port;
  const serving = (async () => {
    using conn = await listener.accept();
    // Reads until the client's half-close, then answers late, in pieces.
    const got = await readAll(conn);
    for (const piece of [`got ${got.byteLength} bytes\n`, "still here\n"]) {
      await new Promise((r) => setTimeout(r, 200));
      await conn.write(encoder.encode(piece));
    }
  })();
  const run = await runClient(
    [`--allow-net=127.0.0.1:${p}`],
    ["127.0.0.1", String(p)],
    ["request body\n"],
  );
  await serving;
  assertEquals(run.code, 0, run.stderr);
  assertEquals(text(run.stdout), "got 13 bytes\nstill here\n");
});

Deno.test("connect.ts exits 0 when the server closes first, while stdin is still open", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = listener.addr.port;
  const serving = (async () => {
    using conn = await listener.accept();
    await conn.write(encoder.encode("bye\n"));
  })();
  await using proc = spawn(SCRIPT, {
    permissions: [`--allow-net=127.0.0.1:${p}`],
    args: ["127.0.0.1", String(p)],
    stdin: true, // Never closed: the server's close alone ends the client.
  });
  await serving;
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  const { code, stdout, stderr } = await proc.finished();
  clearTimeout(timer);
  assertEquals(code, 0, stderr);
  assertEquals(stdout, "bye\n");
});

Deno.test("connect.ts | head: a closed stdout ends the client quietly, exit 0", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = listener.addr.port;
  const flooding = (async () => {
    using conn = await listener.accept();
    const chunk = new Uint8Array(65536).fill(0x41);
    try {
      while (true) await conn.write(chunk); // Until the client goes away.
    } catch (error) {
      return (error as Error).name;
    }
  })();
  const deno = Deno.execPath();
  const { code, stdout, stderr } = await runCommand("bash", [
    "-c",
    `"${deno}" run --quiet --no-prompt --allow-net=127.0.0.1:${p} ` +
    `"${repoPath(SCRIPT)}" 127.0.0.1 ${p} </dev/null | head -c 100 | wc -c; ` +
    "exit ${PIPESTATUS[0]}",
  ]);
  assertEquals(code, 0, stderr);
  assertEquals(text(stdout).trim(), "100");
  assertNotMatch(stderr, /error/);
  assertMatch(await flooding, /BrokenPipe|ConnectionReset/);
});

// ---------------------------------------------------------------- real peers

Deno.test({
  name:
    "connect.ts against a socat listener: 2 MB in, half-close, the peer's answer out",
  ignore: missing("socat", "ss"),
  async fn() {
    const p = freePort();
    const socat = new Deno.Command("socat", {
      args: [`TCP-LISTEN:${p},bind=127.0.0.1,reuseaddr`, "SYSTEM:wc -c"],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      await waitListening(socat.pid, { port: p });
      const data = pseudoRandomBytes(2 * 1024 * 1024, 5);
      const run = await runClient(
        [`--allow-net=127.0.0.1:${p}`],
        ["127.0.0.1", String(p)],
        [data],
      );
      assertEquals(run.code, 0, run.stderr);
      // `wc -c` only answers after end of input: our half-close.
      assertEquals(text(run.stdout).trim(), String(data.byteLength));
    } finally {
      try {
        socat.kill("SIGKILL");
      } catch {
        // Exited.
      }
      await socat.output();
    }
  },
});

Deno.test({
  name: "connect.ts against an nc listener: byte-exact both ways",
  ignore: missing("nc.openbsd", "ss"),
  async fn() {
    const p = freePort();
    const toClient = pseudoRandomBytes(1024 * 1024, 8);
    const toServer = pseudoRandomBytes(1536 * 1024, 9);
    const dir = await Deno.makeTempDir({ prefix: "seed3b-" });
    await Deno.writeFile(`${dir}/in`, toClient);
    // -N: shut down the write side after stdin's EOF, as we do.
    const nc = new Deno.Command("sh", {
      args: ["-c", `exec nc.openbsd -N -l 127.0.0.1 ${p} < ${dir}/in`],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Drained while the client runs: nc must never block on its stdout.
    const output = nc.output();
    try {
      await waitListening(nc.pid, { port: p });
      const run = await runClient(
        [`--allow-net=127.0.0.1:${p}`],
        ["127.0.0.1", String(p)],
        [toServer],
      );
      const out = await output;
      assertEquals(run.code, 0, run.stderr);
      assertSameBytes(run.stdout, toClient, "client stdout");
      assertEquals(out.code, 0, text(out.stderr));
      assertSameBytes(out.stdout, toServer, "nc stdout");
    } finally {
      try {
        nc.kill("SIGKILL");
      } catch {
        // Exited.
      }
      await output.catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "connect.ts --udp against a socat UDP peer",
  ignore: missing("socat"),
  async fn() {
    const p = freePort();
    const socat = new Deno.Command("socat", {
      args: [`UDP-RECVFROM:${p},bind=127.0.0.1,fork`, "SYSTEM:tr a-z A-Z"],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      await waitListening(socat.pid, { port: p, transport: "udp" });
      const run = await runClient(
        ["--unstable-net", `--allow-net=0.0.0.0:0,127.0.0.1:${p}`],
        ["--udp", "--timeout", "1", "127.0.0.1", String(p)],
        ["shout\n"],
      );
      assertEquals(run.code, 0, run.stderr);
      assertEquals(text(run.stdout), "SHOUT\n");
    } finally {
      try {
        socat.kill("SIGKILL");
      } catch {
        // Exited.
      }
      await socat.output();
    }
  },
});

// ---------------------------------------------------------------- errors

async function expectError(
  permissions: string[],
  args: string[],
  code: number,
  message: string | RegExp,
): Promise<void> {
  const run = await runClient(permissions, args);
  assertEquals(run.code, code, run.stderr);
  const last = run.lines.filter((l) => l !== "").at(-1) ?? "";
  if (typeof message === "string") assertEquals(last, message);
  else assertMatch(last, message);
  assertEquals(
    run.lines.filter((l) => l.startsWith("error:")).length,
    1,
    run.stderr,
  );
  assertNotMatch(run.stderr, /^\s+at /m, "no stack trace");
}

Deno.test("connect.ts: host not found is one error line, exit 1", async () => {
  await expectError(
    ["--allow-net=no-such-host.invalid"],
    ["no-such-host.invalid", "80"],
    1,
    "error: no such host 'no-such-host.invalid'",
  );
});

Deno.test("connect.ts: refused is one error line, exit 1", async () => {
  const p = freePort();
  await expectError(
    [`--allow-net=127.0.0.1:${p}`],
    ["127.0.0.1", String(p)],
    1,
    `error: connection refused by 127.0.0.1:${p}`,
  );
});

Deno.test("connect.ts: refused on every address of localhost lists them all", async () => {
  const p = freePort();
  const run = await runClient(
    [`--allow-net=localhost,127.0.0.1:${p},[::1]:${p}`],
    ["localhost", String(p)],
  );
  assertEquals(run.code, 1);
  const addresses = run.lines.filter((l) => l.startsWith("address "))
    .map((l) => l.slice("address ".length));
  assertGreaterOrEqual(addresses.length, 1);
  assertEquals(
    run.lines.at(-1),
    `error: cannot connect to localhost:${p}: connection refused (${
      addresses.join(", ")
    })`,
  );
});

Deno.test("connect.ts: an impossible address is one error line, exit 1", async () => {
  await expectError(
    [],
    ["1.2.3", "80"],
    1,
    "error: invalid address '1.2.3': expected an IPv4 address (192.0.2.1), an IPv6 address (2001:db8::1) or a host name",
  );
  await expectError(
    [],
    ["bad host", "80"],
    1,
    /^error: invalid address 'bad host'/,
  );
});

Deno.test("connect.ts: a Unix socket that does not exist, exit 1", async () => {
  const path = `/tmp/seed3b-none-${Deno.pid}.sock`;
  await expectError(
    [
      `--allow-net=unix:${path}`,
      `--allow-read=${path}`,
      `--allow-write=${path}`,
    ],
    ["--unix", path],
    1,
    `error: cannot connect to ${path}: no such file or directory`,
  );
});

Deno.test("connect.ts: missing permission to resolve the name, exit 1", async () => {
  await expectError(
    ["--allow-net=127.0.0.1:7"],
    ["localhost", "7"],
    1,
    "error: no permission to resolve localhost (run again as: deno run --allow-net=localhost:7,localhost clients/connect.ts localhost 7)",
  );
});

Deno.test("connect.ts: missing permission for the address, exit 1", async () => {
  await expectError(
    ["--allow-net=127.0.0.1:7"],
    ["127.0.0.1", "8"],
    1,
    /^error: cannot connect to 127\.0\.0\.1:8: requires net access to "127\.0\.0\.1:8"/,
  );
});

Deno.test("connect.ts: usage errors are one error line, exit 2", async (t) => {
  const cases: [string[], string][] = [
    [
      ["localhost", "http"],
      "error: invalid port 'http': expected a number from 1 to 65535",
    ],
    [
      ["localhost", "0"],
      "error: invalid port '0': expected a number from 1 to 65535",
    ],
    [
      ["localhost", "70000"],
      "error: invalid port '70000': expected a number from 1 to 65535",
    ],
    [["localhost", "-1"], "error: unknown option '-1' (see --help)"],
    [[], "error: missing NAME and PORT (see --help)"],
    [["localhost"], "error: missing PORT (see --help)"],
    [["a", "1", "b"], "error: unexpected argument 'b' (see --help)"],
    [["--bogus", "a", "1"], "error: unknown option '--bogus' (see --help)"],
    [
      ["--timeout", "soon", "a", "1"],
      "error: invalid value 'soon' for --timeout: expected a number of seconds",
    ],
    [
      ["--timeout", "0", "a", "1"],
      "error: invalid value '0' for --timeout: expected more than 0 seconds",
    ],
    [
      ["--attempt-delay", "0.001", "a", "1"],
      "error: invalid value '0.001' for --attempt-delay: expected 0.01 to 10 seconds",
    ],
    [
      ["--unix", "/tmp/x.sock", "a", "1"],
      "error: --unix PATH takes no NAME or PORT (see --help)",
    ],
    [
      ["--unix", "/tmp/x.sock", "--udp"],
      "error: --unix and --udp cannot be used together",
    ],
    [["--unix", ""], "error: invalid socket path '' for --unix"],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" ") || "(no arguments)", async () => {
      await expectError([], args, 2, message);
    });
  }
});

Deno.test("connect.ts --help prints usage and exits 0", async () => {
  const run = await runClient([], ["--help"]);
  assertEquals(run.code, 0);
  assertMatch(text(run.stdout), /^usage: connect\.ts \[options\] NAME PORT/);
  assertMatch(text(run.stdout), /--attempt-delay S/);
  assertEquals(run.stderr, "");
});

Deno.test("connect.ts is in deno.json with its header's permissions, and the task takes NAME PORT", async () => {
  const config = JSON.parse(await Deno.readTextFile(repoPath("deno.json")));
  assertEquals(config.exports["./clients/connect"], "./clients/connect.ts");
  assertEquals(
    config.tasks.connect,
    "deno run --allow-net=127.0.0.1:15000 clients/connect.ts",
  );
});
