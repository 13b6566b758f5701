/**
 * lib/targets.ts: the pool's rules, state and reload, through its own API
 * (no sockets: the dials are functions that succeed or fail as told), and
 * lib/targets_file.ts's lines.
 */

import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertThrows,
} from "@std/assert";
import type { Endpoint } from "../mod.ts";
import {
  type BalanceRule,
  NoTargetError,
  type PoolTarget,
  TargetPool,
  type TargetSpec,
} from "../lib/targets.ts";
import { parseTargetsFile, TargetsFileError } from "../lib/targets_file.ts";

const tcp = (host: string, port = 7): Endpoint => ({
  transport: "tcp",
  hostname: host,
  port,
});
const specs = (...hosts: string[]): TargetSpec[] =>
  hosts.map((host) => ({ endpoint: tcp(host) }));

/** xorshift32: a seeded `random` for the pool, so runs repeat. */
function seeded(seed = 1): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function poolOf(
  targets: TargetSpec[],
  balance: BalanceRule = "roundrobin",
  lines: string[] = [],
): TargetPool {
  return new TargetPool(targets, {
    balance,
    log: (line) => lines.push(line),
    random: seeded(),
  });
}

/** How many of `picks` each target got, by name. */
function tally(picks: (PoolTarget | undefined)[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const target of picks) {
    const name = target?.name ?? "none";
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

Deno.test("roundrobin gives each target its weight's share, spread out", () => {
  const pool = poolOf([
    { endpoint: tcp("10.0.0.1"), weight: 3 },
    { endpoint: tcp("10.0.0.2"), weight: 2 },
    { endpoint: tcp("10.0.0.3") },
  ]);
  const picks = Array.from({ length: 3000 }, () => pool.pick("1.2.3.4"));
  assertEquals(tally(picks), {
    "10.0.0.1:7": 1500,
    "10.0.0.2:7": 1000,
    "10.0.0.3:7": 500,
  });
  // Smooth: the heavy target never takes more than two in a row here.
  const names = picks.slice(0, 6).map((t) => t!.name.slice(0, 8));
  assertEquals(names, [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.1",
    "10.0.0.3",
    "10.0.0.2",
    "10.0.0.1",
  ]);
});

Deno.test("leastconn picks the target with the fewest clients, ties in turn", () => {
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2", "10.0.0.3"), "leastconn");
  // Ties (nobody connected) go in turn.
  const first = [0, 1, 2].map(() => pool.pick("")!.name);
  assertEquals(new Set(first).size, 3);
  pool.targets[0].active = 5;
  pool.targets[1].active = 1;
  pool.targets[2].active = 3;
  assertEquals(pool.pick("")!.name, "10.0.0.2:7");
});

Deno.test("source sends a client to the same target, and a new target takes about 1/N", () => {
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2", "10.0.0.3"), "source");
  const clients = Array.from(
    { length: 3000 },
    (_, i) => `192.0.${i >> 8}.${i & 255}`,
  );
  const before = clients.map((c) => pool.pick(c)!.name);
  assertEquals(clients.map((c) => pool.pick(c)!.name), before);
  // Even within 10% of 1000 each (3,000 clients: about 3.5 standard deviations).
  for (const count of Object.values(tally(clients.map((c) => pool.pick(c))))) {
    assert(count > 900 && count < 1100, `${count}`);
  }
  pool.update(specs("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"));
  const after = clients.map((c) => pool.pick(c)!.name);
  const moved = clients.filter((_, i) => after[i] !== before[i]);
  // About a quarter move, all of them to the new target.
  assert(moved.length > 600 && moved.length < 900, `${moved.length} moved`);
  assert(
    moved.every((c) => after[clients.indexOf(c)] === "10.0.0.4:7"),
    "a client moved between old targets",
  );
});

Deno.test("source, random and leastconn honour the weights", () => {
  const weighted = [
    { endpoint: tcp("10.0.0.1"), weight: 3 },
    { endpoint: tcp("10.0.0.2") },
  ];
  const source = poolOf(weighted, "source");
  const bySource = tally(
    Array.from(
      { length: 4000 },
      (_, i) => source.pick(`192.0.${i >> 8}.${i & 255}`),
    ),
  );
  // 3,000 and 1,000 expected: within 5%.
  assert(
    Math.abs(bySource["10.0.0.1:7"] - 3000) < 200,
    JSON.stringify(bySource),
  );
  const random = poolOf(weighted, "random");
  const byRandom = tally(Array.from({ length: 4000 }, () => random.pick("")));
  // Two drawn by weight, both idle: the first kept, so 3/4 of the picks.
  assert(
    Math.abs(byRandom["10.0.0.1:7"] - 3000) < 200,
    JSON.stringify(byRandom),
  );
  const leastconn = poolOf(weighted, "leastconn");
  leastconn.targets[0].active = 5; // 5/3 per weight
  leastconn.targets[1].active = 2; // 2/1
  assertEquals(leastconn.pick("")!.name, "10.0.0.1:7");
});

Deno.test("source treats an IPv4-mapped IPv6 client as its IPv4 address", () => {
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2", "10.0.0.3"), "source");
  for (let i = 0; i < 50; i++) {
    assertEquals(
      pool.pick(`::ffff:192.0.2.${i}`),
      pool.pick(`192.0.2.${i}`),
    );
  }
});

Deno.test("source moves only a down target's clients", () => {
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2", "10.0.0.3"), "source");
  const clients = Array.from({ length: 600 }, (_, i) => `198.51.100.${i}`);
  const before = clients.map((c) => pool.pick(c)!.name);
  pool.targets[1].up = false;
  const after = clients.map((c) => pool.pick(c)!.name);
  for (let i = 0; i < clients.length; i++) {
    if (before[i] !== "10.0.0.2:7") assertEquals(after[i], before[i]);
    else assert(after[i] !== "10.0.0.2:7");
  }
});

Deno.test("random takes the less loaded of two, and spreads evenly when all are idle", () => {
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2", "10.0.0.3"), "random");
  const counts = tally(Array.from({ length: 3000 }, () => pool.pick("")));
  for (const count of Object.values(counts)) {
    assert(count > 900 && count < 1100, JSON.stringify(counts));
  }
  pool.targets[0].active = 10;
  pool.targets[1].active = 10;
  // Two of three are drawn: the idle one is among them two times in three,
  // and then always taken; never the loaded one when it was drawn with it.
  const loaded = tally(Array.from({ length: 300 }, () => pool.pick("")));
  assert(loaded["10.0.0.3:7"] > 150, JSON.stringify(loaded));
});

Deno.test("backup targets take clients only when no other is up", () => {
  const pool = poolOf([
    { endpoint: tcp("10.0.0.1") },
    { endpoint: tcp("10.0.0.9"), backup: true },
  ]);
  assertEquals(tally([1, 2, 3, 4].map(() => pool.pick(""))), {
    "10.0.0.1:7": 4,
  });
  // Tried, but up: not a reason to use the backup.
  assertEquals(pool.pick("", new Set([pool.targets[0]])), undefined);
  pool.targets[0].up = false;
  assertEquals(pool.pick("")!.name, "10.0.0.9:7");
});

Deno.test("fall failures in a row mark a target down, with one line; rise checks bring it back", () => {
  const lines: string[] = [];
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2"), "roundrobin", lines);
  const [a] = pool.targets;
  pool.failed(a, "connection refused", "connect");
  pool.failed(a, "connection refused", "connect");
  pool.succeeded(a, "connect"); // the streak starts again
  pool.failed(a, "connection refused", "connect");
  pool.failed(a, "connection refused", "connect");
  assert(a.up);
  pool.failed(a, "connection refused", "connect");
  assert(!a.up);
  pool.succeeded(a, "check");
  assert(!a.up);
  pool.succeeded(a, "check");
  assert(a.up);
  assertEquals(lines, [
    "target 10.0.0.1:7 down: connection refused (3 connects), 1 of 2 up",
    "target 10.0.0.1:7 up (2 checks), 2 of 2 up",
  ]);
});

Deno.test("take() retries a client on the next target, and a dead one costs it nothing", async () => {
  const lines: string[] = [];
  const pool = poolOf(
    specs("10.0.0.1", "10.0.0.2", "10.0.0.3"),
    "roundrobin",
    lines,
  );
  const dialled: string[] = [];
  const dial = (target: PoolTarget) => {
    dialled.push(target.name);
    return target.name === "10.0.0.2:7"
      ? Promise.reject(new Error("connection refused"))
      : Promise.resolve(target.name);
  };
  const got: string[] = [];
  for (let i = 0; i < 12; i++) {
    const taken = await pool.take("", dial);
    got.push(taken.value);
    taken.release();
  }
  assert(!got.includes("10.0.0.2:7"));
  // Three failed dials (fall), then never tried again.
  assertEquals(dialled.filter((name) => name === "10.0.0.2:7").length, 3);
  assertEquals(lines, [
    "target 10.0.0.2:7 down: connection refused (3 connects), 2 of 3 up",
  ]);
  assertEquals(pool.targets.map((t) => t.active), [0, 0, 0]);
});

Deno.test("take() with no target up rejects at once with NoTargetError, logged once", async () => {
  const lines: string[] = [];
  const pool = poolOf(specs("10.0.0.1"), "roundrobin", lines);
  pool.targets[0].up = false;
  let dials = 0;
  for (let i = 0; i < 5; i++) {
    const error = await assertRejects(() =>
      pool.take("192.0.2.1", () => Promise.resolve(dials++))
    );
    assertInstanceOf(error, NoTargetError);
    assertEquals(error.message, "no target up");
  }
  pool.flush();
  assertEquals(dials, 0);
  assertEquals(lines, [
    "no target up: closing 192.0.2.1 at once",
    "no target up: 4 more clients (counted, not logged one by one)",
  ]);
});

Deno.test("update() keeps a target's state and clients, drains a removed one, adds new ones", () => {
  const lines: string[] = [];
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2"), "roundrobin", lines);
  const [a, b] = pool.targets;
  b.up = false;
  const held = pool.takeSession("192.0.2.1")!; // on a
  assertEquals(held.target, a);
  pool.update(specs("10.0.0.2", "10.0.0.3"));
  assertEquals(pool.targets.map((t) => t.name), [
    "10.0.0.2:7",
    "10.0.0.3:7",
    "10.0.0.1:7",
  ]);
  assert(pool.targets[0] === b && !b.up, "b kept its state");
  assert(a.removed);
  // The removed target takes nobody new.
  for (let i = 0; i < 5; i++) assertEquals(pool.pick("")!.name, "10.0.0.3:7");
  held.release();
  held.release(); // once only
  assertEquals(pool.targets.map((t) => t.name), ["10.0.0.2:7", "10.0.0.3:7"]);
  assertEquals(lines, [
    "target 10.0.0.3:7 added",
    "target 10.0.0.1:7 removed: draining 1 clients",
    "target 10.0.0.1:7 removed (drained)",
  ]);
});

Deno.test("a drain target takes no new clients; its open ones end as they will", () => {
  const lines: string[] = [];
  const pool = poolOf(specs("10.0.0.1", "10.0.0.2"), "roundrobin", lines);
  const first = pool.takeSession("")!;
  assertEquals(first.target.name, "10.0.0.1:7");
  pool.update([
    { endpoint: tcp("10.0.0.1"), drain: true },
    { endpoint: tcp("10.0.0.2") },
  ]);
  for (let i = 0; i < 4; i++) assertEquals(pool.pick("")!.name, "10.0.0.2:7");
  first.release();
  pool.update(specs("10.0.0.1", "10.0.0.2"));
  assertEquals(lines, [
    "target 10.0.0.1:7 draining 1 clients",
    "target 10.0.0.1:7 drained",
    "target 10.0.0.1:7 back in service",
  ]);
});

Deno.test("parseTargetsFile() reads targets, weights, backup, drain and tls, and names a bad line", () => {
  assertEquals(
    parseTargetsFile(
      "# backends\n\ntcp://10.0.0.1:80 weight=3\n[::1]:80 drain\nunix:/run/b.sock backup  # spare\n10.0.0.2:443 tls\n",
      "t.conf",
    ),
    [
      {
        endpoint: tcp("10.0.0.1", 80),
        weight: 3,
        backup: false,
        drain: false,
        tls: false,
      },
      {
        endpoint: tcp("::1", 80),
        weight: 1,
        backup: false,
        drain: true,
        tls: false,
      },
      {
        endpoint: { transport: "unix", path: "/run/b.sock" },
        weight: 1,
        backup: true,
        drain: false,
        tls: false,
      },
      {
        endpoint: tcp("10.0.0.2", 443),
        weight: 1,
        backup: false,
        drain: false,
        tls: true,
      },
    ],
  );
  const cases: [string, string][] = [
    [
      "10.0.0.1:80 wieght=2",
      "t.conf:1: unknown option 'wieght=2' (expected weight=N, backup, drain or tls)",
    ],
    [
      "10.0.0.1:80\n10.0.0.1:80 weight=0",
      "t.conf:2: invalid weight '0' (expected a whole number from 1 to 256)",
    ],
    [
      "10.0.0.1:80\ntcp://10.0.0.1:80",
      "t.conf:2: tcp://10.0.0.1:80 is listed twice (first on line 1)",
    ],
    ["10.0.0.1", "t.conf:1: "],
    ["# nothing\n", "t.conf: no targets in it"],
    ["unixpacket:/x", "t.conf:1: unixpacket: is not supported"],
    [
      "unix:/run/b.sock tls",
      "t.conf:1: tls needs a tcp:// target, not unix:/run/b.sock",
    ],
  ];
  for (const [text, message] of cases) {
    assertThrows(
      () => parseTargetsFile(text, "t.conf"),
      TargetsFileError,
      message,
    );
  }
});
