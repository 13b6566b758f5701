/**
 * Hostile clients and hostile surroundings: UDP floods from many source
 * ports, UDP loops between two of our own servers, one host holding every
 * slot, a socket file replaced while the server runs, a log nobody reads,
 * TLS clients refused during the handshake. Each test has a control that
 * passes on the good path, so it fails when the protection is missing.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import {
  DEFAULT_PER_SOURCE,
  FloodLog,
  readExact,
  readTlsFiles,
  serve,
  type Service,
  writeAll,
} from "../mod.ts";
import { serveEcho } from "../servers/echo.ts";
import { chargenService, serveChargen } from "../servers/chargen.ts";
import { daytimeService } from "../servers/daytime.ts";
import { timeService } from "../servers/time.ts";
import { qotdService } from "../servers/qotd.ts";
import { udpHelloService } from "../servers/udp.ts";
import {
  LoopGuard,
  MAX_LOOP_HOSTS_PER_PORT,
  MAX_LOOP_PEERS,
  MAX_RATE_SOURCES,
  SourceRateLimiter,
} from "../lib/datagram_guard.ts";
import { sourceKey } from "../lib/source_key.ts";
import {
  assertUsageError,
  closing,
  eventually,
  makeCertificates,
  missing,
  runCommand,
  startServer,
  tlsEngineOption,
} from "./_helpers.ts";
import { countReplies, receiveOrNull } from "./_simple.ts";
import { cannotForge, forgeUdp } from "./_forge.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Collects log lines of an in-process server. */
function logLines(): { lines: string[]; log: (line: string) => void } {
  const lines: string[] = [];
  return { lines, log: (line) => lines.push(line) };
}

function udpClient(hostname = "127.0.0.1"): Deno.DatagramConn & Disposable {
  return closing(Deno.listenDatagram({ transport: "udp", hostname, port: 0 }));
}

// ---------------------------------------------------------------------------
// 1. The UDP reply rate limit is per source address, not per address and port.

Deno.test("UDP replies are limited per source address, whatever the source port", async () => {
  const { lines, log } = logLines();
  await using server = serveChargen({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
    udpRatePerSecond: 10,
    log,
  });
  const { port } = server.addr as Deno.NetAddr;
  const target = { transport: "udp" as const, hostname: "127.0.0.1", port };
  const sockets = Array.from({ length: 100 }, () => udpClient());
  try {
    const started = performance.now();
    for (const socket of sockets) await socket.send(new Uint8Array(1), target);
    // Every socket listens at once, for 2 s: a reply late on a loaded
    // machine is still counted (one socket after another, 50 ms each, a
    // late one was missed); the allowance runs until the last reply came.
    let lastReply = started;
    const replies = (await Promise.all(
      sockets.map((socket) =>
        receiveOrNull(socket, 2000).then((reply) => {
          if (reply) lastReply = Math.max(lastReply, performance.now());
          return reply;
        })
      ),
    )).filter((reply) => reply !== null).length;
    const seconds = (lastReply - started) / 1000;
    // A burst of 10, plus 10 a second refilled meanwhile.
    assert(
      replies >= 10 && replies <= 10 + Math.ceil(seconds * 10),
      `${replies} of 100 answered in ${seconds.toFixed(2)} s`,
    );
  } finally {
    for (const socket of sockets) socket[Symbol.dispose]();
  }
  await server.shutdown();
  assert(
    lines.some((l) =>
      /^dropped reply to 127\.0\.0\.1:\d+: over 10 replies\/s/.test(l)
    ),
    lines.join("\n"),
  );
});

Deno.test("sourceKey: IPv4-mapped is IPv4, IPv6 counts by its /64, Unix by path", () => {
  const udp = (hostname: string) => ({
    transport: "udp" as const,
    hostname,
    port: 5000,
  });
  assertEquals(sourceKey(udp("127.0.0.1")), "127.0.0.1");
  assertEquals(sourceKey(udp("::ffff:127.0.0.1")), "127.0.0.1");
  assertEquals(sourceKey(udp("::FFFF:7f00:1")), "127.0.0.1");
  assertEquals(
    sourceKey(udp("2001:db8:1:2:aaaa::1")),
    sourceKey(udp("2001:db8:1:2:bbbb:cccc:dddd:eeee")),
  );
  assert(
    sourceKey(udp("2001:db8:1:2::1")) !== sourceKey(udp("2001:db8:1:3::1")),
  );
  assertEquals(sourceKey(udp("2001:db8:1:2::1")), "2001:db8:1:2::/64");
  assertEquals(
    sourceKey({ transport: "unixpacket", path: "/tmp/c.sock" }),
    "/tmp/c.sock",
  );
});

