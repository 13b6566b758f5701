import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { readExact, writeAll } from "../mod.ts";
import { runScript, startServer, unixPermissions } from "./_helpers.ts";

async function echoes(path: string): Promise<boolean> {
  using conn = await Deno.connect({ transport: "unix", path });
  const data = new TextEncoder().encode("ping\n");
  await writeAll(conn, data);
  return new TextDecoder().decode(await readExact(conn, data.byteLength)) ===
    "ping\n";
}

function tempDir(): { dir: string } & Disposable {
  const dir = Deno.makeTempDirSync({ prefix: "rel6-unix-" });
  return {
    dir,
    [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }),
  };
}

function modeOf(path: string): number {
  return Deno.lstatSync(path).mode! & 0o777;
}

Deno.test("echo.ts --unix creates its socket file with mode 0600, --mode 0660 widens it", async () => {
  using tmp = tempDir();
  for (
    const [args, expected] of [[[], 0o600], [["--mode", "0660"], 0o660], [[
      "--mode",
      "640",
    ], 0o640]] as const
  ) {
    const path = `${tmp.dir}/echo.sock`;
    await using server = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path, ...args],
    });
    assertEquals(
      modeOf(path).toString(8),
      expected.toString(8),
      `mode with ${args.join(" ") || "no --mode"}`,
    );
    assert(await echoes(path));
    server.proc.kill("SIGTERM");
    const { code, stderr } = await server.proc.finished();
    assertEquals(code, 0, stderr);
    assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
  }
});

Deno.test("echo.ts --unixpacket creates its socket file with mode 0600 and removes it on exit", async () => {
  using tmp = tempDir();
  const path = `${tmp.dir}/echo.dgram`;
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--unstable-net", ...unixPermissions(path)],
    args: ["--unixpacket", path],
  });
  assertEquals(modeOf(path).toString(8), "600");
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
  assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
});

Deno.test("echo.ts --mode is refused without a Unix socket or with a bad value", async () => {
  for (
    const args of [
      ["--mode", "0600"],
      ["--unix", "/tmp/rel6-never.sock", "--mode", "0x1ff"],
      ["--unix", "/tmp/rel6-never.sock", "--mode", "4755"],
      ["--unix", "/tmp/rel6-never.sock", "--mode", "800"],
    ]
  ) {
    const { code, stderr } = await runScript("servers/echo.ts", {
      permissions: unixPermissions("/tmp/rel6-never.sock"),
      args,
    });
    assertEquals(code, 2, `${args.join(" ")}: ${stderr}`);
    assertMatch(stderr, /^error: .*--mode/);
    assertEquals(stderr.trim().split("\n").length, 1);
  }
});

Deno.test("echo.ts --unix never deletes a regular file or a directory at its path", async () => {
  using tmp = tempDir();
  const file = `${tmp.dir}/precious.txt`;
  Deno.writeTextFileSync(file, "keep me");
  const dir = `${tmp.dir}/subdir`;
  Deno.mkdirSync(dir);
  for (const path of [file, dir]) {
    const { code, stderr } = await runScript("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    assertEquals(code, 1, stderr);
    assertMatch(stderr, /^error: .*not a socket/);
  }
  assertEquals(Deno.readTextFileSync(file), "keep me");
  assert(Deno.statSync(dir).isDirectory);
});

Deno.test("echo.ts --unix does not follow a symbolic link at its path: the link and its target survive", async () => {
  using tmp = tempDir();
  const target = `${tmp.dir}/target.txt`;
  Deno.writeTextFileSync(target, "keep me");
  // A stale socket as target too: following the link would remove it.
  const staleTarget = `${tmp.dir}/stale.sock`;
  Deno.listen({ transport: "unix", path: staleTarget }).close();
  Deno.listenDatagram({ transport: "unixpacket", path: staleTarget }).close();
  assert(Deno.lstatSync(staleTarget).isSocket);
  for (const [name, to] of [["a.sock", target], ["b.sock", staleTarget]]) {
    const link = `${tmp.dir}/${name}`;
    Deno.symlinkSync(to, link);
    const { code, stderr } = await runScript("servers/echo.ts", {
      permissions: unixPermissions(link),
      args: ["--unix", link],
    });
    assertEquals(code, 1, stderr);
    assertMatch(stderr, /^error: .*symbolic link/);
    assert(Deno.lstatSync(link).isSymlink, "the link is still there");
  }
  assertEquals(Deno.readTextFileSync(target), "keep me");
  assert(Deno.lstatSync(staleTarget).isSocket, "the link's target survives");
});

Deno.test("echo.ts --unix refuses a live socket and leaves its server working; replaces a stale one", async () => {
  using tmp = tempDir();
  const path = `${tmp.dir}/echo.sock`;
  {
    await using first = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    const { code, stderr } = await runScript("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    assertEquals(code, 1, stderr);
    assertMatch(stderr, /^error: .*in use/);
    assert(await echoes(path), "the first server still serves");
    first.proc.kill("SIGTERM");
    assertEquals((await first.proc.finished()).code, 0);
  }
  // A stale socket, as a crashed server leaves it (SIGKILL: no clean-up).
  {
    await using crashed = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    crashed.proc.kill("SIGKILL");
    await crashed.proc.finished();
  }
  assert(Deno.lstatSync(path).isSocket, "a stale socket is left");
  await using _second = await startServer("servers/echo.ts", {
    permissions: unixPermissions(path),
    args: ["--unix", path],
  });
  assert(await echoes(path));
  assertEquals(modeOf(path).toString(8), "600");
});

Deno.test("a unixpacket server removes only its own socket file on shutdown", async () => {
  using tmp = tempDir();
  const path = `${tmp.dir}/echo.dgram`;
  const { serveEcho } = await import("../servers/echo.ts");
  const server = serveEcho({
    transport: "unixpacket",
    path,
    log: () => {},
  });
  await server.ready;
  // Someone replaced the socket file meanwhile: it is not ours to delete.
  Deno.removeSync(path);
  Deno.writeTextFileSync(path, "not yours");
  await server.shutdown();
  assertEquals(Deno.readTextFileSync(path), "not yours");
});
