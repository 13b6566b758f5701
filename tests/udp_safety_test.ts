/**
 * UDP loop protection and rate limiting of the simple services
 * (CVE-1999-0103): each test has a control that gets an answer, so it fails
 * if the protection is missing, not only if the server is down.
 */
import {
  assert,
  assertEquals,
  assertLessOrEqual,
  assertMatch,
} from "@std/assert";
import { simpleLoopPorts } from "../mod.ts";
import { startServer } from "./_helpers.ts";
import { freeBase, receiveOrNull, udpAsk, udpSocket } from "./_simple.ts";

const UDP_PERMISSIONS = ["--unstable-net", "--allow-net"];

/** A UDP port below 1024 that no simple service uses, free on 127.0.0.1. */
function freeLowPort(): number {
  const loop = simpleLoopPorts();
  for (let port = 1023; port > 900; port--) {
    if (loop.has(port)) continue;
    try {
      udpSocket({ sourcePort: port }).close();
      return port;
    } catch {
      // Taken.
    }
  }
  throw new Error("no free low port");
}

async function startChargen(args: string[] = []) {
  return await startServer("servers/chargen.ts", {
    permissions: UDP_PERMISSIONS,
    args: ["--udp", "--hostname", "127.0.0.1", "--port", "0", ...args],
  });
}

const asRoot = Deno.uid() === 0;

Deno.test({
  name:
    "chargen --udp never answers a source port below 1024 unless --allow-low-ports",
  ignore: !asRoot,
  async fn() {
    const lowPort = freeLowPort();
    {
      await using server = await startChargen();
      assert(
        await udpAsk(server.port, "x"),
        "control: a high port is answered",
      );
      assertEquals(
        await udpAsk(server.port, "x", { sourcePort: lowPort, timeoutMs: 500 }),
        null,
      );
      await server.proc.waitForStderr(
        new RegExp(
          `dropped datagram from 127\\.0\\.0\\.1:${lowPort}: source port below 1024`,
        ),
      );
    }
    {
      await using server = await startChargen(["--allow-low-ports"]);
      const reply = await udpAsk(server.port, "x", { sourcePort: lowPort });
      assert(reply, "--allow-low-ports answers a low port");
      assertLessOrEqual(reply.byteLength, 512);
    }
  },
});

Deno.test({
  name:
    "chargen --udp never answers another simple service's port, even with --allow-low-ports",
  ignore: !asRoot,
  async fn() {
    await using server = await startChargen(["--allow-low-ports"]);
    // Echo's and chargen's well-known ports, and inetd's default chargen.
    for (const sourcePort of [7, 19, 10019]) {
      let socket: Deno.DatagramConn;
      try {
        socket = udpSocket({ sourcePort });
      } catch {
        continue; // Taken on this host: nothing to prove with it.
      }
      socket.close();
      assertEquals(
        await udpAsk(server.port, "x", { sourcePort, timeoutMs: 400 }),
        null,
        `answered source port ${sourcePort}`,
      );
    }
    await server.proc.waitForStderr(
      /dropped datagram from 127\.0\.0\.1:(7|19|10019): source port is a service port \(loop protection\)/,
    );
    assert(
      await udpAsk(server.port, "x"),
      "control: a high port is answered",
    );
  },
});

Deno.test("inetd.ts never answers a datagram from one of its own services' ports elsewhere", async () => {
  const base = freeBase();
  await using server = await startServer("servers/inetd.ts", {
    permissions: UDP_PERMISSIONS,
    args: [
      "--hostname",
      "127.0.0.1",
      "--base",
      String(base),
      "--only",
      "echo,chargen",
    ],
  });
  await server.proc.waitForStderr(/\(chargen\/udp\)/);
  // Another inetd's echo at the same base on another address (127.0.0.2)
  // talking to ours: each would answer the other forever.
  assertEquals(
    await udpAsk(base + 19, "x", {
      sourceHostname: "127.0.0.2",
      sourcePort: base + 7,
      timeoutMs: 500,
    }),
    null,
  );
  await server.proc.waitForStderr(
    new RegExp(
      `chargen/udp: dropped datagram from 127\\.0\\.0\\.2:${
        base + 7
      }: source port is a service port`,
    ),
  );
  const control = await udpAsk(base + 19, "x", { sourceHostname: "127.0.0.2" });
  assert(control, "control: an ordinary port on 127.0.0.2 is answered");
});

async function burst(port: number, count: number): Promise<number> {
  const socket = udpSocket();
  try {
    const payload = new Uint8Array(1);
    for (let i = 0; i < count; i++) {
      await socket.send(payload, {
        transport: "udp",
        hostname: "127.0.0.1",
        port,
      });
    }
    let replies = 0;
    while (await receiveOrNull(socket, 700)) replies++;
    return replies;
  } finally {
    socket.close();
  }
}

Deno.test("chargen --udp --udp-rate limits replies per source and counts the drops in the log", async () => {
  {
    await using server = await startChargen(["--udp-rate", "0"]);
    assertEquals(
      await burst(server.port, 40),
      40,
      "control: no limit answers all",
    );
  }
  await using server = await startChargen(["--udp-rate", "5"]);
  const started = performance.now();
  const replies = await burst(server.port, 40);
  const elapsedSeconds = (performance.now() - started) / 1000;
  // A burst of 5, plus at most 5/s refilled while the 40 were answered.
  assert(
    replies >= 5 && replies <= 5 + Math.ceil(elapsedSeconds * 5),
    `${replies} replies in ${elapsedSeconds} s`,
  );
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
  assertMatch(stderr, /dropped reply to 127\.0\.0\.1:\d+: over 5 replies\/s/);
  const counted = [
    ...stderr.matchAll(
      /dropped (\d+) more \(counted, not logged one by one\)/g,
    ),
  ]
    .reduce((sum, m) => sum + Number(m[1]), 0);
  // One drop is logged in full, the rest are counted.
  assertEquals(counted + 1, 40 - replies, stderr);
});

Deno.test({
  name:
    "echo.ts --udp --allow-low-ports still never answers chargen's port (the classic loop)",
  ignore: !asRoot,
  async fn() {
    await using server = await startServer("servers/echo.ts", {
      permissions: UDP_PERMISSIONS,
      args: [
        "--udp",
        "--allow-low-ports",
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
      ],
    });
    let sourcePort = 19;
    try {
      udpSocket({ sourcePort }).close();
    } catch {
      sourcePort = 10019; // 19 taken here: inetd's chargen port will do.
    }
    assertEquals(
      await udpAsk(server.port, "x", { sourcePort, timeoutMs: 500 }),
      null,
    );
    await server.proc.waitForStderr(
      new RegExp(
        `dropped datagram from 127\\.0\\.0\\.1:${sourcePort}: source port is a service port`,
      ),
    );
    const lowPort = freeLowPort();
    const control = await udpAsk(server.port, "x", { sourcePort: lowPort });
    assertEquals(
      new TextDecoder().decode(control!),
      "x",
      "control: another low port is answered",
    );
  },
});
