/**
 * servers/forward.ts udp:// to udp://: a session per client address,
 * answers to the right client, idle sessions ending, and the protections
 * every UDP server here keeps. Run as a subprocess with the header's
 * permissions for local clients: the listen host, the session sockets'
 * `0.0.0.0:0`, and the target.
 */

import {
  assert,
  assertEquals,
  assertLessOrEqual,
  assertMatch,
} from "@std/assert";
import {
  closing,
  freePort,
  receiveWithin,
  type ScriptProcess,
  startServer,
} from "./_helpers.ts";
import { timeReplies } from "./_simple.ts";

const FORWARD = "servers/forward.ts";
const PERMISSIONS = ["--unstable-net", "--allow-net=127.0.0.1,0.0.0.0:0"];
const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** A UDP target in this process answering `reply(data)`, noting each source port. */
function udpTarget(
  reply: (data: Uint8Array, from: Deno.NetAddr) => Uint8Array | null = (d) => d,
) {
  const socket = closing(
    Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
  );
  const sources: number[] = [];
  const loop = (async () => {
    try {
      while (true) {
        const [data, from] = await socket.receive();
        sources.push((from as Deno.NetAddr).port);
        const answer = reply(data, from as Deno.NetAddr);
        if (answer) await socket.send(answer, from);
      }
    } catch {
      // Closed.
    }
  })();
  return {
    port: (socket.addr as Deno.NetAddr).port,
    sources,
    async [Symbol.asyncDispose]() {
      socket[Symbol.dispose]();
      await loop;
    },
  };
}

function client(port = 0) {
  return closing(
    Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port }),
  );
}

function startUdpForward(targetPort: number, args: string[] = []) {
  return startServer(FORWARD, {
    permissions: PERMISSIONS,
    args: [
      ...args,
      "udp://127.0.0.1:0",
      `udp://127.0.0.1:${targetPort}`,
    ],
  });
}

function to(port: number): Deno.NetAddr {
  return { transport: "udp", hostname: "127.0.0.1", port };
}

async function ask(
  socket: Deno.DatagramConn,
  port: number,
  text: string,
): Promise<string | null> {
  await socket.send(encode(text), to(port));
  const got = await receiveWithin(socket, 2000);
  return got && decode(got[0]);
}

function lines(proc: ScriptProcess, pattern: RegExp): string[] {
  return proc.stderrLines.filter((line) => pattern.test(line));
}

Deno.test("forward.ts udp://: each client gets its own session, and the answers go back to the client that asked", async () => {
  await using target = udpTarget((data, from) =>
    encode(`${decode(data)} via ${from.port}`)
  );
  await using forward = await startUdpForward(target.port);
  using a = client();
  using b = client();
  const answerA = await ask(a, forward.port, "a1");
  const answerB = await ask(b, forward.port, "b1");
  assertMatch(answerA!, /^a1 via \d+$/);
  assertMatch(answerB!, /^b1 via \d+$/);
  const portA = answerA!.split(" via ")[1];
  const portB = answerB!.split(" via ")[1];
  assert(portA !== portB, "two clients shared one session socket");
  // The same session again, and nothing of the other's.
  assertEquals(await ask(a, forward.port, "a2"), `a2 via ${portA}`);
  assertEquals(await ask(b, forward.port, "b2"), `b2 via ${portB}`);
  assertEquals(await receiveWithin(a, 200), null);
  assertEquals(lines(forward.proc, /^accepted 127\.0\.0\.1:/).length, 2);
  forward.proc.kill("SIGTERM");
  const { code, stderr } = await forward.proc.finished();
  assertEquals(code, 0);
  assertMatch(
    stderr,
    new RegExp(
      `closed 127\\.0\\.0\\.1:${
        (a.addr as Deno.NetAddr).port
      } \\(4 bytes in, \\d+ bytes out\\) to 127\\.0\\.0\\.1:${target.port}, [\\d.]+ s, shutdown`,
    ),
  );
});

