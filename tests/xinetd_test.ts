/**
 * Conformance with xinetd's internal services (a real, independent inetd):
 * byte for byte where the protocol is deterministic (chargen's first lines,
 * echo, discard), by format and value where it is not (daytime, time).
 */
import {
  assert,
  assertEquals,
  assertLessOrEqual,
  assertMatch,
} from "@std/assert";
import { SIMPLE_SERVICE_PORTS, writeAll } from "../mod.ts";
import { chargenLines } from "../servers/chargen.ts";
import {
  assertSameBytes,
  missing,
  pseudoRandomBytes,
  readAll,
  runScript,
  spawn,
} from "./_helpers.ts";
import { freeBase, readUpTo, startXinetd, udpAsk } from "./_simple.ts";

const INETD_PERMISSIONS = ["--unstable-net", "--allow-net"];
const MONTHS = [
  "JAN",
  "FEB",
  "MAR",
  "APR",
  "MAY",
  "JUN",
  "JUL",
  "AUG",
  "SEP",
  "OCT",
  "NOV",
  "DEC",
];

/** Our inetd.ts at a free base on 127.0.0.1, under TZ=UTC. */
async function startOurs() {
  const base = freeBase();
  const proc = spawn("servers/inetd.ts", {
    permissions: INETD_PERMISSIONS,
    args: ["--hostname", "127.0.0.1", "--base", String(base)],
    env: { TZ: "UTC" },
  });
  await proc.waitForStderr(/listening on .* \(time\/udp\)/);
  return {
    base,
    proc,
    async [Symbol.asyncDispose]() {
      proc.kill("SIGTERM");
      const { code, stderr } = await proc.finished();
      assertEquals(code, 0, stderr);
    },
  };
}

async function tcpExchange(
  port: number,
  send: Uint8Array | null,
  readLength?: number,
): Promise<Uint8Array> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  if (send) {
    const reading = readLength === undefined
      ? readAll(conn)
      : readUpTo(conn, readLength);
    await writeAll(conn, send);
    await conn.closeWrite();
    return await reading;
  }
  return readLength === undefined
    ? await readAll(conn)
    : await readUpTo(conn, readLength);
}

const ignore = missing("xinetd") || Deno.uid() !== 0;

