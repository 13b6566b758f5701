import { assertEquals, assertLess } from "@std/assert";
import { relay, type RelayConn } from "../lib/relay.ts";

/** A connection whose reads are answered, one by one, by `answers`. */
function fakeConn(
  answers: (() => Promise<Uint8Array | null>)[],
): RelayConn {
  let reads = 0;
  return {
    async read(p: Uint8Array): Promise<number | null> {
      const answer = answers[reads++];
      const chunk = answer ? await answer() : null;
      if (chunk === null) return null;
      p.set(chunk);
      return chunk.byteLength;
    },
    write: (p: Uint8Array) => Promise.resolve(p.byteLength),
    closeWrite: () => Promise.resolve(),
  };
}

/** An input that has ended. */
const noInput = { read: () => Promise.resolve(null) };

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("relay() writes what came while the output was busy in one write, byte-exact", async () => {
  const chunks = Array.from(
    { length: 40 },
    (_, i) => new Uint8Array(16_000 + i).fill(i),
  );
  const conn = fakeConn(chunks.map((chunk) => () => Promise.resolve(chunk)));
  const writes: number[] = [];
  const received: Uint8Array[] = [];
  const output = {
    async write(p: Uint8Array): Promise<number> {
      writes.push(p.byteLength);
      received.push(p.slice());
      await delay(5); // A slow output: stdout through a thread hop.
      return p.byteLength;
    },
  };
  const result = await relay(conn, { input: noInput, output });
  const total = chunks.reduce((n, chunk) => n + chunk.byteLength, 0);
  assertEquals(result.bytesReceived, total);
  assertEquals(
    new Uint8Array(received.flatMap((chunk) => [...chunk])),
    new Uint8Array(chunks.flatMap((chunk) => [...chunk])),
  );
  assertLess(writes.length, chunks.length / 4);
});

Deno.test("relay() writes each read at once while the next one waits", async () => {
  let printed = "";
  let printedHello!: () => void;
  const hello = new Promise<void>((resolve) => printedHello = resolve);
  const conn = fakeConn([
    () => Promise.resolve(new TextEncoder().encode("hello")),
    // The peer says no more until "hello" is out.
    () => hello.then(() => new TextEncoder().encode(" again")),
  ]);
  const output = {
    write(p: Uint8Array): Promise<number> {
      printed += new TextDecoder().decode(p);
      if (printed === "hello") printedHello();
      return Promise.resolve(p.byteLength);
    },
  };
  await relay(conn, { input: noInput, output });
  assertEquals(printed, "hello again");
});

Deno.test("relay() ends when the output goes away (| head), though the peer is silent", async () => {
  let silent!: () => void;
  const conn = fakeConn([
    () => Promise.resolve(new Uint8Array(100)),
    // Silent until the test ends.
    () => new Promise<null>((resolve) => silent = () => resolve(null)),
  ]);
  const output = {
    write(): Promise<number> {
      return Promise.reject(new Deno.errors.BrokenPipe("closed"));
    },
  };
  const result = await relay(conn, { input: noInput, output });
  assertEquals(result.bytesReceived, 0);
  silent();
});
