import {
  assert,
  assertEquals,
  assertLessOrEqual,
  assertMatch,
  assertThrows,
} from "@std/assert";
import { dateFromRfc868, encodeRfc868, rfc868Seconds } from "../mod.ts";
import { formatIsoSeconds } from "../clients/time.ts";
import {
  freePort,
  missing,
  readAll,
  runCommand,
  runScript,
  startServer,
} from "./_helpers.ts";
import { udpAsk } from "./_simple.ts";

Deno.test("rfc868Seconds() counts from 1900 modulo 2^32, past 2036", () => {
  assertEquals(rfc868Seconds(new Date("1900-01-01T00:00:00Z")), 0);
  assertEquals(rfc868Seconds(new Date("1970-01-01T00:00:00Z")), 2_208_988_800);
  assertEquals(rfc868Seconds(new Date("2036-02-07T06:28:15Z")), 2 ** 32 - 1);
  assertEquals(rfc868Seconds(new Date("2036-02-07T06:28:16Z")), 0);
  assertEquals(rfc868Seconds(new Date("2040-01-01T00:00:00Z")), 123_010_304);
  assertEquals(
    rfc868Seconds(new Date("2026-11-25T13:40:42.999Z")),
    4_004_602_842,
  );
  assertEquals([...encodeRfc868(new Date("2036-02-07T06:28:15Z"))], [
    255,
    255,
    255,
    255,
  ]);
});

Deno.test("dateFromRfc868() reads the era nearest the local clock", () => {
  const before = new Date("2030-01-01T00:00:00Z");
  const after = new Date("2050-01-01T00:00:00Z");
  for (
    const iso of [
      "2026-11-25T13:40:42Z",
      "2036-02-07T06:28:15Z",
      "2036-02-07T06:28:16Z",
      "2040-01-01T00:00:00Z",
      "2090-12-31T23:59:59Z",
    ]
  ) {
    const date = new Date(iso);
    const value = rfc868Seconds(date);
    for (const near of [before, after, date]) {
      assertEquals(
        dateFromRfc868(value, near).toISOString(),
        date.toISOString(),
        `${iso} near ${near.toISOString()}`,
      );
    }
  }
  assertThrows(() => dateFromRfc868(2 ** 32), RangeError);
});

Deno.test("time.ts and clients/time.ts, each with its header's permissions, over TCP and UDP", async () => {
  {
    await using server = await startServer("servers/time.ts", {
      permissions: ["--allow-net=127.0.0.1:0"],
      args: ["--hostname", "127.0.0.1", "--port", "0"],
    });
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const bytes = await readAll(conn);
    assertEquals(bytes.byteLength, 4);
    const value = new DataView(bytes.buffer).getUint32(0);
    assertLessOrEqual(
      Math.abs(value - rfc868Seconds(new Date())),
      2,
      String(value),
    );
    const client = await runScript("clients/time.ts", {
      permissions: [`--allow-net=127.0.0.1:${server.port}`],
      args: ["127.0.0.1", "--port", String(server.port)],
    });
    assertEquals(client.code, 0, client.stderr);
    assertMatch(client.stdout, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$/);
    assert(
      Math.abs(Date.parse(client.stdout.trim()) - Date.now()) <= 3000,
      client.stdout,
    );
  }
  await using server = await startServer("servers/time.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: ["--udp", "--hostname", "127.0.0.1", "--port", "0"],
  });
  const reply = await udpAsk(server.port);
  assertEquals(reply?.byteLength, 4);
  const client = await runScript("clients/time.ts", {
    permissions: [
      "--unstable-net",
      `--allow-net=0.0.0.0:0,127.0.0.1:${server.port}`,
    ],
    args: ["127.0.0.1", "--port", String(server.port), "--udp"],
  });
  assertEquals(client.code, 0, client.stderr);
  assert(
    Math.abs(Date.parse(client.stdout.trim()) - Date.now()) <= 3000,
    client.stdout,
  );
});

Deno.test({
  name: "rdate -p reads our time server over TCP and UDP",
  ignore: missing("rdate"),
  async fn() {
    for (const udp of [false, true]) {
      await using server = await startServer("servers/time.ts", {
        permissions: udp
          ? ["--unstable-net", "--allow-net"]
          : ["--allow-net=127.0.0.1:0"],
        args: [
          "--hostname",
          "127.0.0.1",
          "--port",
          "0",
          ...(udp ? ["--udp"] : []),
        ],
      });
      const { code, stdout, stderr } = await runCommand(
        "rdate",
        [
          "-p",
          ...(udp ? ["-u"] : []),
          "-o",
          String(server.port),
          "127.0.0.1",
        ],
        undefined,
        10_000,
      );
      assertEquals(code, 0, stderr);
      // `Wed Nov 25 14:28:47 UTC 2026` (rdate prints in its local zone).
      const text = new TextDecoder().decode(stdout).trim();
      const m = /^\w{3} (\w{3}) +(\d+) (\d\d:\d\d:\d\d) (\S+) (\d{4})$/.exec(
        text,
      );
      assert(m, text);
      const printed = Date.parse(`${m[1]} ${m[2]} ${m[5]} ${m[3]} UTC`);
      assertLessOrEqual(Math.abs(printed - Date.now()), 3000, text);
    }
  },
});

Deno.test("clients/time.ts fails clearly: refused, no reply, usage", async () => {
  const port = freePort();
  const refused = await runScript("clients/time.ts", {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["127.0.0.1", "--port", String(port)],
  });
  assertEquals(refused.code, 1);
  assertEquals(
    refused.stderr,
    `error: connection refused by 127.0.0.1:${port}`,
  );
  const silent = await runScript("clients/time.ts", {
    permissions: ["--unstable-net", `--allow-net=0.0.0.0:0,127.0.0.1:${port}`],
    args: ["127.0.0.1", "--port", String(port), "--udp", "--timeout", "0.5"],
  });
  assertEquals(silent.code, 1);
  assertEquals(
    silent.stderr,
    `error: no reply from 127.0.0.1:${port} within 0.5 s (UDP)`,
  );
  // A server that accepts and never sends (discard) runs into --timeout.
  await using discard = await startServer("servers/discard.ts", {
    permissions: ["--allow-net=127.0.0.1:0"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  const mute = await runScript("clients/time.ts", {
    permissions: [`--allow-net=127.0.0.1:${discard.port}`],
    args: ["127.0.0.1", "--port", String(discard.port), "--timeout", "0.5"],
  });
  assertEquals(mute.code, 1);
  assertEquals(
    mute.stderr,
    `error: timed out after 0.5 s waiting for the time from 127.0.0.1:${discard.port}`,
  );
  const usage = await runScript("clients/time.ts", { args: [] });
  assertEquals(usage.code, 2);
  assertMatch(usage.stderr, /^error: missing argument/);
  assertEquals(formatIsoSeconds(new Date(0)), "1970-01-01T00:00:00Z");
});
