import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertMatch,
} from "@std/assert";
import { ConnectError, serve, silentLog, writeAll } from "../mod.ts";
import { fetchDaytime } from "../clients/daytime.ts";
import { ctime, daytimeService } from "../servers/daytime.ts";
import {
  assertSameBytes,
  assertUsageError,
  freePort,
  ip,
  missing,
  pseudoRandomBytes,
  repoPath,
  runCommand,
  runScript,
  spawn,
  startServer,
} from "./_helpers.ts";

const SCRIPT = "clients/daytime.ts";
const LINE = "Tue Nov  4 09:05:01 2026\r\n";
const decoder = new TextDecoder();

/** A plain TCP server that sends `payload` to each client, then closes. */
function sendingServer(
  hostname: string,
  payload: Uint8Array | string,
): { port: number; served: Promise<void> } & Disposable {
  const listener = Deno.listen({ hostname, port: 0 });
  const bytes = typeof payload === "string"
    ? new TextEncoder().encode(payload)
    : payload;
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await writeAll(conn, bytes);
    } finally {
      conn.close();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    served,
    [Symbol.dispose]: () => listener.close(),
  };
}

Deno.test("fetchDaytime() returns what the server sent, in process", async () => {
  using server = sendingServer("127.0.0.1", LINE);
  const bytes = await fetchDaytime({
    hostname: "127.0.0.1",
    port: server.port,
  });
  await server.served;
  assertEquals(decoder.decode(bytes), LINE);
});

Deno.test("daytime.ts copies the server's bytes to stdout byte-exact and exits 0", async () => {
  const payload = pseudoRandomBytes(64 * 1024, 13); // the most it reads
  using server = sendingServer("127.0.0.1", payload);
  const child = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      `--allow-net=127.0.0.1:${server.port}`,
      repoPath(SCRIPT),
      "127.0.0.1",
      "--port",
      String(server.port),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await server.served;
  assertEquals(child.code, 0, decoder.decode(child.stderr));
  assertSameBytes(child.stdout, payload, "payload on stdout");
  assertEquals(decoder.decode(child.stderr), "");
});

for (const address of ["::1", "[::1]"]) {
  Deno.test(`daytime.ts reaches an IPv6 server given as ${address}`, async () => {
    using server = sendingServer("::1", LINE);
    const { code, stdout, stderr } = await runScript(SCRIPT, {
      permissions: [`--allow-net=[::1]:${server.port}`],
      args: [address, "--port", String(server.port)],
    });
    await server.served;
    assertEquals(code, 0, stderr);
    assertEquals(stdout, LINE);
  });
}

Deno.test("daytime.ts resolves a host name (localhost)", async () => {
  using server = sendingServer("127.0.0.1", LINE);
  const { code, stdout, stderr } = await runScript(SCRIPT, {
    permissions: [`--allow-net=localhost:${server.port}`],
    args: ["localhost", "--port", String(server.port)],
  });
  await server.served;
  assertEquals(code, 0, stderr);
  assertEquals(stdout, LINE);
});

Deno.test({
  name: "daytime.ts reads a socat listener to EOF",
  ignore: missing("socat"),
  async fn() {
    const port = freePort();
    const text =
      "Wed Nov 25 14:30:00 2026\r\nsecond line, with: punctuation\r\n";
    const file = await Deno.makeTempFile();
    await Deno.writeTextFile(file, text);
    await using peer = spawn("socat", {
      args: [
        "-d",
        "-d",
        `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr`,
        `OPEN:${file},rdonly`,
      ],
    });
    await peer.waitForStderr(/listening on/);
    const { code, stdout, stderr } = await runScript(SCRIPT, {
      permissions: [`--allow-net=127.0.0.1:${port}`],
      args: ["127.0.0.1", "--port", String(port)],
    });
    await Deno.remove(file);
    assertEquals(code, 0, stderr);
    assertEquals(stdout, text);
    assertEquals((await peer.finished()).code, 0);
  },
});