Deno.test("SourceRateLimiter keeps at most maxSources buckets, evicting the least recently used", () => {
  const limiter = new SourceRateLimiter(2, { maxSources: 4 });
  assert(limiter.take("victim"));
  assert(limiter.take("victim"));
  assert(!limiter.take("victim"), "a third reply in the same instant");
  for (const other of ["a", "b", "c"]) assert(limiter.take(other));
  assertEquals(limiter.size, 4);
  // Still limited: used more recently than anything evicted so far.
  assert(!limiter.take("victim"));
  for (let i = 0; i < 1000; i++) limiter.take(`spoofed-${i}`);
  assertEquals(limiter.size, 4, "the table never grows past its bound");
});

Deno.test("the UDP tables are bounded by default: 16,384 rate buckets, 4,096 peers for the loop guard", () => {
  const limiter = new SourceRateLimiter(100);
  const guard = new LoopGuard(100, { clock: () => 0 });
  const reply = encoder.encode("x");
  for (let i = 0; i < 20_000; i++) {
    const source = `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`;
    limiter.take(source);
    // As many ports as a spoofing flood likes, as many hosts on each.
    const port = 5000 + i % 100;
    guard.sent({ transport: "udp", hostname: source, port }, reply, true);
  }
  assertEquals(MAX_RATE_SOURCES, 16_384);
  assertEquals(limiter.size, MAX_RATE_SOURCES);
  assertEquals(MAX_LOOP_PEERS, 4096);
  assertEquals(guard.size, MAX_LOOP_PEERS);
  // The most recent are the ones kept: a reply coming back twice at once
  // (the second round with no think time) is scored.
  const peer = (hostname: string, port: number) => ({
    transport: "udp" as const,
    hostname,
    port,
  });
  const newest = peer("10.0.78.31", 5000 + 19_999 % 100);
  const oldest = peer("10.0.0.1", 5001);
  for (const source of [newest, oldest]) {
    guard.isLoop(source, reply);
    guard.sent(source, reply, true);
    guard.isLoop(source, reply);
  }
  assertEquals(guard.score(newest), 1);
  assertEquals(guard.score(oldest), 0);
});

Deno.test("LoopGuard: a flood of hosts on one port costs a bounded walk and never pushes out a loop's peer", () => {
  let now = 0;
  const guard = new LoopGuard(100, { clock: () => now });
  const reply = encoder.encode("loop");
  const peer = (hostname: string) => ({
    transport: "udp" as const,
    hostname,
    port: 7,
  });
  // A loop with 10.0.0.1:7, half way to being stopped.
  for (let round = 0; round < 200; round++) {
    guard.sent(peer("10.0.0.1"), reply, true);
    now += 0.1;
    guard.isLoop(peer("10.0.0.1"), reply);
  }
  const score = guard.score(peer("10.0.0.1"));
  assert(score > 150, `${score}`);
  for (let i = 0; i < 5000; i++) {
    guard.sent(peer(`10.1.${i >> 8}.${i & 255}`), reply, true);
  }
  assertEquals(guard.size, MAX_LOOP_HOSTS_PER_PORT);
  assertEquals(guard.score(peer("10.0.0.1")), score);
});

// ---------------------------------------------------------------------------
// 3. Flood counts come each second while the flood lasts, not at shutdown.

Deno.test("FloodLog reports the count of a flood within an interval, without waiting for another event or flush()", async () => {
  const { lines, log } = logLines();
  const flood = new FloodLog(log, "refused", 100);
  for (let i = 0; i < 5; i++) flood.event(`127.0.0.1:${5000 + i}: not allowed`);
  assertEquals(lines, ["refused 127.0.0.1:5000: not allowed"]);
  // The flood stops; nobody calls flush(): the interval's timer writes the
  // count (the wait's deadline only stops a hang).
  await eventually(() => lines.length === 2, () => `log:\n${lines.join("\n")}`);
  assertEquals(lines, [
    "refused 127.0.0.1:5000: not allowed",
    "refused 4 more (counted, not logged one by one)",
  ]);
  flood.flush();
});

