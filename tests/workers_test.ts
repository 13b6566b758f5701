import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertMatch,
} from "@std/assert";
import { readExact, writeAll } from "../mod.ts";
import {
  closedWithin,
  freePort,
  runScript,
  spawn,
  startServer,
} from "./_helpers.ts";

// Exactly the header's command: a worker loads the script, mod.ts and lib/.
// A worker loads the script's modules again, under the script's permissions:
// with JSR_URL a file: mirror (no JSR reachable), its files too.
const JSR_MIRROR = Deno.env.get("JSR_URL")?.startsWith("file:")
  ? `,${new URL(Deno.env.get("JSR_URL")!).pathname}`
  : "";
const READ = `--allow-read=servers/echo.ts,mod.ts,lib${JSR_MIRROR}`;
const encode = (s: string) => new TextEncoder().encode(s);

function workerServer(port: number, extra: string[] = []) {
  return startServer("servers/echo.ts", {
    permissions: [`--allow-net=127.0.0.1:${port}`, READ],
    args: [
      "--hostname",
      "127.0.0.1",
      "--port",
      String(port),
      "--workers",
      "2",
      ...extra,
    ],
  });
}

/** Connects and proves the server took the connection with one echo. */
async function echoedConnection(
  port: number,
  text: string,
): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, encode(text));
  assertEquals(
    new TextDecoder().decode(await readExact(conn, text.length)),
    text,
  );
  return conn;
}

Deno.test("echo.ts --workers 2 spreads connections over both workers and one SIGTERM stops all", async () => {
  const port = freePort();
  await using server = await workerServer(port, ["--grace", "0.5"]);
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 24; i++) {
      conns.push(await echoedConnection(port, `hello ${i}\n`));
    }
    await server.proc.until(
      () =>
        server.proc.stderrLines.filter((l) => / accepted /.test(l)).length ===
          24,
      "24 accepted lines",
    );
    const per = [0, 1].map((w) =>
      server.proc.stderrLines.filter((l) =>
        l.startsWith(`worker ${w}: accepted`)
      )
        .length
    );
    // SO_REUSEPORT hashes each connection's addresses: all 24 on one
    // listener would happen with probability 2^-23.
    assert(per[0] > 0 && per[1] > 0, `spread: ${per}`);
    assertEquals(per[0] + per[1], 24);
    server.proc.kill("SIGTERM");
    // Both workers close their clients once the grace period is over.
    const closed = await Promise.all(conns.map((c) => closedWithin(c, 10_000)));
    assert(closed.every(Boolean), "a connection outlived the shutdown");
    const { code, stderr } = await server.proc.finished();
    assertEquals(code, 0, stderr);
    assertMatch(stderr, /worker 0: grace period over/);
    assertMatch(stderr, /worker 1: grace period over/);
  } finally {
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // Closed.
      }
    }
  }
});

Deno.test("echo.ts --workers 2 shares --max-connections across the workers", async () => {
  const port = freePort();
  await using server = await workerServer(port, ["--max-connections", "3"]);
  const held: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 3; i++) held.push(await echoedConnection(port, "x"));
    // Whichever worker the kernel gives them, the group is full: each of
    // these is closed at once.
    for (let i = 0; i < 6; i++) {
      using extra = await Deno.connect({ hostname: "127.0.0.1", port });
      assert(await closedWithin(extra, 10_000), `extra ${i} was served`);
    }
    // Log lines are written a few milliseconds after the event.
    await server.proc.until(
      () => server.proc.stderrLines.some((l) => /: refused /.test(l)),
      "a refused line",
    );
    const refusing = new Set(
      server.proc.stderrLines.filter((l) => /: refused /.test(l)).map((l) =>
        l.split(":")[0]
      ),
    );
    assertGreaterOrEqual(refusing.size, 1, server.proc.stderr);
  } finally {
    for (const conn of held) conn.close();
  }
});

Deno.test("echo.ts --workers without read access to its modules: one error line, exit 1", async () => {
  const port = freePort();
  const { code, stderr } = await runScript("servers/echo.ts", {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--hostname", "127.0.0.1", "--port", String(port), "--workers", "2"],
  });
  assertEquals(code, 1);
  const lines = stderr.trim().split("\n");
  assertEquals(lines.length, 1, stderr);
  assertMatch(lines[0], /^error: --workers needs read access .*--allow-read=/);
});

const NO_FILE_MIRROR = JSR_MIRROR === ""
  ? "JSR_URL is not a file: mirror (workers then load JSR over https)"
  : undefined;
if (NO_FILE_MIRROR) {
  console.error(`SKIP: --workers and a file: mirror: ${NO_FILE_MIRROR}`);
}

Deno.test({
  name:
    "echo.ts --workers with a file: JSR mirror it may not read: one error line naming the mirror, exit 1",
  ignore: NO_FILE_MIRROR !== undefined,
  async fn() {
    const port = freePort();
    // Until it exits or serves: before the check, the workers died with a
    // stack trace each and the main thread served alone.
    await using proc = spawn("servers/echo.ts", {
      permissions: [
        `--allow-net=127.0.0.1:${port}`,
        "--allow-read=servers/echo.ts,mod.ts,lib",
      ],
      args: [
        "--hostname",
        "127.0.0.1",
        "--port",
        String(port),
        "--workers",
        "2",
      ],
    });
    const [first] = await proc.waitForStderr(/^(error|listening on)\b.*/);
    assertMatch(
      first,
      new RegExp(
        `^error: --workers needs read access .*--allow-read=.*,${
          JSR_MIRROR.slice(1).replace(/\/$/, "")
        }$`,
      ),
    );
    const { code, stderr } = await proc.finished();
    assertEquals(code, 1, stderr);
    assertEquals(stderr.trim().split("\n").length, 1, stderr);
  },
});

Deno.test("echo.ts --workers rejects bad values and non-TCP transports (exit 2)", async () => {
  for (
    const args of [
      ["--workers", "0"],
      ["--workers", "many"],
      ["--udp", "--workers", "2"],
    ]
  ) {
    const { code, stderr } = await runScript("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1:0"],
      args: ["--hostname", "127.0.0.1", "--port", "0", ...args],
    });
    assertEquals(code, 2, `${args}: ${stderr}`);
    assertMatch(stderr, /^error: .*--workers/, `${args}`);
  }
});