Deno.test({
  name: "inetd.ts agrees with xinetd's internal services",
  ignore,
  async fn(t) {
    await using xinetd = await startXinetd("UTC");
    await using ours = await startOurs();
    const port = (base: number, name: keyof typeof SIMPLE_SERVICE_PORTS) =>
      base + SIMPLE_SERVICE_PORTS[name];

    // Debian's xinetd leaves both the space and '~' out of its ring ('!' to
    // '}', 93 characters: its line 22 ends in "}!" where RFC 864's ends in
    // "~"), so the two agree on the first 22 lines, not 23.
    await t.step(
      "chargen over TCP: the first 22 lines byte for byte",
      async () => {
        const length = 22 * 74;
        const theirs = await tcpExchange(
          port(xinetd.base, "chargen"),
          null,
          length,
        );
        const mine = await tcpExchange(
          port(ours.base, "chargen"),
          null,
          length,
        );
        assertEquals(theirs.byteLength, length);
        assertSameBytes(mine, theirs, "chargen, ours vs xinetd");
        assertSameBytes(mine, chargenLines(0, 22), "chargen pattern");
      },
    );

    await t.step(
      "chargen over UDP: our whole reply is their reply's start",
      async () => {
        const theirs = await udpAsk(port(xinetd.base, "chargen"), "x");
        const mine = await udpAsk(port(ours.base, "chargen"), "x");
        assert(theirs && mine, "a reply from each");
        assertEquals(mine.byteLength, 6 * 74);
        assertLessOrEqual(mine.byteLength, 512);
        assertEquals(mine, theirs.subarray(0, mine.byteLength));
      },
    );

    await t.step("echo over TCP and UDP: the same bytes back", async () => {
      const data = pseudoRandomBytes(200_000, 5);
      const theirs = await tcpExchange(port(xinetd.base, "echo"), data);
      const mine = await tcpExchange(port(ours.base, "echo"), data);
      assertEquals(theirs.byteLength, data.byteLength);
      assertSameBytes(mine, theirs, "echo, ours vs xinetd");
      const datagram = pseudoRandomBytes(1000, 9);
      const theirReply = await udpAsk(port(xinetd.base, "echo"), datagram);
      const myReply = await udpAsk(port(ours.base, "echo"), datagram);
      assertEquals(theirReply, datagram);
      assertEquals(myReply, theirReply);
    });

    await t.step(
      "discard over TCP and UDP: nothing back, closed after the client",
      async () => {
        const data = pseudoRandomBytes(300_000, 3);
        const theirs = await tcpExchange(port(xinetd.base, "discard"), data);
        const mine = await tcpExchange(port(ours.base, "discard"), data);
        assertEquals(theirs.byteLength, 0);
        assertEquals(mine.byteLength, 0);
        assertEquals(
          await udpAsk(port(xinetd.base, "discard"), "x", { timeoutMs: 300 }),
          null,
        );
        assertEquals(
          await udpAsk(port(ours.base, "discard"), "x", { timeoutMs: 300 }),
          null,
        );
      },
    );

    await t.step(
      "daytime over TCP and UDP: each in its format, the same time within 2 s",
      async () => {
        const decoder = new TextDecoder();
        const theirs = decoder.decode(
          await tcpExchange(port(xinetd.base, "daytime"), null),
        );
        const mine = decoder.decode(
          await tcpExchange(port(ours.base, "daytime"), null),
        );
        // xinetd: `25 NOV 2026 14:28:46 UTC\r\n`; ours: ctime's form.
        const x = /^(\d\d) ([A-Z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) UTC\r\n$/
          .exec(theirs);
        assert(x, JSON.stringify(theirs));
        const theirTime = Date.UTC(
          +x[3],
          MONTHS.indexOf(x[2]),
          +x[1],
          +x[4],
          +x[5],
          +x[6],
        );
        assertMatch(
          mine,
          /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}\r\n$/,
        );
        const myTime = Date.parse(mine.trim() + " UTC");
        assertLessOrEqual(
          Math.abs(myTime - theirTime),
          2000,
          `${mine} vs ${theirs}`,
        );
        assertLessOrEqual(Math.abs(myTime - Date.now()), 3000, mine);
        const myDatagram = decoder.decode(
          (await udpAsk(port(ours.base, "daytime")))!,
        );
        const theirDatagram = decoder.decode(
          (await udpAsk(port(xinetd.base, "daytime")))!,
        );
        assertMatch(
          myDatagram,
          /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}\r\n$/,
        );
        assertMatch(
          theirDatagram,
          /^\d\d [A-Z]{3} \d{4} \d\d:\d\d:\d\d UTC\r\n$/,
        );
      },
    );

    await t.step(
      "time over TCP and UDP: 4 bytes, the same value within 2 s",
      async () => {
        for (const udp of [false, true]) {
          const ask = (p: number) =>
            udp ? udpAsk(p).then((r) => r!) : tcpExchange(p, null);
          const theirs = await ask(port(xinetd.base, "time"));
          const mine = await ask(port(ours.base, "time"));
          assertEquals(theirs.byteLength, 4);
          assertEquals(mine.byteLength, 4);
          const value = (b: Uint8Array) =>
            new DataView(b.buffer, b.byteOffset).getUint32(0);
          assert(
            Math.abs(value(mine) - value(theirs)) <= 2,
            `${value(mine)} vs ${value(theirs)}`,
          );
        }
      },
    );

    await t.step(
      "clients/time.ts reads xinetd's time over TCP and UDP",
      async () => {
        const timePort = port(xinetd.base, "time");
        for (const udp of [false, true]) {
          const { code, stdout, stderr } = await runScript("clients/time.ts", {
            permissions: udp
              ? [
                "--unstable-net",
                `--allow-net=0.0.0.0:0,127.0.0.1:${timePort}`,
              ]
              : [`--allow-net=127.0.0.1:${timePort}`],
            args: [
              "127.0.0.1",
              "--port",
              String(timePort),
              ...(udp ? ["--udp"] : []),
            ],
          });
          assertEquals(code, 0, stderr);
          assertMatch(stdout, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$/);
          assert(
            Math.abs(Date.parse(stdout.trim()) - Date.now()) <= 3000,
            stdout,
          );
        }
      },
    );
  },
});