Deno.test("FloodLog writes one count per interval while a flood lasts, and a line in full after a quiet interval", () => {
  const { lines, log } = logLines();
  let now = 0;
  const flood = new FloodLog(log, "refused", 100, "", { now: () => now });
  // An event every 10 ms for 450 ms: the first in full, then a count for
  // each interval that ends while the flood goes on.
  for (; now < 450; now += 10) flood.event("127.0.0.1: not allowed");
  flood.flush();
  assertEquals(lines, [
    "refused 127.0.0.1: not allowed",
    "refused 9 more (counted, not logged one by one)",
    "refused 10 more (counted, not logged one by one)",
    "refused 10 more (counted, not logged one by one)",
    "refused 10 more (counted, not logged one by one)",
    "refused 5 more (counted, not logged one by one)",
  ]);
  // A quiet interval later, the next event is logged in full again.
  now += 150;
  flood.event("127.0.0.1: not allowed");
  assertEquals(lines.at(-1), "refused 127.0.0.1: not allowed");
  flood.flush();
});

Deno.test("refused clients of a full server are counted in the log each second, before shutdown", async () => {
  const { lines, log } = logLines();
  await using server = serveEcho({
    hostname: "127.0.0.1",
    port: 0,
    maxConnections: 1,
    log,
  });
  const { port } = server.addr as Deno.NetAddr;
  using _held = await Deno.connect({ hostname: "127.0.0.1", port });
  await eventually(
    () => lines.some((l) => l.startsWith("accepted")),
    () => `log:\n${lines.join("\n")}`,
  );
  // 30 refusals over at least 2.1 s: a flood that spans two intervals.
  for (let i = 0; i < 30; i++) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.read(new Uint8Array(1)).catch(() => null);
    await new Promise((resolve) => setTimeout(resolve, 70));
  }
  // Every refusal is in the log before shutdown: the first in full, the
  // rest in the counts the interval's timer writes (one more comes one
  // interval after the last refusal; the wait's deadline only stops a hang).
  await eventually(
    () => refusals(lines) === 30,
    () => `log:\n${lines.join("\n")}`,
    15_000,
  );
  assertMatch(lines.find((l) => l.startsWith("refused "))!, /^refused 127/);
  // Counted each interval, not once at the end: two count lines at least.
  assert(
    lines.filter((l) => /^refused \d+ more/.test(l)).length >= 2,
    lines.join("\n"),
  );
});

/** Refusals in the log: lines of one, plus the counts of `refused N more`. */
function refusals(lines: string[]): number {
  let total = 0;
  for (const line of lines) {
    if (!line.startsWith("refused ")) continue;
    const match = /^refused (\d+) more/.exec(line);
    total += match ? Number(match[1]) : 1;
  }
  return total;
}

// ---------------------------------------------------------------------------
// 4. One host cannot take every slot.

/** Whether the server closed `conn` at once (refused) rather than serving it. */
async function refused(conn: Deno.Conn): Promise<boolean> {
  try {
    await writeAll(conn, encoder.encode("ping"));
    const buffer = new Uint8Array(4);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buffer),
      new Promise<"slow">((resolve) =>
        timer = setTimeout(() => resolve("slow"), 3000)
      ),
    ]);
    clearTimeout(timer);
    if (n === "slow") throw new Error("neither served nor refused");
    return n === null;
  } catch (error) {
    if (
      error instanceof Deno.errors.ConnectionReset ||
      error instanceof Deno.errors.BrokenPipe
    ) return true;
    throw error;
  }
}

