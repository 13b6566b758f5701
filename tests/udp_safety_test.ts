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
import { ECHO_PORT } from "../servers/echo.ts";
import { bindable, startServer } from "./_helpers.ts";
import {
  countReplies,
  freeBase,
  receiveOrNull,
  udpAsk,
  udpSocket,
} from "./_simple.ts";
import { cannotForge, forgeUdp } from "./_forge.ts";

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

/**
 * inetd.ts on 127.0.0.1 at a free base, with `more` (`--only`,
 * `--udp-only`); the server, with its base.
 */
async function startInetd(more: string[]) {
  const base = freeBase();
  const server = await startServer("servers/inetd.ts", {
    permissions: UDP_PERMISSIONS,
    args: ["--hostname", "127.0.0.1", "--base", String(base), ...more],
  });
  return Object.assign(server, { base });
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
  await using server = await startInetd(["--only", "echo,chargen"]);
  const { base } = server;
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
    // A total window: a late reply on a loaded machine still counts.
    return await countReplies(socket, 3000, count);
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

// ---------------------------------------------------------------------------
// The loop guard tells a loop from a client by what only a loop does, never
// by a datagram's bytes alone (issue 23, defect 1).

async function startEcho(args: string[] = []) {
  return await startServer("servers/echo.ts", {
    permissions: UDP_PERMISSIONS,
    args: ["--udp", "--hostname", "127.0.0.1", "--port", "0", ...args],
  });
}

Deno.test("echo.ts --udp answers a client that sends the same line again, every time", async () => {
  await using server = await startEcho();
  const socket = udpSocket();
  try {
    const to = {
      transport: "udp" as const,
      hostname: "127.0.0.1",
      port: server.port,
    };
    const answers: string[] = [];
    for (let i = 0; i < 3; i++) {
      await socket.send(new TextEncoder().encode("ping\n"), to);
      const reply = await receiveOrNull(socket, 2000);
      answers.push(reply ? new TextDecoder().decode(reply) : "(none)");
      // A person typing the line again: elapsed time is what is tested.
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    assertEquals(answers, ["ping\n", "ping\n", "ping\n"]);
  } finally {
    socket.close();
  }
  assertEquals(
    server.proc.stderrLines.filter((line) => /dropped/.test(line)),
    [],
  );
});

Deno.test("echo.ts --udp answers a fixed 64-byte payload from 32 sockets at full speed, within the rate limit", async () => {
  await using server = await startEcho();
  const payload = new Uint8Array(64).fill(0x61);
  const to = {
    transport: "udp" as const,
    hostname: "127.0.0.1",
    port: server.port,
  };
  const sockets = Array.from({ length: 32 }, () => udpSocket());
  try {
    // 3 round trips a socket, 96 in all: inside the default burst of 100
    // replies to one address, so every one is answered.
    let answered = 0;
    await Promise.all(sockets.map(async (socket) => {
      for (let round = 0; round < 3; round++) {
        await socket.send(payload, to);
        const reply = await receiveOrNull(socket, 2000);
        if (reply && reply.byteLength === 64) answered++;
      }
    }));
    assertEquals(answered, 96);
  } finally {
    for (const socket of sockets) socket.close();
  }
});

Deno.test("daytime, time, qotd and chargen over UDP answer any datagram, CRLF-ended text included (RFC 867, 868)", async () => {
  await using server = await startInetd([
    "--udp-only",
    "--only",
    "daytime,time,qotd,chargen",
  ]);
  const { base } = server;
  await server.proc.waitForStderr(/\(time\/udp\)/);
  const unanswered: string[] = [];
  for (
    const [name, port] of [["daytime", 13], ["time", 37], ["qotd", 17], [
      "chargen",
      19,
    ]] as const
  ) {
    for (
      const request of ["what time is it?\r\n", "Tue Nov 24 23:37:45 2026\r\n"]
    ) {
      if (!await udpAsk(base + port, request)) {
        unanswered.push(`${name}: ${JSON.stringify(request)}`);
      }
    }
  }
  assertEquals(unanswered, []);
});

Deno.test({
  name:
    "two echo.ts --udp --udp-rate 0 pointed at each other stop within a few hundred round trips",
  ignore: cannotForge(),
  async fn() {
    // --print: each echo writes what it receives, so stdout counts the bounces.
    await using a = await startEcho(["--udp-rate", "0", "--print"]);
    await using b = await startEcho(["--udp-rate", "0", "--print"]);
    const payload = "loop!\n";
    await forgeUdp(b.port, a.port, new TextEncoder().encode(payload));
    const loop =
      /dropped datagram from 127\.0\.0\.1:\d+: a loop \((\d+) replies came back/;
    await Promise.any([a.proc.waitForStderr(loop), b.proc.waitForStderr(loop)]);
    a.proc.kill("SIGTERM");
    b.proc.kill("SIGTERM");
    const [ra, rb] = await Promise.all([a.proc.finished(), b.proc.finished()]);
    const received = (ra.stdout.length + rb.stdout.length) / payload.length;
    console.error(`the loop ended after ${received} datagrams`);
    assert(received >= 2 * 100, `${received}: no loop to stop`);
    assertLessOrEqual(received, 2 * 600, "more than 600 round trips");
  },
});

Deno.test("inetd.ts's echo never answers a datagram forged from echo.ts's port", async () => {
  await using server = await startInetd(["--udp-only", "--only", "echo"]);
  const { base } = server;
  // echo.ts elsewhere (127.0.0.2:15000), which would answer back forever.
  const from = { sourceHostname: "127.0.0.2", sourcePort: ECHO_PORT };
  if (!bindable(from.sourceHostname, from.sourcePort)) {
    console.error(`SKIP: ${from.sourceHostname}:${ECHO_PORT} is taken here`);
    return;
  }
  assertEquals(await udpAsk(base + 7, "x", { ...from, timeoutMs: 500 }), null);
  await server.proc.waitForStderr(
    new RegExp(
      `dropped datagram from 127\\.0\\.0\\.2:${ECHO_PORT}: source port is a service port`,
    ),
  );
  assert(
    await udpAsk(base + 7, "x", { sourceHostname: "127.0.0.2" }),
    "control: an ordinary port on 127.0.0.2 is answered",
  );
});
