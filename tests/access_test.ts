import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
  assertThrows,
} from "@std/assert";
import { AccessList, Cidr, CidrError } from "../mod.ts";
import { serveEcho } from "../servers/echo.ts";
import {
  missing,
  readAll,
  runCommand,
  runScript,
  startServer,
} from "./_helpers.ts";

// --- The reference: 128-bit BigInt arithmetic on addresses we format
// ourselves, never parsed by the code under test. -------------------------

/** xorshift32: a seeded generator, so a failure names a reproducible case. */
function generator(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const MAPPED = 0xffffn << 32n;
const ALL_ONES = (1n << 128n) - 1n;

interface Case {
  /** The address in the shared 128-bit space (IPv4 mapped). */
  value: bigint;
  /** Whether it is IPv4 (so it may be written dotted). */
  v4: boolean;
}

function randomAddress(random: () => number): Case {
  if (random() < 0.5) {
    const v4 = BigInt(Math.floor(random() * 2 ** 32));
    return { value: MAPPED | v4, v4: true };
  }
  // Many zero groups, so `::` compression is exercised.
  let value = 0n;
  for (let i = 0; i < 8; i++) {
    const group = random() < 0.4 ? 0 : Math.floor(random() * 0x10000);
    value = (value << 16n) | BigInt(group);
  }
  return { value, v4: (value >> 32n) === 0xffffn };
}

/**
 * Writes an address in one of its many valid spellings; `family` forces
 * plain dotted IPv4 or an IPv6 spelling (for a block, the spelling decides
 * whether the prefix counts 32 or 128 bits).
 */
function spell(
  address: Case,
  random: () => number,
  family?: "v4" | "v6",
): string {
  const { value } = address;
  if (address.v4 && (family === "v4" || random() < 0.6)) {
    const v4 = Number(value & 0xffffffffn);
    const dotted = [v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255]
      .join(".");
    const style = family === "v4" ? 0 : random();
    if (style < 0.6 && family !== "v6") return dotted;
    return style < 0.8 ? `::ffff:${dotted}` : `0:0:0:0:0:FFFF:${dotted}`;
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) {
    let hex = Number((value >> BigInt(16 * i)) & 0xffffn).toString(16);
    if (random() < 0.2) hex = hex.padStart(4, "0");
    if (random() < 0.2) hex = hex.toUpperCase();
    groups.push(hex);
  }
  // Compress one run of zero groups (not always the longest one).
  const runs: [number, number][] = [];
  for (let i = 0; i < 8; i++) {
    if (!/^0+$/.test(groups[i])) continue;
    let j = i;
    while (j < 8 && /^0+$/.test(groups[j])) j++;
    runs.push([i, j]);
    i = j;
  }
  if (runs.length > 0 && random() < 0.8) {
    const [start, end] = runs[Math.floor(random() * runs.length)];
    return `${groups.slice(0, start).join(":")}::${
      groups.slice(end).join(":")
    }`;
  }
  return groups.join(":");
}

function referenceContains(
  network: bigint,
  prefix128: number,
  address: bigint,
): boolean {
  const shift = BigInt(128 - prefix128);
  return (network >> shift) === (address >> shift);
}

Deno.test("Cidr matches 10,000 random cases exactly as BigInt arithmetic does", () => {
  const random = generator(20261125);
  let inside = 0;
  for (let n = 0; n < 10_000; n++) {
    const block = randomAddress(random);
    const v4Block = block.v4 && random() < 0.7;
    const prefix = Math.floor(random() * ((v4Block ? 32 : 128) + 1));
    const prefix128 = v4Block ? prefix + 96 : prefix;
    // Half the peers are drawn inside the block (host bits randomised),
    // the rest anywhere, with one bit near the prefix flipped at times.
    let peer: Case;
    const draw = random();
    if (draw < 0.5) {
      const hostMask = ALL_ONES >> BigInt(prefix128);
      const host = randomAddress(random).value & hostMask;
      const value = (block.value & ~hostMask & ALL_ONES) | host;
      peer = { value, v4: (value >> 32n) === 0xffffn };
    } else if (draw < 0.75 && prefix128 > 0) {
      const value = block.value ^ (1n << BigInt(128 - prefix128));
      peer = { value, v4: (value >> 32n) === 0xffffn };
    } else {
      peer = randomAddress(random);
    }
    const blockText = `${
      spell(block, random, v4Block ? "v4" : "v6")
    }/${prefix}`;
    const peerText = spell(peer, random);
    const expected = referenceContains(block.value, prefix128, peer.value);
    if (expected) inside++;
    const cidr = Cidr.parse(blockText);
    assertEquals(
      cidr.contains(peerText),
      expected,
      `case ${n}: ${peerText} in ${blockText}`,
    );
    assertEquals(cidr.prefix, prefix, `case ${n}: prefix of ${blockText}`);
    // The normalised text parses back to the same block.
    assertEquals(Cidr.parse(cidr.text).contains(peerText), expected);
    const access = new AccessList({ allow: [blockText] });
    assertEquals(access.allowsAddress(peerText), expected, `case ${n}`);
    const denied = new AccessList({ deny: [blockText] });
    assertEquals(denied.allowsAddress(peerText), !expected, `case ${n}`);
  }
  // Both outcomes are well represented.
  assert(inside > 3000 && inside < 7000, `${inside} inside`);
});

Deno.test("Cidr.parse() refuses what is not an address block, naming it", () => {
  for (
    const bad of [
      "",
      "localhost",
      "10.0.0.0/33",
      "10.0.0.0/",
      "10.0.0.0/08",
      "10.0.0/8",
      "010.0.0.1",
      "256.0.0.1",
      "1.2.3.4.5",
      "::1/129",
      "1::2::3",
      "12345::",
      ":::",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7:8::",
      "1.2.3.4::",
      "::1.2.3",
      "fe80::1%eth0",
      "10.0.0.0/8/8",
      " 10.0.0.1",
    ]
  ) {
    const error = assertThrows(
      () => Cidr.parse(bad),
      CidrError,
      `'${bad}'`,
      `accepted '${bad}'`,
    );
    assertEquals(error.input, bad);
  }
  assertEquals(Cidr.parse("10.1.2.3/8").text, "10.0.0.0/8");
  assertEquals(
    Cidr.parse("2001:DB8:0:0:1:0:0:1/128").text,
    "2001:db8::1:0:0:1/128",
  );
  assertEquals(Cidr.parse("::ffff:10.0.0.1/104").contains("10.9.9.9"), true);
  assertEquals(Cidr.parse("::/0").contains("192.0.2.1"), true);
  assertEquals(Cidr.parse("0.0.0.0/0").contains("::1"), false);
});

Deno.test("AccessList: deny before allow, any allow refuses the rest, Unix peers", () => {
  const tcp = (hostname: string): Deno.NetAddr => ({
    transport: "tcp",
    hostname,
    port: 4000,
  });
  const unix: Deno.UnixAddr = { transport: "unix", path: "/tmp/x.sock" };
  const list = new AccessList({
    allow: ["10.0.0.0/8", "fd00::/8"],
    deny: ["10.6.0.0/16", "fd00::66"],
  });
  assertEquals(list.allows(tcp("10.1.1.1")), true);
  assertEquals(list.allows(tcp("::ffff:10.1.1.1")), true);
  assertEquals(list.allows(tcp("10.6.1.1")), false);
  assertEquals(list.allows(tcp("::ffff:10.6.1.1")), false);
  assertEquals(list.allows(tcp("fd00::1")), true);
  assertEquals(list.allows(tcp("fd00::66")), false);
  assertEquals(list.allows(tcp("fe80::1%2")), false);
  assertEquals(list.allows(tcp("11.0.0.1")), false);
  assertEquals(list.allows(unix), false);
  const denyOnly = new AccessList({ deny: ["127.0.0.1"] });
  assertEquals(denyOnly.allows(tcp("127.0.0.2")), true);
  assertEquals(denyOnly.allows(tcp("127.0.0.1")), false);
  assertEquals(denyOnly.allows(unix), true);
  assertEquals(new AccessList({}).empty, true);
});

/** Connects from `bind` with socat, sends `line`, returns what came back. */
async function socatFrom(
  bind: string,
  target: string,
  line: string,
  udp = false,
): Promise<string> {
  const address = udp
    ? `UDP:${target},bind=${bind}`
    : `TCP:${target},bind=${bind}`;
  const { stdout } = await runCommand(
    "socat",
    ["-t", "1", "-T", "2", "-", address],
    line,
  );
  return new TextDecoder().decode(stdout);
}

Deno.test({
  name:
    "echo.ts on 0.0.0.0 with --allow 127.0.0.2/32 serves 127.0.0.2 and refuses 127.0.0.1 without a byte",
  ignore: missing("socat"),
  async fn() {
    await using server = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=0.0.0.0:0"],
      args: ["--hostname", "0.0.0.0", "--port", "0", "--allow", "127.0.0.2/32"],
    });
    const target = `127.0.0.1:${server.port}`;
    assertEquals(await socatFrom("127.0.0.2", target, "hello\n"), "hello\n");
    assertEquals(await socatFrom("127.0.0.1", target, "hello\n"), "");
    // A refused client gets end of stream (or a reset), never a byte.
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    let received: Uint8Array;
    try {
      received = await readAll(conn);
    } catch (error) {
      assert(error instanceof Deno.errors.ConnectionReset, String(error));
      received = new Uint8Array();
    }
    assertEquals(received.byteLength, 0);
    await server.proc.waitForStderr(/^refused 127\.0\.0\.1:\d+: not allowed$/);
    assert(
      server.proc.stderrLines.some((l) =>
        /^accepted 127\.0\.0\.2:\d+$/.test(l)
      ),
      server.proc.stderr,
    );
    assert(
      !server.proc.stderrLines.some((l) => /^accepted 127\.0\.0\.1:/.test(l)),
      server.proc.stderr,
    );
  },
});

