import {
  assert,
  assertEquals,
  assertLessOrEqual,
  assertMatch,
  assertRejects,
} from "@std/assert";
import {
  type ByteReader,
  closeQuietly,
  LineReader,
  LineTooLongError,
  readExact,
  UnexpectedEofError,
  writeAll,
} from "../mod.ts";

/** A reader that hands out `chunks` one per read, then EOF. */
function chunkedReader(chunks: Uint8Array[]): ByteReader {
  const queue = chunks.map((c) => c.slice());
  return {
    read(p) {
      const chunk = queue[0];
      if (!chunk) return Promise.resolve(null);
      const n = Math.min(p.byteLength, chunk.byteLength);
      p.set(chunk.subarray(0, n));
      if (n === chunk.byteLength) queue.shift();
      else queue[0] = chunk.subarray(n);
      return Promise.resolve(n);
    },
  };
}

const bytes = (...values: number[]) => new Uint8Array(values);
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("readExact() gathers exactly n bytes across one-byte reads", async () => {
  const reader = chunkedReader([1, 2, 3, 4, 5].map((b) => bytes(b)));
  assertEquals(await readExact(reader, 4), bytes(1, 2, 3, 4));
  assertEquals(await readExact(reader, 1), bytes(5));
});

Deno.test("readExact() of 0 bytes resolves at once without reading", async () => {
  const reader: ByteReader = {
    read: () => Promise.reject(new Error("read called")),
  };
  assertEquals((await readExact(reader, 0)).byteLength, 0);
});

Deno.test("readExact() rejects with UnexpectedEofError saying how many came", async () => {
  const reader = chunkedReader([bytes(1, 2), bytes(3)]);
  const error = await readExact(reader, 10).catch((e) => e);
  assert(error instanceof UnexpectedEofError);
  assertEquals(error.bytesRead, 3);
  assertEquals(error.bytesExpected, 10);
  assertMatch(error.message, /expected 10 bytes, got 3/);
});

Deno.test("readExact() rejects a negative or fractional count", async () => {
  const reader = chunkedReader([]);
  await assertRejects(() => readExact(reader, -1), RangeError);
  await assertRejects(() => readExact(reader, 1.5), RangeError);
});

Deno.test("readExact() over a real socket with a peer writing in pieces", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  using client = await Deno.connect({ hostname: "127.0.0.1", port });
  using server = await listener.accept();
  const writing = (async () => {
    for (let i = 0; i < 100; i++) {
      await writeAll(client, new Uint8Array(1000).fill(i));
      await new Promise((r) => setTimeout(r, 0));
    }
    client.closeWrite();
  })();
  const data = await readExact(server, 100_000);
  for (let i = 0; i < 100; i++) assertEquals(data[i * 1000 + 999], i);
  await writing;
  const error = await readExact(server, 1).catch((e) => e);
  assert(error instanceof UnexpectedEofError);
  assertEquals(error.bytesRead, 0);
});

Deno.test("writeAll() loops over partial writes and loses no byte", async () => {
  const written: number[] = [];
  let calls = 0;
  const writer = {
    write(p: Uint8Array) {
      calls++;
      const n = Math.min(3, p.byteLength);
      written.push(...p.subarray(0, n));
      return Promise.resolve(n);
    },
  };
  const data = bytes(...Array.from({ length: 20 }, (_, i) => i));
  await writeAll(writer, data);
  assertEquals(written, [...data]);
  assertEquals(calls, 7);
});

Deno.test("closeQuietly() closes a resource once, however often it is called", () => {
  let closes = 0;
  const resource = {
    close() {
      if (++closes > 1) throw new Deno.errors.BadResource("closed twice");
    },
  };
  closeQuietly(resource);
  closeQuietly(resource);
  closeQuietly(resource);
  assertEquals(closes, 1);
});

Deno.test("closeQuietly() ignores a real listener closed already", () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  listener.close();
  closeQuietly(listener);
  closeQuietly(listener);
});

Deno.test("LineReader splits LF and CRLF lines across chunk borders", async () => {
  const lines = new LineReader(
    chunkedReader([text("a\r"), text("\nbb\n\nccc\r\nlast")]),
    { maxLength: 8 },
  );
  const seen: string[] = [];
  for await (const line of lines) seen.push(new TextDecoder().decode(line));
  assertEquals(seen, ["a", "bb", "", "ccc", "last"]);
});

Deno.test("LineReader accepts a line of exactly maxLength, with CRLF", async () => {
  const lines = new LineReader(chunkedReader([text("abcd\r\nefgh\n")]), {
    maxLength: 4,
  });
  assertEquals(await lines.readLine(), text("abcd"));
  assertEquals(await lines.readLine(), text("efgh"));
  assertEquals(await lines.readLine(), null);
});

Deno.test("LineReader rejects a line over maxLength without buffering it all", async () => {
  let served = 0;
  const endless: ByteReader = {
    read(p) {
      served += p.byteLength;
      p.fill(0x61);
      return Promise.resolve(p.byteLength);
    },
  };
  const lines = new LineReader(endless, { maxLength: 100 });
  const error = await lines.readLine().catch((e) => e);
  assert(error instanceof LineTooLongError);
  assertEquals(error.maxLength, 100);
  assertLessOrEqual(served, 102, `read ${served} bytes for a 100-byte limit`);
});

Deno.test("LineReader rejects an over-long last line without an ending", async () => {
  const lines = new LineReader(chunkedReader([text("abcdef")]), {
    maxLength: 5,
  });
  await assertRejects(() => lines.readLine(), LineTooLongError);
});
