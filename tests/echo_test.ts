import assert from "node:assert/strict";
import { readExact, silentLog, writeAll } from "../mod.ts";
import { serveEcho } from "../servers/echo.ts";
import { pseudoRandomBytes, readAll, startServer } from "./_helpers.ts";

Deno.test("serveEcho() echoes bytes back exactly, in process", async () => {
  await using server = serveEcho({
    hostname: "127.0.0.1",
    port: 0,
    log: silentLog,
  });
  const { port } = server.addr as Deno.NetAddr;
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const data = pseudoRandomBytes(100_000, 7);
  const reading = readExact(conn, data.byteLength);
  await writeAll(conn, data);
  assert.deepEqual(await reading, data);
});

Deno.test("echo.ts, run with its header's permissions, echoes and exits 0 on SIGTERM", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  assert.match(server.address, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(server.port, 0);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await writeAll(conn, new TextEncoder().encode("hello\n"));
  await conn.closeWrite();
  assert.equal(new TextDecoder().decode(await readAll(conn)), "hello\n");
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assert.equal(code, 0, stderr);
});
