import { assertEquals, assertNotMatch } from "@std/assert";
import { writeAll } from "../mod.ts";
import { pseudoRandomBytes, readAll, startServer } from "./_helpers.ts";
import { udpAsk } from "./_simple.ts";

Deno.test("discard.ts, with its header's permissions, reads everything and sends nothing", async () => {
  await using server = await startServer("servers/discard.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  {
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const reading = readAll(conn);
    await writeAll(conn, pseudoRandomBytes(1_000_000, 11));
    await conn.closeWrite();
    assertEquals((await reading).byteLength, 0);
  }
  await server.proc.waitForStderr(
    /closed 127\.0\.0\.1:\d+ \(1000000 bytes in, 0 bytes out\)/,
  );
  server.proc.kill("SIGTERM");
  assertEquals((await server.proc.finished()).code, 0);
});

Deno.test("discard.ts --udp needs only its own address and never answers", async () => {
  const probe = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const { port } = probe.addr as Deno.NetAddr;
  probe.close();
  await using server = await startServer("servers/discard.ts", {
    permissions: ["--unstable-net", `--allow-net=127.0.0.1:${port}`],
    args: ["--udp", "--hostname", "127.0.0.1", "--port", String(port)],
  });
  assertEquals(await udpAsk(server.port, "anyone?", { timeoutMs: 500 }), null);
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
  assertNotMatch(stderr, /failed/);
});