Deno.test({
  name: "daytime.ts reads an nc listener (IPv6) to EOF",
  ignore: missing("nc"),
  async fn() {
    const port = freePort("::1");
    await using peer = spawn("nc", {
      args: ["-v", "-N", "-l", "::1", String(port)],
      stdin: true,
    });
    await peer.waitForStderr(/[Ll]istening on/);
    const writer = peer.child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(LINE));
    await writer.close();
    const { code, stdout, stderr } = await runScript(SCRIPT, {
      permissions: [`--allow-net=[::1]:${port}`],
      args: ["::1", "--port", String(port)],
    });
    assertEquals(code, 0, stderr);
    assertEquals(stdout, LINE);
  },
});

Deno.test("daytime.ts: invalid addresses are one error line, exit 1", async () => {
  for (const address of ["1.2.3", "256.1.1.1", "::g", "[::1", "a b", ""]) {
    const { code, stdout, stderr } = await runScript(SCRIPT, {
      permissions: ["--allow-net=127.0.0.1:13"],
      args: [address],
    });
    assertEquals(code, 1, `${address}: ${stderr}`);
    assertEquals(stdout, "");
    assertEquals(
      stderr.trimEnd(),
      `error: invalid address '${address}': expected an IPv4 address (192.0.2.1), an IPv6 address (2001:db8::1) or a host name`,
    );
  }
});

Deno.test("daytime.ts: a refused connection is one error line, exit 1", async () => {
  const port = freePort();
  const { code, stderr } = await runScript(SCRIPT, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["127.0.0.1", "--port", String(port)],
  });
  assertEquals(code, 1);
  assertEquals(
    stderr.trimEnd(),
    `error: connection refused by 127.0.0.1:${port}`,
  );
});

Deno.test("daytime.ts: an unknown host is one error line, exit 1", async () => {
  const { code, stderr } = await runScript(SCRIPT, {
    permissions: ["--allow-net=no-such-host.invalid:13"],
    args: ["no-such-host.invalid"],
  });
  assertEquals(code, 1);
  // Without a resolver (a sandbox) the lookup fails differently; both say so.
  assertMatch(
    stderr.trimEnd(),
    /^error: (no such host|cannot resolve host) 'no-such-host\.invalid'[^\n]*$/,
  );
});

Deno.test("daytime.ts: a server that never sends times out after --timeout, exit 1", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const accepted = listener.accept();
  const started = performance.now();
  const { code, stderr } = await runScript(SCRIPT, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["127.0.0.1", "--port", String(port), "--timeout", "0.5"],
  });
  const elapsed = performance.now() - started;
  (await accepted).close();
  assertEquals(code, 1);
  assertEquals(
    stderr.trimEnd(),
    `error: timed out after 0.5 s waiting for data from 127.0.0.1:${port}`,
  );
  assertGreaterOrEqual(elapsed, 500, `took only ${elapsed} ms`);
});

Deno.test("daytime.ts: usage errors exit 2, --help exits 0", async () => {
  const cases: [string[], RegExp][] = [
    [[], /^error: missing argument/],
    [["a", "b"], /^error: unexpected argument 'b'/],
    [["--port", "0", "x"], /^error: invalid value '0' for --port/],
    [["--port", "70000", "x"], /^error: invalid value '70000' for --port/],
    [["--timeout", "soon", "x"], /^error: invalid value 'soon' for --timeout/],
    [["--bogus", "x"], /^error: unknown option '--bogus'/],
  ];
  for (const [args, pattern] of cases) {
    await assertUsageError(SCRIPT, ["--allow-net=127.0.0.1:13"], args, pattern);
  }
  const help = await runScript(SCRIPT, { args: ["--help"] });
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /^usage: daytime\.ts/);
});

// Unreachable networks and black holes, made deterministic inside a network
// namespace of our own: only `lo` and a veth whose neighbour 10.77.0.2
// (fd77::2) has a made-up MAC address, so packets to it vanish.
const NETNS = `seed3a-dt${Deno.pid}`;

function netnsUnavailable(): boolean {
  if (missing("ip")) return true;
  if (Deno.uid?.() !== 0) {
    console.error("SKIP: network namespaces need root");
    return true;
  }
  return false;
}

