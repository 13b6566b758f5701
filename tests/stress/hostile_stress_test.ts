/**
 * The hostile-input cases at full size, against the scripts as users run
 * them: a UDP flood from hundreds of source ports of one address, a stderr
 * pipe nobody reads, one host opening thousands of idle connections, and a
 * forged datagram between two of our UDP servers.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { DEFAULT_PER_SOURCE, readExact, writeAll } from "../../mod.ts";
import {
  closing,
  missing,
  repoPath,
  runCommand,
  type ScriptProcess,
  spawn,
} from "../_helpers.ts";
import { freeBase, receiveOrNull } from "../_simple.ts";
import { cannotForge, forgeUdp } from "../_forge.ts";
import { figures, memoryKiB, startServerScript } from "./_stress.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const UDP_PERMISSIONS = ["--unstable-net", "--allow-net"];

Deno.test("chargen.ts --udp: 4,000 datagrams from 500 source ports of one address get the replies of one address", async () => {
  await using server = await startServerScript(
    "servers/chargen.ts",
    ["--udp"],
    {
      permissions: UDP_PERMISSIONS,
    },
  );
  const target = {
    transport: "udp" as const,
    hostname: "127.0.0.1",
    port: server.port,
  };
  const sockets = Array.from(
    { length: 500 },
    () =>
      Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
  );
  let replies = 0;
  const receiving = sockets.map(async (socket) => {
    while (await receiveOrNull(socket, 1500)) replies++;
  });
  const started = performance.now();
  let sent = 0;
  for (let round = 0; round < 8; round++) {
    for (const socket of sockets) {
      await socket.send(new Uint8Array(1), target);
      sent++;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const seconds = (performance.now() - started) / 1000;
  await Promise.all(receiving);
  for (const socket of sockets) socket.close();
  figures("udp-many-ports", {
    sent,
    replies,
    seconds: seconds.toFixed(2),
    ports: sockets.length,
  });
  // The default: a burst of 100, then 100 a second, for the one address.
  assert(
    replies <= 100 + Math.ceil(seconds * 100) + 10,
    `${replies} of ${sent} answered in ${seconds.toFixed(2)} s`,
  );
  assert(replies >= 100, `only ${replies} replies`);
});

Deno.test({
  name:
    "chargen.ts --udp: three floods of 100,000 forged sources each leave it answering, memory bounded",
  ignore: cannotForge(),
  async fn() {
    await using server = await startServerScript(
      "servers/chargen.ts",
      ["--udp"],
      { permissions: UDP_PERMISSIONS },
    );
    // 100,000 distinct addresses in 127.X.0.0/16 and up, one datagram each.
    const script = `
import socket, struct, sys
dst, first = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
udp = struct.pack("!HHHH", 40000, dst, 9, 0) + b"x"
for i in range(100000):
    src = bytes([127, first + (i >> 16), (i >> 8) & 255, i & 255])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 29, 0, 0, 64, 17, 0, src,
                     socket.inet_aton("127.0.0.1"))
    s.sendto(ip + udp, ("127.0.0.1", 0))
`;
    const rss = [memoryKiB(server.pid).rss];
    for (const first of [1, 3, 5]) {
      const { code } = await new Deno.Command("python3", {
        args: ["-c", script, String(server.port), String(first)],
      }).output();
      assertEquals(code, 0);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      rss.push(memoryKiB(server.pid).rss);
    }
    using control = closing(Deno.listenDatagram({
      transport: "udp",
      hostname: "127.0.0.1",
      port: 0,
    }));
    await control.send(new Uint8Array(1), {
      transport: "udp",
      hostname: "127.0.0.1",
      port: server.port,
    });
    const reply = await receiveOrNull(control, 3000);
    figures("udp-forged-sources", {
      sources: "3x100000",
      rssMiB: rss.map((kib) => (kib / 1024).toFixed(1)).join("/"),
    });
    assert(reply, "control: no reply after the floods");
    // RSS follows the garbage collector more than the tables (the
    // unit tests check their bounds: 16,384 rate buckets, 4,096 replies
    // remembered); here, no runaway growth, and service goes on.
    assert(rss[3] < 256 * 1024, `RSS ${rss.join(" ")} KiB`);
  },
});

/** Connects, sends a line, and says whether it came back within `ms`. */
async function echoOnce(port: number, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = (async () => {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, encoder.encode("ping\n"));
    return decoder.decode(await readExact(conn, 5)) === "ping\n";
  })().catch(() => false);
  const timeout = new Promise<false>((resolve) =>
    timer = setTimeout(() => resolve(false), ms)
  );
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("echo.ts with a stderr pipe nobody reads serves 5,000 clients, then reports the log lines it dropped", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net=127.0.0.1:0",
      repoPath("servers/echo.ts"),
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const reader = child.stderr.getReader();
  // Read only the `listening on` line, then stop reading.
  let head = "";
  while (!head.includes("\n")) {
    const { value } = await reader.read();
    head += decoder.decode(value!);
  }
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(head)![1]);
  let served = 0;
  let failedAt = -1;
  const started = performance.now();
  try {
    for (let batch = 0; batch < 250 && failedAt < 0; batch++) {
      const results = await Promise.all(
        Array.from({ length: 20 }, () => echoOnce(port, 5000)),
      );
      for (const ok of results) {
        if (ok) served++;
        else if (failedAt < 0) failedAt = served;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    // Now read again: the server catches up and says what it dropped.
    let tail = "";
    const reading = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        tail += decoder.decode(value, { stream: true });
      }
    })();
    const deadline = performance.now() + 10_000;
    while (
      !/\d+ log lines dropped/.test(tail) && performance.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const afterwards = await echoOnce(port, 5000);
    child.kill("SIGTERM");
    const status = await child.status;
    await reading;
    const dropped = Number(/(\d+) log lines dropped/.exec(tail)?.[1] ?? 0);
    figures("stalled-stderr", {
      served,
      firstFailureAfter: failedAt,
      seconds: seconds.toFixed(1),
      droppedLines: dropped,
      exit: status.code,
    });
    assertEquals(failedAt, -1, `a client was not served after ${served}`);
    assertEquals(served, 5000);
    assert(afterwards, "not served once stderr was read again");
    assert(dropped > 0, `no drop report in:\n${tail.slice(-2000)}`);
    assertEquals(status.code, 0);
    assertMatch(tail, /closed 127\.0\.0\.1:\d+ \(5 bytes in, 5 bytes out\)/);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
    await child.status;
    await reader.cancel().catch(() => {});
  }
});

