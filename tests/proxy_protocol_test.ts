/**
 * lib/proxy_protocol.ts: the PROXY protocol header, both versions, as
 * haproxy's `doc/proxy-protocol.txt` specifies it; interop with haproxy
 * itself is in tests/forward_interop_test.ts.
 */

import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { concat } from "@std/bytes";
import fc from "./_fast_check.ts";
import { chunkedReader } from "./_helpers.ts";
import { parseIPv6 } from "../mod.ts";
import {
  crc32c,
  encodeProxyHeader,
  parseProxyHeader,
  type ProxyAddresses,
  ProxyHeaderError,
  readProxyHeader,
} from "../lib/proxy_protocol.ts";

const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const SIGNATURE = [
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
];

function tcp(hostname: string, port: number): Deno.NetAddr {
  return { transport: "tcp", hostname, port };
}

Deno.test("encodeProxyHeader() v1: TCP4, TCP6, mixed families as TCP6, mapped IPv4 as TCP4, no IP as UNKNOWN", () => {
  const line = (addresses: ProxyAddresses) =>
    decode(encodeProxyHeader(1, addresses));
  assertEquals(
    line({
      source: tcp("192.0.2.1", 51234),
      destination: tcp("198.51.100.7", 443),
    }),
    "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n",
  );
  assertEquals(
    line({ source: tcp("2001:db8::1", 1), destination: tcp("::1", 2) }),
    "PROXY TCP6 2001:db8::1 ::1 1 2\r\n",
  );
  assertEquals(
    line({ source: tcp("192.0.2.1", 1), destination: tcp("::1", 2) }),
    "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n",
  );
  assertEquals(
    line({
      source: tcp("::ffff:192.0.2.1", 1),
      destination: tcp("::ffff:10.0.0.1", 2),
    }),
    "PROXY TCP4 192.0.2.1 10.0.0.1 1 2\r\n",
  );
  assertEquals(
    line({
      source: { transport: "unix", path: "" },
      destination: { transport: "unix", path: "/tmp/x.sock" },
    }),
    "PROXY UNKNOWN\r\n",
  );
  assertThrows(
    () =>
      encodeProxyHeader(1, {
        source: { transport: "udp", hostname: "192.0.2.1", port: 1 },
        destination: { transport: "udp", hostname: "192.0.2.2", port: 2 },
      }),
    TypeError,
    "v1 has no UDP",
  );
});

Deno.test("encodeProxyHeader() v2: signature, version and command, family, length, addresses and ports in network order", () => {
  assertEquals(
    Array.from(encodeProxyHeader(2, {
      source: tcp("192.0.2.1", 0x1234),
      destination: tcp("198.51.100.7", 443),
    })),
    [
      ...SIGNATURE,
      0x21, // version 2, PROXY
      0x11, // AF_INET, STREAM
      0x00,
      12,
      192,
      0,
      2,
      1,
      198,
      51,
      100,
      7,
      0x12,
      0x34,
      0x01,
      0xbb,
    ],
  );
  const v6 = encodeProxyHeader(2, {
    source: { transport: "udp", hostname: "2001:db8::1", port: 53 },
    destination: { transport: "udp", hostname: "::1", port: 5353 },
  });
  assertEquals(v6.byteLength, 16 + 36);
  assertEquals([v6[13], v6[14], v6[15]], [0x22, 0, 36]); // AF_INET6, DGRAM
  assertEquals(Array.from(v6.subarray(16, 20)), [0x20, 0x01, 0x0d, 0xb8]);
  const unix = encodeProxyHeader(2, {
    source: { transport: "unix", path: "" },
    destination: { transport: "unix", path: "/tmp/x.sock" },
  });
  assertEquals(Array.from(unix), [...SIGNATURE, 0x21, 0x00, 0, 0]);
});

