/**
 * lib/http_head.ts: the request head reader's limits (size, time, a
 * connection that ends), over real loopback connections.
 */

import { assertEquals, assertRejects } from "@std/assert";
import { concat } from "@std/bytes";
import { HttpRequestError, readRequestHead } from "../lib/http_head.ts";

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