Deno.test({
  name:
    "echo.ts on :: matches IPv6 peers and IPv4-mapped peers against IPv4 rules",
  ignore: missing("socat"),
  async fn() {
    {
      await using server = await startServer("servers/echo.ts", {
        permissions: ["--allow-net=[::]:0"],
        args: ["--hostname", "::", "--port", "0", "--allow", "::1/128"],
      });
      assertEquals(
        await socatFrom("[::1]", `[::1]:${server.port}`, "six\n"),
        "six\n",
      );
      assertEquals(
        await socatFrom("127.0.0.1", `127.0.0.1:${server.port}`, "four\n"),
        "",
      );
      await server.proc.waitForStderr(
        /^refused \[::ffff:127\.0\.0\.1\]:\d+: not allowed$/,
      );
    }
    {
      await using server = await startServer("servers/echo.ts", {
        permissions: ["--allow-net=[::]:0"],
        args: ["--hostname", "::", "--port", "0", "--allow", "127.0.0.2/32"],
      });
      assertEquals(
        await socatFrom("127.0.0.2", `127.0.0.1:${server.port}`, "mapped\n"),
        "mapped\n",
      );
      assertEquals(
        await socatFrom("[::1]", `[::1]:${server.port}`, "six\n"),
        "",
      );
      await server.proc.waitForStderr(/^refused \[::1\]:\d+: not allowed$/);
    }
    {
      await using server = await startServer("servers/echo.ts", {
        permissions: ["--allow-net=[::]:0"],
        args: ["--hostname", "::", "--port", "0", "--deny", "::1"],
      });
      assertEquals(
        await socatFrom("[::1]", `[::1]:${server.port}`, "six\n"),
        "",
      );
      assertEquals(
        await socatFrom("127.0.0.1", `127.0.0.1:${server.port}`, "four\n"),
        "four\n",
      );
    }
  },
});