Deno.test("perSource: one address holds at most N connections; another address is still served", async () => {
  const { lines, log } = logLines();
  await using server = serveEcho({
    hostname: "::",
    port: 0,
    perSource: 3,
    log,
  });
  const { port } = server.addr as Deno.NetAddr;
  const held: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      // IPv4 clients of a dual-stack socket arrive IPv4-mapped: the same source.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      held.push(conn);
      assert(!(await refused(conn)), `connection ${i + 1} of 3 was refused`);
    }
    {
      using fourth = await Deno.connect({ hostname: "127.0.0.1", port });
      assert(
        await refused(fourth),
        "a fourth connection from 127.0.0.1 was served",
      );
    }
    {
      using other = await Deno.connect({ hostname: "::1", port });
      assert(!(await refused(other)), "::1 was refused");
    }
    held.pop()!.close();
    await eventually(
      () =>
        lines.filter((l) => l.startsWith("closed [::ffff:127.0.0.1]")).length >=
          1,
      () => `log:\n${lines.join("\n")}`,
    );
    using again = await Deno.connect({ hostname: "127.0.0.1", port });
    assert(!(await refused(again)), "a freed slot was not given again");
  } finally {
    for (const conn of held) conn.close();
  }
  assert(
    lines.some((l) =>
      /^refused \[::ffff:127\.0\.0\.1\]:\d+: too many connections from 127\.0\.0\.1 \(max 3 per source\)$/
        .test(l)
    ),
    lines.join("\n"),
  );
});

Deno.test("perSource: the default keeps one host from holding every slot", () => {
  assertEquals(DEFAULT_PER_SOURCE, 256);
  assert(DEFAULT_PER_SOURCE * 16 <= 4096);
});

Deno.test({
  name: "perSource counts TLS handshakes in progress",
  ignore: missing("openssl"),
  async fn() {
    await using certs = await makeCertificates();
    const { lines, log } = logLines();
    await using server = serveEcho({
      hostname: "127.0.0.1",
      port: 0,
      perSource: 2,
      tls: readTlsFiles(certs.cert, certs.key),
      ...tlsEngineOption(),
      log,
    });
    const { port } = server.addr as Deno.NetAddr;
    // Two clients that connect and never start their handshake.
    using _a = await Deno.connect({ hostname: "127.0.0.1", port });
    using _b = await Deno.connect({ hostname: "127.0.0.1", port });
    await new Promise((resolve) => setTimeout(resolve, 200));
    using third = await Deno.connect({ hostname: "127.0.0.1", port });
    const n = await third.read(new Uint8Array(1)).catch(() => null);
    assertEquals(n, null, "a third connection was held open");
    await eventually(
      () =>
        lines.some((l) =>
          /too many connections from 127\.0\.0\.1 \(max 2 per source\)/.test(l)
        ),
      () => `log:\n${lines.join("\n")}`,
    );
  },
});

Deno.test("echo.ts --per-source 1 holds one connection per address; --per-source with --udp or --unix is a usage error", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0", "--per-source", "1"],
  });
  using first = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  });
  assert(!(await refused(first)), "the first connection was refused");
  {
    using second = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    assert(await refused(second), "a second connection was served");
  }
  await server.proc.waitForStderr(
    /^refused 127\.0\.0\.1:\d+: too many connections from 127\.0\.0\.1 \(max 1 per source\)$/,
  );
  for (
    const args of [
      ["--udp", "--per-source", "1"],
      ["--unix", "/tmp/hostile-never.sock", "--per-source", "1"],
    ]
  ) {
    await assertUsageError(
      "servers/echo.ts",
      ["--allow-net=127.0.0.1:0"],
      args,
      /^error: --per-source applies to TCP only$/,
    );
  }
  await assertUsageError(
    "servers/echo.ts",
    ["--allow-net=127.0.0.1:0"],
    ["--per-source", "many"],
    /^error: invalid value 'many' for --per-source/,
  );
});

