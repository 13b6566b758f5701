import {
  assert,
  assertEquals,
  assertLess,
  assertNotEquals,
  assertNotMatch,
} from "@std/assert";
import { readExact } from "../mod.ts";
import { chargenLines, serveChargen } from "../servers/chargen.ts";
import { assertSameBytes, startServer } from "./_helpers.ts";
import { udpAsk } from "./_simple.ts";

const PRINTABLE = Array.from(
  { length: 95 },
  (_, i) => String.fromCharCode(32 + i),
)
  .join("");

Deno.test("chargenLines() follows RFC 864: 72 characters of the 95-character ring, CRLF", () => {
  const text = new TextDecoder().decode(chargenLines(0, 96));
  const lines = text.split("\r\n");
  assertEquals(lines.pop(), "");
  assertEquals(lines.length, 96);
  for (const [i, line] of lines.entries()) {
    const start = (i + 1) % 95;
    assertEquals(
      line,
      (PRINTABLE + PRINTABLE).slice(start, start + 72),
      `line ${i}`,
    );
  }
  assertEquals(lines[0].slice(0, 5), '!"#$%');
  assertEquals(lines[94].slice(0, 3), ' !"', "line 94 starts at the space");
  assertEquals(lines[95], lines[0], "the pattern repeats every 95 lines");
});

Deno.test("chargen.ts, with its header's permissions, streams the pattern over TCP", async () => {
  await using server = await startServer("servers/chargen.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  {
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    // Three whole rounds of the ring and then some: 300 lines.
    assertSameBytes(
      await readExact(conn, 300 * 74),
      chargenLines(0, 300),
      "300 lines",
    );
  }
  await server.proc.waitForStderr(
    /closed 127\.0\.0\.1:\d+ \(0 bytes in, \d+ bytes out\)$/,
  );
  assertNotMatch(
    server.proc.stderr,
    /Broken pipe|reset/i,
    "a client leaving is no error",
  );
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
});

Deno.test("chargen.ts --udp answers one datagram of whole lines, at most 512 bytes", async () => {
  await using server = await startServer("servers/chargen.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: ["--udp", "--hostname", "127.0.0.1", "--port", "0"],
  });
  const reply = await udpAsk(server.port, new Uint8Array(1000));
  assertEquals(reply, chargenLines(0, 6));
  assert(reply!.byteLength <= 512);
});

Deno.test("serveChargen() waits for a client that does not read, and marks writes as activity", async () => {
  const lines: string[] = [];
  await using server = serveChargen({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeoutMs: 600,
    log: (line) => lines.push(line),
  });
  const { port } = server.addr as Deno.NetAddr;
  // A reader that keeps reading outlives the idle timeout: writes count.
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const buffer = new Uint8Array(65536);
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      assertNotEquals(await conn.read(buffer), null, "cut while reading");
    }
  }
  // A client that never reads: the server stops writing once the socket
  // buffers are full (no queue grows), goes idle and is closed.
  {
    using _conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const deadline = Date.now() + 10_000;
    while (!lines.some((l) => l.startsWith("idle timeout"))) {
      assertLess(Date.now(), deadline, lines.join("\n"));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await server.shutdown();
  const closed = lines.filter((l) => l.startsWith("closed"));
  assertEquals(closed.length, 2, lines.join("\n"));
  const sent = Number(/(\d+) bytes out/.exec(closed[1])![1]);
  // Loopback buffers hold a few MB at most; without backpressure this grows
  // by hundreds of MB a second.
  assert(
    sent < 32 * 1024 * 1024,
    `${sent} bytes sent to a client that read nothing`,
  );
});
