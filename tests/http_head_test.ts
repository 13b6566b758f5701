/**
 * lib/http_head.ts: the request head reader's limits (size, time, a
 * connection that ends), over real loopback connections.
 */

import { assert, assertEquals, assertRejects } from "@std/assert";
import { concat } from "@std/bytes";
import {
  HttpRequestError,
  readRequestHead,
  writeResponse,
} from "../lib/http_head.ts";
import fc from "./_fast_check.ts";
import { chunkedReader } from "./_helpers.ts";

/** A connected pair over loopback: what the client writes, the server reads. */
async function pair(): Promise<{ client: Deno.Conn; server: Deno.Conn }> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  return { client, server };
}

Deno.test("readRequestHead() gives a slow client's head 408 once its time is up, and nothing at all null", async () => {
  const slow = await pair();
  try {
    await slow.client.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHo"));
    const error = await assertRejects(
      () => readRequestHead(slow.server, { timeoutMs: 200 }),
      HttpRequestError,
      "no whole request head within 0.2 s",
    );
    assertEquals(error.status, 408);
  } finally {
    slow.client.close();
    slow.server.close();
  }
  const silent = await pair();
  try {
    assertEquals(
      await readRequestHead(silent.server, { timeoutMs: 200 }),
      null,
    );
  } finally {
    silent.client.close();
    silent.server.close();
  }
});

Deno.test("readRequestHead() refuses a head over maxBytes with 431, one cut short with 400, and keeps what follows the head", async () => {
  const big = await pair();
  try {
    await big.client.write(
      new TextEncoder().encode(
        `GET / HTTP/1.1\r\nX: ${"a".repeat(600)}\r\n\r\n`,
      ),
    );
    const error = await assertRejects(
      () => readRequestHead(big.server, { maxBytes: 512 }),
      HttpRequestError,
    );
    assertEquals(error.status, 431);
  } finally {
    big.client.close();
    big.server.close();
  }
  const cut = await pair();
  try {
    await cut.client.write(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
    await cut.client.closeWrite();
    const error = await assertRejects(
      () => readRequestHead(cut.server),
      HttpRequestError,
      "the request head cut short",
    );
    assertEquals(error.status, 400);
  } finally {
    cut.client.close();
    cut.server.close();
  }
  const framed = await pair();
  try {
    await framed.client.write(concat([
      new TextEncoder().encode("GET /x?y HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\n"),
      new Uint8Array([0x82, 0x80]),
    ]));
    const head = await readRequestHead(framed.server);
    assertEquals(head?.target, "/x?y");
    assertEquals(head?.headers.get("a"), "1, 2");
    assertEquals([...head!.rest], [0x82, 0x80]);
  } finally {
    framed.client.close();
    framed.server.close();
  }
});

const token = fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}$/);
/** A field value: visible ASCII and obs-text (bytes 0x80-0xff), spaces and tabs only inside. */
const fieldValue = fc.array(
  fc.oneof(
    fc.integer({ min: 0x21, max: 0x7e }),
    fc.integer({ min: 0x80, max: 0xff }),
    fc.constantFrom(0x20, 0x09),
  ),
  { maxLength: 30 },
).map((codes) => String.fromCharCode(...codes).replace(/^[ \t]+|[ \t]+$/g, ""));

/** Bytes of `text`, one per character (each below 256). */
const latin1Bytes = (text: string) =>
  Uint8Array.from(text, (c) => c.charCodeAt(0));

Deno.test("readRequestHead() parses a valid head the same however its bytes are split, obs-text values too, and keeps only what followed it (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      token,
      fc.stringMatching(/^\/[!-~]{0,40}$/),
      fc.constantFrom("1.1", "1.0"),
      fc.array(fc.tuple(token, fieldValue), { maxLength: 12 }),
      fc.uint8Array({ maxLength: 40 }),
      fc.oneof(
        fc.constant([1]),
        fc.array(fc.integer({ min: 1, max: 600 }), {
          minLength: 1,
          maxLength: 5,
        }),
      ),
      async (method, target, version, fields, after, sizes) => {
        const text = `${method} ${target} HTTP/${version}\r\n` +
          fields.map(([name, value]) => `${name}: ${value}\r\n`).join("") +
          "\r\n";
        const head = latin1Bytes(text);
        const reader = chunkedReader(concat([head, after]), sizes);
        const got = await readRequestHead(reader);
        assert(got !== null);
        const expected = new Headers();
        for (const [name, value] of fields) expected.append(name, value);
        assertEquals(
          [got.method, got.target, [...got.headers]],
          [method, target, [...expected]],
        );
        assertEquals([...got.rest], [...after.subarray(0, got.rest.length)]);
        assertEquals(reader.consumed, head.length + got.rest.length);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("readRequestHead() on garbage: null for nothing, else a head or a 400, 431 or 505, never another error (property)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }),
        fc.uint8Array({ maxLength: 300 }).map((b) =>
          concat([b, latin1Bytes("\r\n\r\n")])
        ),
        fc.uint8Array({ minLength: 9000, maxLength: 9000 }),
      ),
      fc.array(fc.integer({ min: 1, max: 600 }), {
        minLength: 1,
        maxLength: 5,
      }),
      async (bytes, sizes) => {
        try {
          const head = await readRequestHead(chunkedReader(bytes, sizes));
          assertEquals(head === null, bytes.length === 0);
        } catch (error) {
          assert(error instanceof HttpRequestError, String(error));
          assert([400, 431, 505].includes(error.status), error.message);
        }
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("readRequestHead() takes a field's bytes from 0x80 as ISO-8859-1: a UTF-8 '€' in a User-Agent is read, not a 400", async () => {
  const bytes = concat([
    latin1Bytes("GET / HTTP/1.1\r\nUser-Agent: "),
    new TextEncoder().encode("agent €\u00a0"),
    latin1Bytes("\r\n\r\n"),
  ]);
  const head = await readRequestHead(chunkedReader(bytes, []));
  assertEquals(
    head?.headers.get("user-agent"),
    "agent \xe2\x82\xac\xc2\xa0",
  );
});

Deno.test("writeResponse() sends no byte past its content-length: a file that grew after its size was taken is cut there", async () => {
  const written: Uint8Array[] = [];
  const conn = {
    write: (bytes: Uint8Array) => {
      written.push(bytes.slice());
      return Promise.resolve(bytes.length);
    },
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("hel"));
      controller.enqueue(new TextEncoder().encode("lo, and more"));
      controller.enqueue(new TextEncoder().encode(" and more"));
      controller.close();
    },
  });
  await writeResponse(
    conn,
    new Response(body, { headers: { "content-length": "5" } }),
    true,
  );
  const text = new TextDecoder().decode(concat(written));
  assertEquals(text.slice(text.indexOf("\r\n\r\n") + 4), "hello");
});
