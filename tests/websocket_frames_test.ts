/**
 * The bridge's own RFC 6455 server, frame by frame: servers/forward.ts
 * with a ws:// LISTEN, run as a subprocess, in front of an echo in this
 * process, driven by a raw TCP client that writes the frames a library
 * would never send (unmasked, fragmented around a ping, bad UTF-8, a
 * 64-bit length, reserved bits) and reads the server's frames byte by
 * byte.
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { concat } from "@std/bytes";
import { chunkedReader, pseudoRandomBytes, startServer } from "./_helpers.ts";
import fc from "./_fast_check.ts";
import { FrameReader } from "../lib/websocket_frame_reader.ts";
import { echoBackend } from "./_echo_backend.ts";
import { unmask, WebSocketProtocolError } from "../lib/websocket_frames.ts";
import { clientFrame, RawClient, type ServerFrame } from "./_raw_websocket.ts";

const encode = (s: string) => new TextEncoder().encode(s);

function startBridge(args: string[]) {
  return startServer("servers/forward.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args,
  });
}

Deno.test("forward.ts ws:// LISTEN: a fragmented message with a ping between its fragments is one message to the target, and the ping gets its pong", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(["ws://127.0.0.1:0/", echo.target]);
  const client = await RawClient.open(bridge.port);
  try {
    const parts = [encode("one "), encode("two "), encode("three")];
    await client.send(concat([
      clientFrame(0x2, parts[0], { fin: false }),
      clientFrame(0x0, parts[1], { fin: false }),
      clientFrame(0x9, encode("are you there")),
      clientFrame(0x0, parts[2]),
    ]));
    const others: ServerFrame[] = [];
    const echoed = await client.data(13, others);
    assertEquals(new TextDecoder().decode(echoed), "one two three");
    // The pong may come before the echo or among it, never missing.
    while (!others.some((f) => f.opcode === 0xa)) {
      others.push((await client.frame())!);
    }
    const pong = others.find((f) => f.opcode === 0xa)!;
    assertEquals(new TextDecoder().decode(pong.payload), "are you there");
    await client.send(
      clientFrame(0x8, concat([new Uint8Array([3, 232]), encode("bye")])),
    );
    assertEquals(await client.closeCode(), 1000);
    assert(await client.ended());
  } finally {
    client.close();
  }
  await bridge.proc.waitForStderr(
    /^closed 127\.0\.0\.1:\d+ \(13 bytes in, 13 bytes out\) to 127\.0\.0\.1:\d+, [\d.]+ s, client closed first \(1000 bye\)$/,
  );
});

Deno.test("forward.ts ws:// LISTEN: a 64-bit length is read, and a message of 70,000 bytes in one frame comes back whole", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge(["ws://127.0.0.1:0/", echo.target]);
  const client = await RawClient.open(bridge.port);
  try {
    const small = encode("short, in a long header");
    await client.send(clientFrame(0x2, small, { long: true }));
    assertEquals(await client.data(small.length), small);
    const payload = pseudoRandomBytes(70_000, 9);
    await client.send(clientFrame(0x2, payload));
    assertEquals(await client.data(payload.length), payload);
  } finally {
    client.close();
  }
});

for (
  const [what, frame, code, line, args] of [
    [
      "an unmasked frame",
      clientFrame(0x2, encode("x"), { masked: false }),
      1002,
      /an unmasked frame from a client \(1002\)$/,
      [],
    ],
    [
      "a text message not UTF-8",
      clientFrame(0x1, new Uint8Array([0x68, 0xc3, 0x28])),
      1007,
      /a text message not UTF-8 \(1007\)$/,
      [],
    ],
    [
      "a message over --max-message, told by its 64-bit length before its payload",
      clientFrame(0x2, new Uint8Array(0), { long: true }).map((b, i) =>
        i === 6 ? 0x01 : b
      ).subarray(0, 14),
      1009,
      /a message of 16777216 bytes, more than 65536 \(1009\)$/,
      ["--max-message", "65536"],
    ],
    [
      "a frame with a reserved bit",
      clientFrame(0x2, encode("x"), { rsv: 0x40 }),
      1002,
      /a frame with reserved bits set \(1002\)$/,
      [],
    ],
    [
      "a continuation with no message begun",
      clientFrame(0x0, encode("x")),
      1002,
      /a continuation frame with no message begun \(1002\)$/,
      [],
    ],
    [
      "a fragmented ping",
      clientFrame(0x9, encode("x"), { fin: false }),
      1002,
      /a fragmented control frame \(1002\)$/,
      [],
    ],
    [
      "an unknown opcode",
      clientFrame(0x3, encode("x")),
      1002,
      /a frame of opcode 3 \(1002\)$/,
      [],
    ],
  ] as const
) {
  Deno.test(`forward.ts ws:// LISTEN: ${what} closes the client with ${code}`, async () => {
    await using echo = echoBackend();
    await using bridge = await startBridge([
      ...args,
      "ws://127.0.0.1:0/",
      echo.target,
    ]);
    const client = await RawClient.open(bridge.port);
    try {
      await client.send(frame);
      assertEquals(await client.closeCode(), code);
      // It waits for our close frame: the connection ends after it.
      await client.send(clientFrame(0x8, new Uint8Array([3, 232])));
      assert(await client.ended());
    } finally {
      client.close();
    }
    const [closing] = await bridge.proc.waitForStderr(
      /^closed 127\.0\.0\.1:.*/,
    );
    assertMatch(closing, line);
    assertMatch(
      closing,
      /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\)/,
    );
  });
}