Deno.test("parseProxyHeader() reads v2 LOCAL, UNSPEC, Unix paths and TLVs", () => {
  const local = new Uint8Array([
    ...SIGNATURE,
    0x20, // LOCAL
    0x11,
    0,
    12,
    ...new Array(12).fill(1),
  ]);
  const parsed = parseProxyHeader(local)!;
  assertEquals([parsed.command, parsed.source], ["local", undefined]);
  const path = (text: string) => {
    const bytes = new Uint8Array(108);
    bytes.set(encode(text));
    return Array.from(bytes);
  };
  const tlv = (type: number, value: string) => [
    type,
    0,
    value.length,
    ...encode(value),
  ];
  const tlvs = [...tlv(0x02, "example.com"), ...tlv(0x04, "")];
  const unix = new Uint8Array([
    ...SIGNATURE,
    0x21,
    0x31,
    0,
    216 + tlvs.length,
    ...path("/run/client.sock"),
    ...path("/run/server.sock"),
    ...tlvs,
  ]);
  const header = parseProxyHeader(unix)!;
  assertEquals(header.source, { transport: "unix", path: "/run/client.sock" });
  assertEquals(header.destination, {
    transport: "unix",
    path: "/run/server.sock",
  });
  assertEquals(
    header.tlvs.map((t) => [t.type, decode(t.value)]),
    [[0x02, "example.com"], [0x04, ""]],
  );
  assertEquals(header.byteLength, unix.byteLength);
});

Deno.test("crc32c() gives the check value and RFC 3720's test vectors (B.4)", () => {
  assertEquals(crc32c(encode("123456789")), 0xe3069283);
  assertEquals(crc32c(new Uint8Array(0)), 0);
  assertEquals(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assertEquals(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assertEquals(
    crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)),
    0x46dd794e,
  );
  assertEquals(
    crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)),
    0x113fdb5c,
  );
});

/**
 * A v2 header for 192.0.2.1:4000 with a PP2_TYPE_CRC32C TLV, its value
 * computed as the spec says (big-endian, as haproxy writes it).
 */
function withCrc32c(): Uint8Array {
  const base = encodeProxyHeader(2, {
    source: tcp("192.0.2.1", 4000),
    destination: tcp("198.51.100.7", 443),
  });
  const header = concat([base, new Uint8Array([0x03, 0, 4, 0, 0, 0, 0])]);
  const view = new DataView(header.buffer);
  view.setUint16(14, header.byteLength - 16);
  view.setUint32(header.byteLength - 4, crc32c(header));
  return header;
}

Deno.test("parseProxyHeader() checks a v2 header's CRC32C TLV, and refuses a header that does not match it", () => {
  const good = withCrc32c();
  const header = parseProxyHeader(good)!;
  assertEquals(header.source, tcp("192.0.2.1", 4000));
  assertEquals(header.tlvs.map((t) => t.type), [0x03]);
  // One address bit changed in transit.
  const flipped = good.slice();
  flipped[16] ^= 0x01;
  assertThrows(
    () => parseProxyHeader(flipped),
    ProxyHeaderError,
    "bad PROXY v2 header: CRC32C mismatch (header says 0x",
  );
  // The checksum itself wrong.
  const wrong = good.slice();
  wrong[wrong.byteLength - 1] ^= 0xff;
  assertThrows(() => parseProxyHeader(wrong), ProxyHeaderError, "CRC32C");
  // A CRC32C TLV that is not 4 bytes long.
  const short = concat([
    good.subarray(0, 16 + 12),
    new Uint8Array([0x03, 0, 3, 1, 2, 3]),
  ]);
  new DataView(short.buffer).setUint16(14, short.byteLength - 16);
  assertThrows(
    () => parseProxyHeader(short),
    ProxyHeaderError,
    "a CRC32C TLV of 3 bytes (not 4)",
  );
});

