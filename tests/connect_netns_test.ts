/**
 * connect.ts's Happy Eyeballs (RFC 8305) where it can be seen: in a network
 * namespace whose IPv6 address black-holes packets, so the IPv4 attempt
 * must start after the attempt delay and win. Needs root and `ip`; skipped
 * (with a line saying so) otherwise.
 */

import { assert, assertEquals, assertLess } from "@std/assert";
import { ip, missing, runCommand, startServer } from "./_helpers.ts";
import { runClient, text } from "./_connect.ts";

const NETNS = `seed3b-he${Deno.pid % 100000}`;
const BLACKHOLE = "2001:db8:3b::1";

function netnsMissing(): boolean {
  if (Deno.uid() !== 0) {
    console.error("SKIP: Happy Eyeballs namespace tests need root");
    return true;
  }
  if (missing("ip")) return true;
  return false;
}

/**
 * A network namespace where `he-blackhole.test` has an IPv6 address whose
 * packets vanish (sent out a veth pair to a neighbour that does not exist,
 * so no answer and no error: a kernel SYN timeout away) and an IPv4 address
 * on loopback, and `he-dual.test` has ::1 and 127.0.0.1. `ip netns exec`
 * uses `/etc/netns/NAME/hosts` as `/etc/hosts`.
 */
async function createNamespace(): Promise<void> {
  await ip("netns", "add", NETNS);
  await Deno.mkdir(`/etc/netns/${NETNS}`, { recursive: true });
  await Deno.writeTextFile(
    `/etc/netns/${NETNS}/hosts`,
    [
      "127.0.0.1 localhost",
      "::1 localhost",
      `${BLACKHOLE} he-blackhole.test`,
      "127.0.0.1 he-blackhole.test",
      "::1 he-dual.test",
      "127.0.0.1 he-dual.test",
      "",
    ].join("\n"),
  );
  const n = ["-n", NETNS];
  await ip(...n, "link", "set", "lo", "up");
  await ip(
    ...n,
    "link",
    "add",
    "seed3b-v0",
    "type",
    "veth",
    "peer",
    "name",
    "seed3b-v1",
  );
  await ip(...n, "link", "set", "seed3b-v0", "up");
  await ip(...n, "link", "set", "seed3b-v1", "up");
  await ip(
    ...n,
    "-6",
    "addr",
    "add",
    "2001:db8:3b::2/64",
    "dev",
    "seed3b-v0",
    "nodad",
  );
  await ip(
    ...n,
    "-6",
    "neigh",
    "add",
    BLACKHOLE,
    "lladdr",
    "02:00:00:00:3b:01",
    "dev",
    "seed3b-v0",
    "nud",
    "permanent",
  );
}

async function deleteNamespace(): Promise<void> {
  await runCommand("ip", ["netns", "delete", NETNS]);
  await Deno.remove(`/etc/netns/${NETNS}`, { recursive: true }).catch(() => {});
}

/** `trying ADDRESS (+N ms)` lines as [address, N]. */
function attempts(lines: string[]): [string, number][] {
  return lines.flatMap((line) => {
    const m = /^trying (\S+) \(\+(\d+) ms\)$/.exec(line);
    return m ? [[m[1], Number(m[2])] as [string, number]] : [];
  });
}