/**
 * Runs echo.ts with stderr on a terminal (a pty) whose output is stopped,
 * as Ctrl-S does, makes 5,000 connections, then resumes output (Ctrl-Q).
 */
const PAUSED_TERMINAL = `
import os, pty, termios, subprocess, socket, time, sys, re
deno, script = sys.argv[1], sys.argv[2]
master, slave = pty.openpty()
p = subprocess.Popen([deno, "run", "--quiet", "--allow-net=127.0.0.1:0", script,
                      "--hostname", "127.0.0.1", "--port", "0"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=slave, env={**os.environ, "NO_COLOR": "1"})
buf = b""
while b"listening on" not in buf or not buf.endswith(b"\\n"):
    buf += os.read(master, 4096)
port = int(re.search(rb"listening on 127\\.0\\.0\\.1:(\\d+)", buf).group(1))
termios.tcflow(slave, termios.TCOOFF)
served = 0
try:
    for i in range(5000):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"ping\\n")
        if s.recv(5) == b"ping\\n":
            served += 1
        s.close()
except OSError:
    pass
termios.tcflow(slave, termios.TCOON)
os.set_blocking(master, False)
out = b""
deadline = time.time() + 10
while time.time() < deadline and not re.search(rb"\\d+ log lines dropped", out):
    try:
        out += os.read(master, 65536)
    except BlockingIOError:
        time.sleep(0.05)
m = re.search(rb"(\\d+) log lines dropped", out)
p.kill()
print(served, m.group(1).decode() if m else 0)
`;

Deno.test({
  name:
    "echo.ts logging to a terminal paused with Ctrl-S serves 5,000 clients, then reports the lines it dropped",
  ignore: missing("python3"),
  async fn() {
    const { code, stdout, stderr } = await runCommand("python3", [
      "-c",
      PAUSED_TERMINAL,
      Deno.execPath(),
      repoPath("servers/echo.ts"),
    ]);
    assertEquals(code, 0, stderr);
    const [served, dropped] = decoder.decode(stdout).trim().split(" ").map(
      Number,
    );
    figures("paused-terminal", { served, droppedLines: dropped });
    assertEquals(served, 5000);
    assert(dropped > 0, "no drop report once the terminal resumed");
  },
});