Deno.test("parseProxyHeader() refuses what the spec says to drop, naming what is wrong", () => {
  const v2 = (head: number[], block: number[]) =>
    new Uint8Array([...SIGNATURE, ...head, 0, block.length, ...block]);
  const cases: [Uint8Array, RegExp][] = [
    [encode("GET / HTTP/1.1\r\n\r\n"), /not a PROXY protocol header/],
    [encode("\x16\x03\x01\x02\x00\x01\x00\x01"), /not a PROXY protocol header/],
    [encode("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), /unknown protocol/],
    [encode("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), /not IPv4/],
    [encode("PROXY TCP4 ::1 ::1 1 2\r\n"), /PROXY v1/],
    [encode("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), /not IPv6/],
    [encode("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), /5 fields/],
    [encode("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), /ports/],
    [encode("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), /ports/],
    [encode("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), /CRLF/],
    [encode("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), /CRLF/],
    [encode(`PROXY UNKNOWN ${"f".repeat(100)}\r\n`), /107 bytes/],
    [v2([0x11, 0x11], new Array(12).fill(0)), /version 1/],
    [v2([0x22, 0x11], new Array(12).fill(0)), /unknown command 2/],
    [v2([0x21, 0x41], new Array(12).fill(0)), /family and protocol 0x41/],
    [v2([0x21, 0x13], new Array(12).fill(0)), /family and protocol 0x13/],
    [v2([0x21, 0x21], new Array(12).fill(0)), /12 address bytes, 36 needed/],
    [v2([0x21, 0x11], [...new Array(12).fill(0), 1, 0, 9]), /runs past/],
    [v2([0x21, 0x11], [...new Array(12).fill(0), 1]), /cut short/],
  ];
  for (const [bytes, pattern] of cases) {
    assertThrows(
      () => parseProxyHeader(bytes),
      ProxyHeaderError,
      undefined,
      decode(bytes),
    );
    try {
      parseProxyHeader(bytes);
    } catch (error) {
      assert(
        pattern.test((error as Error).message),
        `${JSON.stringify(decode(bytes))}: ${(error as Error).message}`,
      );
    }
  }
  // The limit, for v2: a header announcing more than maxBytes.
  assertThrows(
    () => parseProxyHeader(v2([0x21, 0x11], new Array(200).fill(0)), 128),
    ProxyHeaderError,
    "216 bytes is over the limit of 128",
  );
  // The longest v1 line, 107 bytes, is fine.
  const longest = `PROXY UNKNOWN ${"f".repeat(91)}\r\n`;
  assertEquals(longest.length, 107);
  assertEquals(parseProxyHeader(encode(longest))?.command, "local");
});

const ipv4 = fc.tuple(
  fc.nat(255),
  fc.nat(255),
  fc.nat(255),
  fc.nat(255),
).map((b) => b.join("."));
const ipv6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 })
  .filter((g) => !(g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff))
  .map((g) => g.map((x) => x.toString(16)).join(":"));
const port = fc.nat(65535);
const addresses = fc.oneof(
  fc.tuple(ipv4, ipv4, port, port),
  fc.tuple(ipv6, ipv6, port, port),
).map(([a, b, p, q]) => ({ source: tcp(a, p), destination: tcp(b, q) }));

function sameHost(a: string, b: string): boolean {
  const x = parseIPv6(a);
  const y = parseIPv6(b);
  return x && y ? x.join() === y.join() : a === b;
}

Deno.test("encodeProxyHeader() then parseProxyHeader() gives back the addresses, both versions (property)", () => {
  fc.assert(
    fc.property(addresses, fc.constantFrom(1 as const, 2 as const), (a, v) => {
      const bytes = encodeProxyHeader(v, a);
      const header = parseProxyHeader(concat([bytes, encode("payload")]))!;
      assertEquals(header.version, v);
      assertEquals(header.byteLength, bytes.byteLength);
      const source = header.source as Deno.NetAddr;
      const destination = header.destination as Deno.NetAddr;
      assert(sameHost(source.hostname, a.source.hostname));
      assert(sameHost(destination.hostname, a.destination.hostname));
      assertEquals(
        [source.port, destination.port],
        [a.source.port, a.destination.port],
      );
    }),
    { numRuns: 500 },
  );
});

Deno.test("parseProxyHeader() takes every part of a valid header as unfinished, never as wrong (property)", () => {
  fc.assert(
    fc.property(addresses, fc.constantFrom(1 as const, 2 as const), (a, v) => {
      const bytes = encodeProxyHeader(v, a);
      for (let n = 0; n < bytes.byteLength; n++) {
        assertEquals(parseProxyHeader(bytes.subarray(0, n)), null);
      }
    }),
    { numRuns: 200 },
  );
});

Deno.test("readProxyHeader() reads exactly the header, however the bytes arrive, never one byte past it (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      addresses,
      fc.constantFrom(1 as const, 2 as const),
      fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 8 }),
      async (a, v, sizes) => {
        const header = encodeProxyHeader(v, a);
        const reader = chunkedReader(
          concat([header, encode("GET / HTTP/1.1\r\n")]),
          sizes,
        );
        const got = await readProxyHeader(reader, { deadlineMs: 1000 });
        assertEquals(got.byteLength, header.byteLength);
        assertEquals(reader.consumed, header.byteLength);
      },
    ),
    { numRuns: 300 },
  );
});

/** A reader that gives `text` in one read, then nothing more, ever. */
function sendsThenWaits(text: string) {
  let sent = false;
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (sent) return new Promise(() => {});
      sent = true;
      const bytes = encode(text);
      p.set(bytes);
      return Promise.resolve(bytes.byteLength);
    },
  };
}

Deno.test("readProxyHeader() fails on garbage at the first bytes, on an early end, at its deadline, and over its size limit", async () => {
  const garbage = chunkedReader(encode("SSH-2.0-OpenSSH_9.2p1\r\n"), []);
  await assertRejects(
    () => readProxyHeader(garbage),
    ProxyHeaderError,
    "not a PROXY protocol header: got 'SSH-2.0-OpenSSH'",
  );
  assertEquals(garbage.consumed, 15);
  await assertRejects(
    () => readProxyHeader(chunkedReader(encode("PROXY TCP4 1.2."), [])),
    ProxyHeaderError,
    "closed in the middle of a PROXY header (got 'PROXY TCP4 1.2.')",
  );
  await assertRejects(
    () => readProxyHeader(chunkedReader(new Uint8Array(0), [])),
    ProxyHeaderError,
    "closed before sending a PROXY header",
  );
  // A client that sends "PRO", then nothing more.
  await assertRejects(
    () => readProxyHeader(sendsThenWaits("PRO"), { deadlineMs: 50 }),
    ProxyHeaderError,
    "no PROXY header within 0.05 s (got 'PRO')",
  );
  // A short line of garbage, then waiting (a client that did not know
  // about the proxy): refused at once, not at the deadline.
  await assertRejects(
    () => readProxyHeader(sendsThenWaits("hi\n"), { deadlineMs: 50 }),
    ProxyHeaderError,
    "not a PROXY protocol header: got 'hi\\n'",
  );
  const big = new Uint8Array([...SIGNATURE, 0x21, 0x11, 0x20, 0x00]);
  await assertRejects(
    () => readProxyHeader(chunkedReader(big, []), { maxBytes: 1024 }),
    ProxyHeaderError,
    "PROXY v2 header of 8208 bytes is over the limit of 1024",
  );
});

Deno.test("readProxyHeader() refuses a client its listener cannot have carried: UDP and Unix datagram on any, a Unix socket client over TCP; LOCAL and UNKNOWN fit any", async () => {
  const v2 = (family: number, block: number[], command = 0x21) =>
    new Uint8Array([
      ...SIGNATURE,
      command,
      family,
      block.length >> 8,
      block.length & 0xff,
      ...block,
    ]);
  const unixBlock = new Array(216).fill(0x61);
  const cases: [Uint8Array, "tcp" | "unix", string | undefined][] = [
    [v2(0x12, new Array(12).fill(1)), "tcp", "for a UDP client"],
    [v2(0x22, new Array(36).fill(1)), "unix", "for a UDP client"],
    [v2(0x32, unixBlock), "unix", "for a Unix datagram client"],
    [v2(0x31, unixBlock), "tcp", "for a Unix socket client"],
    [v2(0x31, unixBlock), "unix", undefined],
    [v2(0x11, new Array(12).fill(1)), "unix", undefined],
    // LOCAL: the family is ignored (the spec), whatever it says.
    [v2(0x32, unixBlock, 0x20), "tcp", undefined],
    [encode("PROXY UNKNOWN\r\n"), "tcp", undefined],
  ];
  for (const [bytes, listener, refusal] of cases) {
    const reading = readProxyHeader(chunkedReader(bytes, []), { listener });
    if (refusal === undefined) {
      assertEquals((await reading).byteLength, bytes.byteLength);
    } else {
      await assertRejects(() => reading, ProxyHeaderError, refusal);
    }
  }
  // The default listener is TCP.
  await assertRejects(
    () => readProxyHeader(chunkedReader(v2(0x31, unixBlock), [])),
    ProxyHeaderError,
    "a TCP listener takes TCP clients (IPv4 or IPv6) or LOCAL only",
  );
});

Deno.test("parseProxyHeader()'s errors show the header's text with its control characters escaped", () => {
  for (
    const line of [
      "PROXY \x1b]0;owned\x07 a b c d\r\n",
      "PROXY TCP\u2028closed a b c\r\n",
      "PROXY \u009b2Jx y\r\n",
    ]
  ) {
    const error = assertThrows(
      () => parseProxyHeader(encode(line)),
      ProxyHeaderError,
    );
    assert(
      // Finding control characters is the point.
      // deno-lint-ignore no-control-regex
      !/[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(error.message),
      JSON.stringify(error.message),
    );
  }
});