Deno.test({
  name: "connect.ts Happy Eyeballs in a network namespace",
  ignore: netnsMissing(),
  async fn(t) {
    await deleteNamespace();
    await createNamespace();
    const prefix = ["ip", "netns", "exec", NETNS];
    try {
      await using server = await startServer("servers/echo.ts", {
        prefix,
        permissions: ["--allow-net=[::]:0"],
        args: ["--hostname", "::", "--port", "0"],
      });
      const p = server.port;
      const blackholePermissions = [
        `--allow-net=he-blackhole.test,[${BLACKHOLE}]:${p},127.0.0.1:${p}`,
      ];

      await t.step(
        "the IPv6 address really black-holes (no error, no answer)",
        async () => {
          const run = await runClient(
            [`--allow-net=[${BLACKHOLE}]:${p}`],
            ["--timeout", "1", BLACKHOLE, String(p)],
            [],
            { prefix },
          );
          assertEquals(run.code, 1, run.stderr);
          assertEquals(
            run.lines.at(-1),
            `error: timed out after 1 s connecting to [${BLACKHOLE}]:${p}`,
          );
        },
      );

      await t.step(
        "IPv6 black-holes: IPv4 connects after the 250 ms attempt delay",
        async () => {
          const run = await runClient(
            blackholePermissions,
            ["--verbose", "he-blackhole.test", String(p)],
            ["ping\n"],
            { prefix },
          );
          assertEquals(run.code, 0, run.stderr);
          assertEquals(text(run.stdout), "ping\n");
          assertEquals(
            run.lines.filter((l) => l.startsWith("address ")),
            [`address [${BLACKHOLE}]:${p}`, `address 127.0.0.1:${p}`],
          );
          const tried = attempts(run.lines);
          assertEquals(tried.map(([a]) => a), [
            `[${BLACKHOLE}]:${p}`,
            `127.0.0.1:${p}`,
          ]);
          assertLess(tried[0][1], 100, run.stderr);
          assert(tried[1][1] >= 245 && tried[1][1] < 4000, run.stderr);
          assertEquals(run.lines.at(-1), `connected to 127.0.0.1:${p}`);
          // The IPv6 attempt was cancelled, not failed: no kernel timeout waited.
          assert(!run.lines.some((l) => l.startsWith("failed")), run.stderr);
          assertLess(run.tookMs, 20_000, `took ${run.tookMs} ms`);
        },
      );

      await t.step("--attempt-delay 1 makes IPv4 wait a second", async () => {
        const run = await runClient(
          blackholePermissions,
          ["--verbose", "--attempt-delay", "1", "he-blackhole.test", String(p)],
          [],
          { prefix },
        );
        assertEquals(run.code, 0, run.stderr);
        const tried = attempts(run.lines);
        assertEquals(tried.length, 2, run.stderr);
        assert(tried[1][1] >= 995 && tried[1][1] < 6000, run.stderr);
        assertEquals(run.lines.at(-1), `connected to 127.0.0.1:${p}`);
      });

      await t.step(
        "--timeout shorter than the delay: timed out, exit 1",
        async () => {
          const run = await runClient(
            blackholePermissions,
            [
              "--timeout",
              "0.2",
              "--attempt-delay",
              "2",
              "he-blackhole.test",
              String(p),
            ],
            [],
            { prefix },
          );
          assertEquals(run.code, 1, run.stderr);
          assertEquals(
            run.lines.at(-1),
            `error: timed out after 0.2 s connecting to he-blackhole.test:${p}`,
          );
        },
      );

      await t.step("IPv6 works: it wins and IPv4 is never tried", async () => {
        const run = await runClient(
          [`--allow-net=he-dual.test,[::1]:${p},127.0.0.1:${p}`],
          ["--verbose", "he-dual.test", String(p)],
          ["six\n"],
          { prefix },
        );
        assertEquals(run.code, 0, run.stderr);
        assertEquals(text(run.stdout), "six\n");
        assertEquals(attempts(run.lines).map(([a]) => a), [`[::1]:${p}`]);
        assertEquals(run.lines.at(-1), `connected to [::1]:${p}`);
      });

      await t.step(
        "refused on both: IPv4 tried at once after IPv6 fails, exit 1",
        async () => {
          const closed = p === 65535 ? p - 1 : p + 1;
          const run = await runClient(
            [`--allow-net=he-dual.test,[::1]:${closed},127.0.0.1:${closed}`],
            [
              "--verbose",
              "--attempt-delay",
              "5",
              "he-dual.test",
              String(closed),
            ],
            [],
            { prefix },
          );
          assertEquals(run.code, 1, run.stderr);
          const tried = attempts(run.lines);
          assertEquals(tried.length, 2, run.stderr);
          assertLess(tried[1][1], 4000, run.stderr); // Not the 5 s delay.
          assertEquals(
            run.lines.at(-1),
            `error: cannot connect to he-dual.test:${closed}: connection refused ([::1]:${closed}, 127.0.0.1:${closed})`,
          );
        },
      );
    } finally {
      await deleteNamespace();
      const { stdout } = await runCommand("ip", ["netns", "list"]);
      assert(!text(stdout).includes(NETNS), "namespace left behind");
    }
  },
});