Deno.test("forward.ts udp:// ends a session idle for --udp-session-timeout; the next datagram starts a new one", async () => {
  await using target = udpTarget();
  await using forward = await startUdpForward(target.port, [
    "--udp-session-timeout",
    "0.3",
  ]);
  using socket = client();
  const port = (socket.addr as Deno.NetAddr).port;
  assertEquals(await ask(socket, forward.port, "one"), "one");
  await forward.proc.waitForStderr(
    new RegExp(
      `^closed 127\\.0\\.0\\.1:${port} \\(3 bytes in, 3 bytes out\\) to 127\\.0\\.0\\.1:${target.port}, [\\d.]+ s, idle for 0\\.3 s$`,
    ),
  );
  assertEquals(await ask(socket, forward.port, "two"), "two");
  assertEquals(target.sources.length, 2);
  assert(target.sources[0] !== target.sources[1], "the session was reused");
});

Deno.test("forward.ts udp:// --max-connections bounds the sessions", async () => {
  await using target = udpTarget();
  await using forward = await startUdpForward(target.port, [
    "--max-connections",
    "1",
  ]);
  using first = client();
  using second = client();
  assertEquals(await ask(first, forward.port, "in"), "in");
  assertEquals(await ask(second, forward.port, "out"), null);
  await forward.proc.waitForStderr(/too many sessions \(max 1\)/);
  assertEquals(target.sources.length, 1);
});

Deno.test("forward.ts udp:// limits answers per client address (--udp-rate) and drops source ports below 1024", async () => {
  await using target = udpTarget();
  await using forward = await startUdpForward(target.port, [
    "--udp-rate",
    "3",
  ]);
  using socket = client();
  const started = performance.now();
  for (let i = 0; i < 10; i++) {
    await socket.send(encode(`${i}`), to(forward.port));
  }
  // A total window (a late answer still counts): a burst of 3, and the
  // tokens 3/s refills while the 10 are answered.
  const { count: answers, lastAt } = await timeReplies(socket, 2000);
  const seconds = (lastAt - started) / 1000;
  assertLessOrEqual(answers, 3 + Math.ceil(seconds * 3), `${seconds} s`);
  assert(answers >= 3, `${answers} answers`);
  await forward.proc.waitForStderr(/over 3 answers\/s/);
  // A privileged source port (an echo, a chargen...) is never forwarded.
  let low: ReturnType<typeof client> | undefined;
  for (const port of [1007, 1009, 1013]) {
    try {
      low = client(port);
      break;
    } catch {
      // Taken, or not root.
    }
  }
  if (!low) {
    console.error("SKIP: the low-port half: cannot bind a port below 1024");
    return;
  }
  using lowSocket = low;
  const before = target.sources.length;
  await lowSocket.send(encode("loop?"), to(forward.port));
  await forward.proc.waitForStderr(/source port below 1024/);
  assertEquals(target.sources.length, before);
});