Deno.test("perSource does not apply to Unix sockets", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hostile-unix-" });
  try {
    const path = `${dir}/echo.sock`;
    const server = serveEcho({
      transport: "unix",
      path,
      perSource: 1,
      log: () => {},
    });
    await server.ready;
    const a = await Deno.connect({ transport: "unix", path });
    const b = await Deno.connect({ transport: "unix", path });
    for (const conn of [a, b]) {
      await writeAll(conn, encoder.encode("hi"));
      assertEquals(decoder.decode(await readExact(conn, 2)), "hi");
      conn.close();
    }
    await server.shutdown();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// 2. A Unix stream server never removes what is not its own socket.

function unixPermissions(path: string): string[] {
  return [
    `--allow-net=unix:${path}`,
    `--allow-read=${path}`,
    `--allow-write=${path}`,
  ];
}

Deno.test("echo.ts --unix: a regular file put at its path while it runs survives its shutdown", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hostile-unix-" });
  try {
    const path = `${dir}/echo.sock`;
    const server = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    await using _ = server;
    await Deno.remove(path);
    await Deno.writeTextFile(path, "keep me");
    server.proc.kill("SIGTERM");
    const { code, stderr } = await server.proc.finished();
    assertEquals(code, 0, stderr);
    assertEquals(await Deno.readTextFile(path), "keep me");
    assertMatch(stderr, /is no longer this server's socket; left in place/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("echo.ts --unix: another server's live socket put at its path survives its shutdown", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hostile-unix-" });
  try {
    const path = `${dir}/echo.sock`;
    const first = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    await using _first = first;
    // The replacement: a second server, started once the path is free.
    await Deno.remove(path);
    const second = await startServer("servers/echo.ts", {
      permissions: unixPermissions(path),
      args: ["--unix", path],
    });
    await using _second = second;
    const inode = (await Deno.lstat(path)).ino;
    first.proc.kill("SIGTERM");
    const { code, stderr } = await first.proc.finished();
    assertEquals(code, 0, stderr);
    assertEquals(
      (await Deno.lstat(path)).ino,
      inode,
      "the second socket was removed",
    );
    {
      using conn = await Deno.connect({ transport: "unix", path });
      await writeAll(conn, encoder.encode("still here"));
      assertEquals(decoder.decode(await readExact(conn, 10)), "still here");
    }
    // And its own socket goes when it stops.
    second.proc.kill("SIGTERM");
    assertEquals((await second.proc.finished()).code, 0);
    await assertGone(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function assertGone(path: string): Promise<void> {
  try {
    await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  throw new Error(`${path} is still there`);
}

// ---------------------------------------------------------------------------
// 5. No loop between two of our UDP servers, whatever their flags.

/** A service that counts the datagrams it is handed. */
function counting(service: Service): Service & { received: number } {
  const counted = {
    ...service,
    received: 0,
    datagram(data: Uint8Array, source: Deno.Addr) {
      counted.received++;
      return service.datagram!(data, source);
    },
  };
  return counted;
}

/** Takes the hello service's printing and throws it away. */
const sink = { write: (p: Uint8Array) => Promise.resolve(p.byteLength) };

const LOOP_PAIRS: [string, () => Service, () => Service][] = [
  ["echo and echo", echo, echo],
  ["echo and chargen", echo, chargenService],
  ["chargen and chargen", chargenService, chargenService],
  ["chargen and daytime", chargenService, () => daytimeService()],
  ["daytime and time", () => daytimeService(), () => timeService()],
  [
    "qotd and qotd (other quotations)",
    () => qotdService([encoder.encode("One thing.\r\n")]),
    () => qotdService([encoder.encode("Another thing.\r\n")]),
  ],
  [
    "udp hello and chargen",
    () => udpHelloService({ output: sink }),
    chargenService,
  ],
  [
    "udp hello and udp hello",
    () => udpHelloService({ output: sink }),
    () => udpHelloService({ output: sink }),
  ],
];

function echo(): Service {
  return {
    name: "echo",
    defaultPort: 7,
    datagram: (data) => data,
  };
}

for (const [name, makeA, makeB] of LOOP_PAIRS) {
  Deno.test({
    name:
      `a forged datagram starts no endless loop between ${name}, even with no rate limit`,
    ignore: cannotForge(),
    async fn() {
      const a = counting(makeA());
      const b = counting(makeB());
      const { lines, log } = logLines();
      const options = {
        transport: "udp" as const,
        hostname: "127.0.0.1",
        port: 0,
        udpRatePerSecond: 0,
        log,
      };
      await using serverA = serve(a, options);
      await using serverB = serve(b, options);
      const portA = (serverA.addr as Deno.NetAddr).port;
      const portB = (serverB.addr as Deno.NetAddr).port;
      await forgeUdp(portB, portA, encoder.encode("start\n"));
      // The loop ends when one of the two drops its datagram as a loop's:
      // nothing is in flight after that.
      const deadline = Date.now() + 10_000; // guards against a hang only
      while (!lines.some((line) => / a loop \(/.test(line))) {
        assert(Date.now() < deadline, `no loop dropped: ${lines.join("\n")}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const exchanges = a.received + b.received;
      assert(a.received >= 1, "the forged datagram never arrived");
      assert(exchanges <= 2 * 600, `${exchanges} datagrams bounced`);
    },
  });
}

for (const kind of ["sync", "async"] as const) {
  Deno.test(
    `${
      kind === "sync" ? "a synchronous" : "an asynchronous"
    } datagram handler that throws costs one log line; the next datagram is answered`,
    async () => {
      const { lines, log } = logLines();
      const fail = (data: Uint8Array) => {
        if (decoder.decode(data) === "boom") throw new Error("handler broke");
        return data;
      };
      await using server = serve({
        name: "echo",
        defaultPort: 7,
        datagram: kind === "sync"
          ? fail
          : (data) => Promise.resolve(fail(data)),
      }, { transport: "udp", hostname: "127.0.0.1", port: 0, log });
      const { port } = server.addr as Deno.NetAddr;
      const target = { transport: "udp" as const, hostname: "127.0.0.1", port };
      using client = udpClient();
      await client.send(encoder.encode("boom"), target);
      await client.send(encoder.encode("fine"), target);
      assertEquals(
        decoder.decode((await receiveOrNull(client, 2000))!),
        "fine",
      );
      assertEquals(
        lines.filter((line) => / failed: handler broke$/.test(line)).length,
        1,
        lines.join("\n"),
      );
    },
  );
}

Deno.test("control: an echo client repeating the same datagram, and a burst, are all answered", async () => {
  await using server = serve(echo(), {
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
    udpRatePerSecond: 0,
    log: () => {},
  });
  const { port } = server.addr as Deno.NetAddr;
  const target = { transport: "udp" as const, hostname: "127.0.0.1", port };
  using client = udpClient();
  for (let i = 0; i < 50; i++) {
    await client.send(encoder.encode("ping"), target);
    assertEquals(decoder.decode((await receiveOrNull(client, 2000))!), "ping");
  }
  for (let i = 0; i < 20; i++) {
    await client.send(encoder.encode(`n${i}`), target);
  }
  // All 20, however late (and the window then shows no 21st).
  assertEquals(await countReplies(client, 5000, 20), 20);
  assertEquals(await receiveOrNull(client, 200), null);
});

// ---------------------------------------------------------------------------
// 6. A TLS client refused during the handshake gets an alert, not a cut.

Deno.test({
  name:
    "a TLS client refused for its protocol version or its ciphers gets an alert",
  ignore: missing("openssl"),
  async fn() {
    await using certs = await makeCertificates();
    await using server = serveEcho({
      hostname: "127.0.0.1",
      port: 0,
      tls: readTlsFiles(certs.cert, certs.key),
      ...tlsEngineOption(),
      log: () => {},
    });
    const { port } = server.addr as Deno.NetAddr;
    const sClient = (args: string[]) =>
      runCommand(
        "openssl",
        [
          "s_client",
          "-connect",
          `127.0.0.1:${port}`,
          "-CAfile",
          certs.ca,
          ...args,
        ],
        "",
        10_000,
      );
    {
      const control = await sClient(["-brief"]);
      assertMatch(control.stderr, /CONNECTION ESTABLISHED/, control.stderr);
    }
    for (
      const [args, alert] of [
        [
          ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
          /alert protocol version/,
        ],
        [["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"], /alert protocol version/],
        [["-tls1_2", "-cipher", "AES128-SHA"], /alert handshake failure/],
        [
          ["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"],
          /alert handshake failure/,
        ],
        [["-servername", "x..y"], /alert illegal parameter/],
      ] as const
    ) {
      const { stderr, stdout } = await sClient([...args]);
      const output = stderr + decoder.decode(stdout);
      assertMatch(output, alert, `${args.join(" ")}:\n${output}`);
    }
    // Not TLS at all: decode_error, as Deno.listenTls says it.
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, encoder.encode("GET / HTTP/1.0\r\n\r\n"));
    const reply = await readExact(conn, 7);
    assertEquals([...reply], [21, 3, 3, 0, 2, 2, 50]);
  },
});