async function withNetns(body: () => Promise<void>): Promise<void> {
  await ip("netns", "add", NETNS);
  try {
    await ip("-n", NETNS, "link", "set", "lo", "up");
    await ip(
      "-n",
      NETNS,
      "link",
      "add",
      "seed3a-v0",
      "type",
      "veth",
      "peer",
      "name",
      "seed3a-v1",
    );
    await ip("-n", NETNS, "addr", "add", "10.77.0.1/24", "dev", "seed3a-v0");
    await ip(
      "-n",
      NETNS,
      "addr",
      "add",
      "fd77::1/64",
      "dev",
      "seed3a-v0",
      "nodad",
    );
    await ip("-n", NETNS, "link", "set", "seed3a-v0", "up");
    await ip("-n", NETNS, "link", "set", "seed3a-v1", "up");
    for (const address of ["10.77.0.2", "fd77::2"]) {
      await ip(
        "-n",
        NETNS,
        "neigh",
        "add",
        address,
        "lladdr",
        "02:00:00:00:77:02",
        "dev",
        "seed3a-v0",
        "nud",
        "permanent",
      );
    }
    await body();
  } finally {
    await runCommand("ip", ["netns", "del", NETNS]);
  }
}

async function runInNetns(
  permission: string,
  args: string[],
): Promise<{ code: number; stderr: string; ms: number }> {
  const started = performance.now();
  const { code, stderr } = await runCommand("ip", [
    "netns",
    "exec",
    NETNS,
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-prompt",
    permission,
    repoPath(SCRIPT),
    ...args,
  ]);
  return { code, stderr, ms: performance.now() - started };
}

Deno.test({
  name:
    "daytime.ts: unreachable networks and connect timeouts are one error line, exit 1",
  ignore: netnsUnavailable(),
  async fn() {
    await withNetns(async () => {
      for (
        const [address, shown] of [
          ["192.0.2.1", "192.0.2.1:13"],
          ["2001:db8::1", "[2001:db8::1]:13"],
        ]
      ) {
        const { code, stderr } = await runInNetns(
          `--allow-net=${shown}`,
          [address],
        );
        assertEquals(code, 1, stderr);
        assertEquals(
          stderr.trimEnd(),
          `error: cannot connect to ${shown}: network is unreachable`,
        );
      }
      for (
        const [address, shown] of [
          ["10.77.0.2", "10.77.0.2:13"],
          ["fd77::2", "[fd77::2]:13"],
        ]
      ) {
        const { code, stderr, ms } = await runInNetns(
          `--allow-net=${shown}`,
          [address, "--timeout", "0.5"],
        );
        assertEquals(code, 1, stderr);
        assertEquals(
          stderr.trimEnd(),
          `error: timed out after 0.5 s connecting to ${shown}`,
        );
        assertGreaterOrEqual(ms, 500, `gave up after ${ms} ms`);
      }
    });
  },
});

Deno.test("ConnectError from fetchDaytime() carries its kind", async () => {
  const port = freePort();
  const error = await fetchDaytime({ hostname: "127.0.0.1", port }).catch((
    e,
  ) => e);
  assert(error instanceof ConnectError);
  assertEquals(error.kind, "refused");
});

Deno.test("daytime.ts client against our servers/daytime.ts, in process and as scripts", async () => {
  const fixed = new Date(2026, 10, 4, 9, 5, 1);
  await using server = serve(daytimeService(() => fixed), {
    hostname: "127.0.0.1",
    port: 0,
    log: silentLog,
  });
  const { port } = server.addr as Deno.NetAddr;
  const bytes = await fetchDaytime({ hostname: "127.0.0.1", port });
  assertEquals(decoder.decode(bytes), `${ctime(fixed)}\r\n`);
  assertEquals(ctime(fixed), "Wed Nov  4 09:05:01 2026");

  for (
    const [host, permission] of [["127.0.0.1", "127.0.0.1"], ["::1", "[::1]"]]
  ) {
    const serverPort = freePort(host);
    await using script = await startServer("servers/daytime.ts", {
      permissions: [`--allow-net=${permission}:${serverPort}`],
      args: ["--hostname", host, "--port", String(serverPort)],
    });
    const { code, stdout, stderr } = await runScript(SCRIPT, {
      permissions: [`--allow-net=${permission}:${serverPort}`],
      args: [host, "--port", String(serverPort)],
    });
    assertEquals(code, 0, stderr);
    assertMatch(
      stdout,
      /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 1-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4}\r\n$/,
    );
    script.proc.kill("SIGTERM");
    assertEquals((await script.proc.finished()).code, 0);
  }
});