Deno.test("forward.ts ws:// LISTEN: bad requests get their status before any upgrade, and one closing line each", async () => {
  await using echo = echoBackend();
  await using bridge = await startBridge([
    "ws://127.0.0.1:0/only",
    echo.target,
  ]);
  const ask = async (request: string) => {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: bridge.port,
    });
    await conn.write(encode(request));
    const answer = new TextDecoder().decode(
      await new Response(conn.readable).bytes(),
    );
    return answer.split("\r\n");
  };
  const upgrade = (path: string, extra: string) =>
    `GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${extra}\r\n`;
  const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  const version = "Sec-WebSocket-Version: 13\r\n";
  const old = await ask(upgrade("/only", `${key}Sec-WebSocket-Version: 8\r\n`));
  assertEquals(old[0], "HTTP/1.1 426 Upgrade Required");
  assert(old.includes("sec-websocket-version: 13"), old.join("|"));
  assertEquals(
    (await ask(upgrade("/only", `Sec-WebSocket-Key: short\r\n${version}`)))[0],
    "HTTP/1.1 400 Bad Request",
  );
  assertEquals(
    (await ask(upgrade("/other", key + version)))[0],
    "HTTP/1.1 404 Not Found",
  );
  assertEquals(
    (await ask("NOT HTTP AT ALL\r\n\r\n"))[0],
    "HTTP/1.1 400 Bad Request",
  );
  const huge = await ask(`GET / HTTP/1.1\r\nX: ${"a".repeat(9000)}\r\n\r\n`);
  assertEquals(huge[0], "HTTP/1.1 431 Request Header Fields Too Large");
  await bridge.proc.waitForStderr(/: WebSocket version 8, not 13 \(426\)$/);
  await bridge.proc.waitForStderr(/: path \/other is not \/only \(404\)$/);
  await bridge.proc.waitForStderr(
    /: bad request: a request head over 8192 bytes \(431\)$/,
  );
});

Deno.test("unmask() equals a byte-at-a-time XOR at every alignment, length and key offset", () => {
  const key = new Uint8Array([0x9c, 0x01, 0xfe, 0x42]);
  const source = pseudoRandomBytes(300, 5);
  for (let align = 0; align < 4; align++) {
    for (const length of [0, 1, 3, 4, 5, 31, 32, 33, 64, 67, 100, 257]) {
      for (let offset = 0; offset < 4; offset++) {
        const bytes = new Uint8Array(length + 8).subarray(
          align,
          align + length,
        );
        bytes.set(source.subarray(0, length));
        unmask(bytes, key, offset);
        const expected = source.subarray(0, length).map((b, i) =>
          b ^ key[(offset + i) & 3]
        );
        assertEquals(
          bytes,
          expected,
          `align ${align}, length ${length}, offset ${offset}`,
        );
      }
    }
  }
});

// ---------------------------------------------------------------------------
// FrameReader against a model: what a client sends, as frames split into
// reads at any points, gives exactly what a simple decoder would.

/** What a valid stream holds: messages in fragments, control frames among them. */
type Sent =
  | { kind: "message"; opcode: 1 | 2; fragments: Uint8Array[] }
  | { kind: "control"; opcode: 9 | 10; payload: Uint8Array };

/** What the reader gave: whole messages and control frames, in order. */
type Got = { kind: "message" | "control"; opcode: number; bytes: number[] };

/** Payload sizes with the length encodings' edges among them. */
const payloadSize = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 300 }) },
  { weight: 1, arbitrary: fc.constantFrom(125, 126, 127, 65535, 65536) },
);