Deno.test("echo.ts --udp with --allow 127.0.0.2/32 answers 127.0.0.2 only", async () => {
  await using server = await startServer("servers/echo.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: [
      "--udp",
      "--hostname",
      "0.0.0.0",
      "--port",
      "0",
      "--allow",
      "127.0.0.2/32",
    ],
  });
  const target: Deno.NetAddr = {
    transport: "udp",
    hostname: "127.0.0.1",
    port: server.port,
  };
  const ask = async (hostname: string): Promise<string | null> => {
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname,
      port: 0,
    });
    await socket.send(new TextEncoder().encode(`from ${hostname}`), target);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const reply = await Promise.race([
      socket.receive().then(([data]) => new TextDecoder().decode(data)),
      new Promise<null>((resolve) =>
        timer = setTimeout(() => resolve(null), 1500)
      ),
    ]);
    clearTimeout(timer);
    socket.close();
    return reply;
  };
  assertEquals(await ask("127.0.0.2"), "from 127.0.0.2");
  assertEquals(await ask("127.0.0.1"), null);
  await server.proc.waitForStderr(
    /^refused datagram from 127\.0\.0\.1:\d+: not allowed$/,
  );
});

Deno.test("a flood of refused clients is logged counted, not line by line", async () => {
  const lines: string[] = [];
  const server = serveEcho({
    hostname: "127.0.0.1",
    port: 0,
    access: new AccessList({ deny: ["127.0.0.0/8"] }),
    log: (line) => lines.push(line),
  });
  const { port } = server.addr as Deno.NetAddr;
  for (let i = 0; i < 40; i++) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      assertEquals(await conn.read(new Uint8Array(16)), null);
    } catch (error) {
      assert(error instanceof Deno.errors.ConnectionReset, String(error));
    }
  }
  await server.shutdown();
  const refused = lines.filter((l) =>
    /^refused 127\.0\.0\.1:\d+: not allowed$/.test(l)
  );
  const counted = lines.map((l) => /^refused (\d+) more \(counted/.exec(l))
    .filter(Boolean);
  const total = refused.length +
    counted.reduce((sum, m) => sum + Number(m![1]), 0);
  assertEquals(total, 40, lines.join("\n"));
  assertLess(refused.length, 10, lines.join("\n"));
  assertGreaterOrEqual(counted.length, 1, lines.join("\n"));
  assert(!lines.some((l) => l.startsWith("accepted")), lines.join("\n"));
});

Deno.test("--allow/--deny usage errors: a bad block, or a Unix socket", async () => {
  for (
    const [args, pattern] of [
      [
        ["--port", "0", "--allow", "10.0.0.0/33"],
        /^error: invalid value '10\.0\.0\.0\/33' for --allow: /,
      ],
      [
        ["--port", "0", "--deny", "example.com"],
        /^error: invalid value 'example\.com' for --deny: /,
      ],
      [
        ["--port", "0", "--allow", "::1", "--allow", "1::2::3"],
        /^error: invalid value '1::2::3' for --allow: /,
      ],
      [
        ["--unix", "/tmp/tls8-x.sock", "--allow", "::1"],
        /^error: --allow and --deny match IP addresses/,
      ],
    ] as const
  ) {
    const { code, stderr } = await runScript("servers/echo.ts", {
      permissions: ["--allow-net=0.0.0.0:0"],
      args: [...args],
    });
    assertEquals(code, 2, stderr);
    const lines = stderr.trimEnd().split("\n");
    assertEquals(lines.length, 1, stderr);
    assertMatch(lines[0], pattern);
  }
});