Deno.test("forward.ts udp:// pointed at itself drops its own datagrams instead of looping", async () => {
  const port = freePort();
  await using forward = await startServer(FORWARD, {
    permissions: PERMISSIONS,
    args: [`udp://127.0.0.1:${port}`, `udp://127.0.0.1:${port}`],
  });
  using socket = client();
  await socket.send(encode("round and round"), to(forward.port));
  await forward.proc.waitForStderr(/one of this forwarder's own sessions/);
  await new Promise((r) => setTimeout(r, 300));
  assertEquals(lines(forward.proc, /^accepted /).length, 1);
});

Deno.test("forward.ts udp:// --deny refuses a client's datagrams", async () => {
  await using target = udpTarget();
  await using forward = await startUdpForward(target.port, [
    "--deny",
    "127.0.0.1",
  ]);
  using socket = client();
  assertEquals(await ask(socket, forward.port, "no"), null);
  await forward.proc.waitForStderr(
    /refused datagram from 127\.0\.0\.1:\d+: not allowed/,
  );
  assertEquals(target.sources.length, 0);
});

Deno.test("forward.ts udp:// with many targets gives each session one in turn, and --check-send finds one that never answers", async () => {
  await using one = udpTarget(() => encode("one"));
  await using two = udpTarget(() => encode("two"));
  await using silent = udpTarget(() => null);
  await using forward = await startServer(FORWARD, {
    permissions: PERMISSIONS,
    args: [
      "--check-interval",
      "0.2",
      "--check-send",
      "PING",
      "udp://127.0.0.1:0",
      ...[one, two, silent].map((t) => `udp://127.0.0.1:${t.port}`),
    ],
  });
  await forward.proc.waitForStderr(
    new RegExp(
      `^target 127\\.0\\.0\\.1:${silent.port} down: no answer within 0\\.2 s \\(3 checks\\), 2 of 3 up$`,
    ),
  );
  const clients = [client(), client(), client(), client()];
  const answers: (string | null)[] = [];
  for (const socket of clients) {
    answers.push(await ask(socket, forward.port, "hi"));
  }
  // A session keeps its target.
  for (const [i, socket] of clients.entries()) {
    assertEquals(await ask(socket, forward.port, "again"), answers[i]);
  }
  assertEquals(answers.sort(), ["one", "one", "two", "two"]);
  for (const socket of clients) socket[Symbol.dispose]();
});

Deno.test("forward.ts udp://: one address with many source ports holds at most --per-source sessions (default 64); another address still gets one", async () => {
  await using target = udpTarget();
  for (const perSource of [undefined, 3]) {
    await using forward = await startServer(FORWARD, {
      // Answers go to the second client's address too.
      permissions: [
        "--unstable-net",
        "--allow-net=127.0.0.1,127.0.0.2,0.0.0.0:0",
      ],
      args: [
        ...(perSource ? ["--per-source", String(perSource)] : []),
        "udp://127.0.0.1:0",
        `udp://127.0.0.1:${target.port}`,
      ],
    });
    const max = perSource ?? 64;
    const sockets = Array.from({ length: max + 6 }, () => client());
    const sourcesBefore = target.sources.length;
    try {
      for (const [i, socket] of sockets.entries()) {
        if (i < max) {
          assertEquals(await ask(socket, forward.port, `a${i}`), `a${i}`);
        } else {
          await socket.send(encode(`a${i}`), to(forward.port));
        }
      }
      // Datagrams are handled in order: once this one is answered, the
      // six before it were refused or forwarded.
      using other = closing(
        Deno.listenDatagram({
          transport: "udp",
          hostname: "127.0.0.2",
          port: 0,
        }),
      );
      assertEquals(await ask(other, forward.port, "b"), "b");
      assertEquals(target.sources.length - sourcesBefore, max + 1);
      await forward.proc.waitForStderr(
        new RegExp(
          `refused datagram from 127\\.0\\.0\\.1:\\d+: too many sessions from 127\\.0\\.0\\.1 \\(max ${max} per source\\)`,
        ),
      );
    } finally {
      for (const socket of sockets) socket.close();
    }
  }
});

Deno.test("forward.ts udp:// --udp-rate 0: a client that sends every answer straight back (an echo, a loop) is dropped within a few hundred rounds", async () => {
  await using target = udpTarget();
  await using forward = await startUdpForward(target.port, [
    "--udp-rate",
    "0",
  ]);
  // The other end of the loop: an echo with no guard of its own.
  const reflector = client();
  let bounced = 0;
  const reflecting = (async () => {
    try {
      while (true) {
        const [data] = await reflector.receive();
        bounced++;
        await reflector.send(data, to(forward.port));
      }
    } catch {
      // Closed.
    }
  })();
  await reflector.send(encode("round and round"), to(forward.port));
  await forward.proc.waitForStderr(
    /dropped datagram from 127\.0\.0\.1:\d+: a loop \(\d+ answers came back/,
  );
  reflector.close();
  await reflecting;
  console.error(`the loop ended after ${bounced} rounds`);
  assert(bounced >= 100, `${bounced}: no loop to stop`);
  assertLessOrEqual(bounced, 600);
});

/** FFI to libc, least privilege, as the forwarder's help gives it. */
const FFI = `--allow-ffi=/lib/${
  Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"
}-linux-gnu/libc.so.6`;

/**
 * Sends `text` and waits up to `ms` for its echo (other datagrams, late
 * echoes of earlier ones, are skipped): the echo, or `null` when none came.
 */
async function echoWithin(
  socket: Deno.DatagramConn,
  port: number,
  text: string,
  ms: number,
): Promise<string | null> {
  await socket.send(encode(text), to(port));
  const deadline = performance.now() + ms;
  while (true) {
    const got = await receiveWithin(socket, deadline - performance.now());
    if (!got) return null;
    if (decode(got[0]) === text) return text;
  }
}

Deno.test("forward.ts udp:// with many targets: a target that answers port unreachable goes down after --fall sessions, and each session's next datagram goes to a live one", async () => {
  const dead = `127.0.0.1:${freePort("127.0.0.1")}`; // nothing listens
  await using echo = await startServer("servers/echo.ts", {
    permissions: ["--unstable-net", "--allow-net=127.0.0.1"],
    args: ["--udp", "--hostname", "127.0.0.1", "--port", "0"],
  });
  await using forward = await startServer(FORWARD, {
    permissions: [...PERMISSIONS, FFI],
    // Sessions end (and log where they went) once idle for 2 s.
    args: [
      "--udp-session-timeout",
      "2",
      "udp://127.0.0.1:0",
      `udp://${dead}`,
      `udp://${echo.address}`,
    ],
  });
  const down = new RegExp(
    `^target ${dead} down: port unreachable \\(3 datagrams refused\\), 1 of 2 up$`,
  );
  // Sessions one after another, each a client that asks, and asks again
  // until answered, as a DNS client does. A datagram sent to the dead
  // target is lost (the port unreachable comes after it); what tells a
  // UDP client so is no answer within its wait (300 ms here). The next
  // one finds the refusal and goes on to the echo.
  let sessions = 0;
  for (; sessions < 20 && !lines(forward.proc, down).length; sessions++) {
    using socket = client();
    const text = `q${sessions}`;
    let answer = await echoWithin(socket, forward.port, text, 300);
    for (let tries = 1; answer === null && tries < 30; tries++) {
      answer = await echoWithin(socket, forward.port, text, 300);
    }
    assertEquals(answer, text);
  }
  await forward.proc.waitForStderr(down);
  // From then on every session's first datagram is answered (10 s: a
  // guard against hanging only).
  for (let i = 0; i < 4; i++, sessions++) {
    using socket = client();
    assertEquals(
      await echoWithin(socket, forward.port, `after ${i}`, 10_000),
      `after ${i}`,
    );
  }
  // Each session's line, once idle: the ones that met the dead target (as
  // many as --fall) say so, and went on to the echo.
  const closed = () => lines(forward.proc, /^closed /);
  await forward.proc.until(() => closed().length === sessions, "every line");
  const moved = closed().filter((line) =>
    line.includes(` to ${echo.address} (after ${dead}: port unreachable), `)
  );
  assertEquals(moved.length, 3, forward.proc.stderr);
  assert(!forward.proc.stderr.includes("note: "), forward.proc.stderr);
});

Deno.test("forward.ts udp:// with many targets and no FFI says, in one line, that port unreachable goes unnoticed", async () => {
  await using forward = await startServer(FORWARD, {
    permissions: PERMISSIONS,
    args: ["udp://127.0.0.1:0", "udp://127.0.0.1:1", "udp://127.0.0.1:2"],
  });
  await forward.proc.waitForStderr(
    /^note: a target that answers port unreachable is noticed by active checks only \(to notice it from the sessions' datagrams: --allow-ffi=/,
  );
});