/** A message's bytes, split into fragments at arbitrary points (inside a UTF-8 character too). */
const message = fc.oneof(
  fc.tuple(
    fc.string({ unit: "grapheme", maxLength: 80 }),
    fc.array(
      fc.nat(),
      { maxLength: 4 },
    ),
  ).map(([text, cuts]) => ({ opcode: 1 as const, bytes: encode(text), cuts })),
  fc.tuple(payloadSize, fc.array(fc.nat(), { maxLength: 4 })).map((
    [size, cuts],
  ) => ({ opcode: 2 as const, bytes: pseudoRandomBytes(size, size), cuts })),
).map(({ opcode, bytes, cuts }) => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))]
    .sort((a, b) => a - b);
  const fragments = [0, ...points].map((from, i) =>
    bytes.subarray(from, [...points, bytes.length][i])
  );
  return { kind: "message" as const, opcode, fragments };
});

const control = fc.tuple(
  fc.constantFrom(9 as const, 10 as const),
  fc.integer({ min: 0, max: 125 }),
).map(([opcode, size]) => ({
  kind: "control" as const,
  opcode,
  payload: pseudoRandomBytes(size, size + 7),
}));

/** The stream's frames (control frames may fall between a message's fragments), and what a decoder gives. */
function framesOf(
  sent: { message: Sent & { kind: "message" }; controls: Sent[] }[],
  keys: Uint8Array[],
): { bytes: Uint8Array; expected: Got[] } {
  const frames: Uint8Array[] = [];
  const expected: Got[] = [];
  let k = 0;
  const key = () => keys[k++ % keys.length];
  for (const { message, controls } of sent) {
    const { fragments } = message;
    const sendControls = () => {
      for (const c of controls) {
        if (c.kind !== "control") continue;
        frames.push(clientFrame(c.opcode, c.payload, { key: key() }));
        expected.push({
          kind: "control",
          opcode: c.opcode,
          bytes: [...c.payload],
        });
      }
    };
    // Between the first fragment and the next; before a message whole.
    if (fragments.length === 1) sendControls();
    fragments.forEach((fragment, i) => {
      frames.push(clientFrame(i === 0 ? message.opcode : 0, fragment, {
        fin: i === fragments.length - 1,
        key: key(),
      }));
      if (i === 0 && fragments.length > 1) sendControls();
    });
    expected.push({
      kind: "message",
      opcode: message.opcode,
      bytes: [...concat(fragments)],
    });
  }
  return { bytes: concat(frames), expected };
}

/** Reads `reader` to its end: messages reassembled, control frames as they come. */
async function readAllFrames(
  reader: FrameReader,
  maxPieceBytes: number,
): Promise<Got[]> {
  const got: Got[] = [];
  let pieces: Uint8Array[] = [];
  for (;;) {
    const event = await reader.next();
    if (event === null) return got;
    assert(event.bytes.length <= maxPieceBytes, "a piece over the buffer");
    if (event.kind === "control") {
      got.push({
        kind: "control",
        opcode: event.opcode,
        bytes: [...event.bytes],
      });
      continue;
    }
    // Copied: a piece is valid until the next read.
    pieces.push(event.bytes.slice());
    if (event.last) {
      got.push({
        kind: "message",
        opcode: event.opcode,
        bytes: [...concat(pieces)],
      });
      pieces = [];
    }
  }
}

const readSizes = fc.oneof(
  fc.constant([1]),
  fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 6 }),
);

Deno.test("FrameReader gives what a simple decoder gives for any valid frames, split into reads anywhere (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({ message, controls: fc.array(control, { maxLength: 2 }) }),
        { minLength: 1, maxLength: 5 },
      ),
      fc.array(fc.uint8Array({ minLength: 4, maxLength: 4 }), {
        minLength: 1,
        maxLength: 3,
      }),
      readSizes,
      async (sent, keys, sizes) => {
        const { bytes, expected } = framesOf(sent, keys);
        // A byte at a time only for streams that stay short.
        if (sizes[0] === 1 && bytes.length > 20_000) sizes = [7];
        const reader = new FrameReader(chunkedReader(bytes, sizes), {
          maxMessageBytes: 1 << 20,
          maxBufferBytes: 64 * 1024,
        });
        assertEquals(await readAllFrames(reader, 64 * 1024), expected);
      },
    ),
    { numRuns: 150 },
  );
});