Deno.test("echo.ts with defaults: one host opening 4,096 idle connections holds only its share, another host is served", async () => {
  const proc = spawn("servers/echo.ts", {
    permissions: ["--allow-net=[::]:0"],
    args: ["--hostname", "::", "--port", "0"],
  });
  await using _ = proc;
  const port = Number(
    (await proc.waitForStderr(/^listening on \[::\]:(\d+)$/))[1],
  );
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 4096; i++) {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    await proc.until(
      () =>
        countMatching(proc, /^accepted \[::ffff:127\.0\.0\.1\]/) >=
          DEFAULT_PER_SOURCE,
      "the first connections to be accepted",
      30_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const accepted = countMatching(proc, /^accepted \[::ffff:127\.0\.0\.1\]/);
    let other = false;
    {
      using conn = await Deno.connect({ hostname: "::1", port });
      await writeAll(conn, encoder.encode("ping\n"));
      other = await Promise.race([
        readExact(conn, 5).then(
          (b) => decoder.decode(b) === "ping\n",
          () => false,
        ),
        new Promise<false>((resolve) => setTimeout(() => resolve(false), 5000)),
      ]);
    }
    figures("per-source", {
      idleFromOneHost: conns.length,
      accepted,
      otherHostServed: String(other),
    });
    assertEquals(accepted, DEFAULT_PER_SOURCE);
    assert(other, "::1 was not served");
    await proc.waitForStderr(
      /^refused .*too many connections from 127\.0\.0\.1 \(max 256 per source\)/,
    );
  } finally {
    for (const conn of conns) conn.close();
  }
});

function countMatching(proc: ScriptProcess, pattern: RegExp): number {
  return proc.stderrLines.filter((line) => pattern.test(line)).length;
}

/** Counts `needle` in `haystack`. */
function occurrences(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

Deno.test({
  name:
    "two echo.ts --udp --udp-rate 0 processes: a forged datagram between them bounces a few hundred times, not forever",
  ignore: cannotForge(),
  async fn() {
    const args = ["--udp", "--udp-rate", "0", "--print"];
    await using a = await startServerScript("servers/echo.ts", args, {
      permissions: UDP_PERMISSIONS,
    });
    await using b = await startServerScript("servers/echo.ts", args, {
      permissions: UDP_PERMISSIONS,
    });
    const payload = "loop-test-payload\n";
    await forgeUdp(b.port, a.port, encoder.encode(payload));
    await new Promise((resolve) => setTimeout(resolve, 3000));
    a.proc.kill("SIGTERM");
    b.proc.kill("SIGTERM");
    const [outA, outB] = await Promise.all([
      a.proc.finished(),
      b.proc.finished(),
    ]);
    const bounces = occurrences(outA.stdout, payload) +
      occurrences(outB.stdout, payload);
    figures("udp-loop-echo-echo", { bounces, seconds: 3 });
    assert(bounces >= 1, "the forged datagram never arrived");
    // The loop guard judges rounds, not bytes (a client repeating itself
    // is always answered): a loop with no think time ends after
    // LOOP_ROUNDS (200) rounds past the 100/s it allows, about 300 round
    // trips; without the guard it would run for the whole 3 s.
    assert(bounces <= 1000, `${bounces} bounces in 3 s`);
    assertMatch(outA.stderr + outB.stderr, /loop/);
  },
});

Deno.test({
  name:
    "a datagram forged from echo.ts's port to inetd.ts's echo bounces a bounded number of times, not forever",
  ignore: cannotForge(),
  async fn() {
    const base = freeBase();
    const inetd = spawn("servers/inetd.ts", {
      permissions: UDP_PERMISSIONS,
      args: [
        "--hostname",
        "127.0.0.1",
        "--base",
        String(base),
        "--only",
        "echo",
        "--udp-only",
      ],
    });
    await using _inetd = inetd;
    await inetd.waitForStderr(/\(echo\/udp\)|listening on/);
    await using echo = await startServerScript("servers/echo.ts", [
      "--udp",
      "--print",
    ], { permissions: UDP_PERMISSIONS });
    const payload = "forged-to-inetd\n";
    await forgeUdp(echo.port, base + 7, encoder.encode(payload));
    await new Promise((resolve) => setTimeout(resolve, 3000));
    echo.proc.kill("SIGTERM");
    const { stdout } = await echo.proc.finished();
    const bounces = occurrences(stdout, payload);
    figures("udp-loop-inetd-echo", { echoReceived: bounces, seconds: 3 });
    assert(bounces >= 1, "the loop never started: nothing reached echo.ts");
    // Ended by the loop guard or the default rate limit (100 replies a
    // second, a burst of 100) of either side, well before 3 s of a loop at
    // full speed. (From echo.ts's own port, 15000, inetd answers nothing:
    // tests/udp_safety_test.ts.)
    assert(bounces <= 400, `echo.ts received it ${bounces} times`);
  },
});
