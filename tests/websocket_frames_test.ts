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
import { pseudoRandomBytes, startServer } from "./_helpers.ts";
import { echoBackend } from "./_echo_backend.ts";
import { unmask } from "../lib/websocket_frames.ts";
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