/** Frames as a hostile client may write them: any header bits, any length field. */
const hostileFrame = fc.record({
  first: fc.integer({ min: 0, max: 255 }),
  masked: fc.oneof(
    { weight: 9, arbitrary: fc.constant(true) },
    { weight: 1, arbitrary: fc.constant(false) },
  ),
  length: fc.oneof(
    fc.integer({ min: 0, max: 200 }),
    fc.constantFrom(126, 65535, 65536, 2 ** 32, 2 ** 53 - 1),
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  ),
  payload: fc.uint8Array({ maxLength: 200 }),
}).map(({ first, masked, length, payload }) => {
  const header: number[] = [first];
  const mask = masked ? 0x80 : 0;
  const big = BigInt(length);
  if (big < 126n) header.push(mask | Number(big));
  else if (big < 65536n) {
    header.push(mask | 126, Number(big >> 8n), Number(big & 0xffn));
  } else {
    header.push(mask | 127);
    for (let shift = 56n; shift >= 0n; shift -= 8n) {
      header.push(Number((big >> shift) & 0xffn));
    }
  }
  if (masked) header.push(1, 2, 3, 4);
  return concat([new Uint8Array(header), payload]);
});

Deno.test("FrameReader on garbage and hostile headers: never a throw but a close code (1002, 1007, 1009), never a piece past its limits (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 400 }),
        fc.array(hostileFrame, { minLength: 1, maxLength: 6 }).map((f) =>
          concat(f)
        ),
      ),
      readSizes,
      async (bytes, sizes) => {
        const maxMessageBytes = 1000;
        const reader = new FrameReader(chunkedReader(bytes, sizes), {
          maxMessageBytes,
          maxBufferBytes: 4096,
        });
        let messageBytes = 0;
        try {
          for (;;) {
            const event = await reader.next();
            if (event === null) break;
            assert(event.bytes.length <= 4096, "a piece over the buffer");
            if (event.kind === "data") {
              messageBytes += event.bytes.length;
              assert(
                messageBytes <= maxMessageBytes,
                "a message over its limit",
              );
              if (event.last) messageBytes = 0;
            }
          }
        } catch (error) {
          assert(error instanceof WebSocketProtocolError, String(error));
          assert([1002, 1007, 1009].includes(error.code), error.message);
        }
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("FrameReader: a 64-bit length with its top bit set is 1002, 2^63-1 is 1009, before any payload is read or held", async () => {
  for (
    const [high, code] of [[0x80000000, 1002], [0x7fffffff, 1009], [1, 1009]]
  ) {
    const header = new Uint8Array([
      0x82,
      0x80 | 127,
      0,
      0,
      0,
      0,
      0xff,
      0xff,
      0xff,
      0xff,
      1,
      2,
      3,
      4,
    ]);
    new DataView(header.buffer).setUint32(2, high);
    const reader = chunkedReader(header, [1]);
    const frames = new FrameReader(reader, { maxMessageBytes: 1 << 20 });
    const error = await frames.next().catch((e) => e);
    assert(error instanceof WebSocketProtocolError, String(error));
    assertEquals(error.code, code);
    assertEquals(reader.consumed, header.length);
  }
});

Deno.test("FrameReader: the limit counts the whole message: fragments each under it, together one byte over, are 1009 at the fragment that passes it", async () => {
  const fragments = Array.from(
    { length: 11 },
    (_, i) =>
      clientFrame(i === 0 ? 2 : 0, new Uint8Array(i < 10 ? 100 : 1), {
        fin: i === 10,
      }),
  );
  const reader = new FrameReader(chunkedReader(concat(fragments), [50]), {
    maxMessageBytes: 1000,
  });
  let delivered = 0;
  const error = await (async () => {
    for (;;) {
      const event = await reader.next();
      if (event === null) return null;
      delivered += event.bytes.length;
    }
  })().catch((e) => e);
  assert(error instanceof WebSocketProtocolError, String(error));
  assertEquals([error.code, delivered], [1009, 1000]);
});

Deno.test("FrameReader: a message of 100,000 1-byte fragments is 100,000 pieces handed on as they come, nothing gathered", async () => {
  const fragments = Array.from(
    { length: 100_000 },
    (_, i) => clientFrame(i === 0 ? 1 : 0, encode("a"), { fin: i === 99_999 }),
  );
  const reader = new FrameReader(chunkedReader(concat(fragments), [65536]), {
    maxMessageBytes: 1 << 20,
  });
  let pieces = 0;
  let last = false;
  while (!last) {
    const event = (await reader.next())!;
    pieces++;
    last = event.kind === "data" && event.last;
  }
  assertEquals(pieces, 100_000);
});
