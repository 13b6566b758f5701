/**
 * lib/unanswered_retry.ts over real sockets: a target that drops a request
 * is replaced, and the request sent again, only when that is allowed.
 */

import { assertEquals } from "@std/assert";
import { retryUnanswered } from "../lib/unanswered_retry.ts";

const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** A listener whose one client gets `serve`; its address to dial. */
function listenOnce(serve: (conn: Deno.Conn) => Promise<unknown>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = listener.accept().then(serve).catch(() => {}).finally(() =>
    listener.close()
  );
  return {
    dial: () =>
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    served,
  };
}

/** Reads once, then closes: a request dropped unanswered. */
const dropping = async (conn: Deno.Conn) => {
  await conn.read(new Uint8Array(64 * 1024));
  conn.close();
};

/** Echoes until the end, then closes. */
const echoing = (conn: Deno.Conn) => conn.readable.pipeTo(conn.writable);

/** Everything `conn` sends until its end. */
async function readAll(conn: { read(p: Uint8Array): Promise<number | null> }) {
  const chunks: number[] = [];
  const buffer = new Uint8Array(1024);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return decode(new Uint8Array(chunks));
    chunks.push(...buffer.subarray(0, n));
  }
}

Deno.test("retryUnanswered() sends a dropped request on, with the client's end of stream", async () => {
  const first = listenOnce(dropping);
  const second = listenOnce(echoing);
  const reasons: string[] = [];
  let answered = 0;
  const target = retryUnanswered(await first.dial(), {
    redial: (why) => {
      reasons.push(why);
      return second.dial();
    },
    answered: () => answered++,
  });
  await target.write(encode("ping"));
  await target.closeWrite();
  assertEquals(await readAll(target), "ping");
  target.close();
  await Promise.all([first.served, second.served]);
  assertEquals(reasons, ["closed without answering"]);
  assertEquals(answered, 1);
});

Deno.test("retryUnanswered() passes the end on when the client has sent nothing", async () => {
  const first = listenOnce(dropping);
  let redials = 0;
  const target = retryUnanswered(await first.dial(), {
    redial: () => {
      redials++;
      return Promise.resolve(undefined);
    },
  });
  // The target closes first (it reads nothing but the end).
  const closing = target.read(new Uint8Array(1));
  await target.closeWrite();
  assertEquals(await closing, null);
  target.close();
  await first.served;
  assertEquals(redials, 0);
});

Deno.test("retryUnanswered() does not retry a request longer than maxBytes", async () => {
  const first = listenOnce(dropping);
  let redials = 0;
  const target = retryUnanswered(await first.dial(), {
    maxBytes: 4,
    redial: () => {
      redials++;
      return Promise.resolve(undefined);
    },
  });
  await target.write(encode("ping"));
  await target.write(encode("!"));
  assertEquals(await target.read(new Uint8Array(1)), null);
  target.close();
  await first.served;
  assertEquals(redials, 0);
});

Deno.test("retryUnanswered() passes the failure on when no target is left", async () => {
  const first = listenOnce(dropping);
  const reasons: string[] = [];
  const target = retryUnanswered(await first.dial(), {
    redial: (why) => {
      reasons.push(why);
      return Promise.reject(new Error("no target up"));
    },
  });
  await target.write(encode("ping"));
  assertEquals(await target.read(new Uint8Array(1)), null);
  target.close();
  await first.served;
  assertEquals(reasons, ["closed without answering"]);
});

Deno.test("retryUnanswered() keeps nothing once the answer has begun: a later end passes on", async () => {
  const first = listenOnce(async (conn) => {
    await conn.read(new Uint8Array(16));
    await conn.write(encode("o"));
    conn.close();
  });
  let redials = 0;
  const target = retryUnanswered(await first.dial(), {
    redial: () => {
      redials++;
      return Promise.resolve(undefined);
    },
  });
  await target.write(encode("ping"));
  assertEquals(await readAll(target), "o");
  target.close();
  await first.served;
  assertEquals(redials, 0);
});

Deno.test("retryUnanswered() retries a target whose end is read while the client's first write to it is still on its way", async () => {
  // A killed target: it closed before it read anything.
  const first = listenOnce((conn) => Promise.resolve(conn.close()));
  const second = listenOnce(echoing);
  const raw = await first.dial();
  // The write lands only once the target's end has been read: the order a
  // busy forwarder saw (its clients got the end with their bytes sent).
  let endRead!: () => void;
  const ended = new Promise<void>((resolve) => endRead = resolve);
  const slow = {
    read: async (p: Uint8Array) => {
      const n = await raw.read(p);
      if (n === null) endRead();
      return n;
    },
    write: async (p: Uint8Array) => {
      await ended;
      return await raw.write(p);
    },
    closeWrite: () => raw.closeWrite(),
    close: () => raw.close(),
  };
  const reasons: string[] = [];
  const target = retryUnanswered(slow, {
    redial: (why) => {
      reasons.push(why);
      return second.dial();
    },
  });
  const reading = readAll(target);
  await target.write(encode("ping"));
  await target.closeWrite();
  assertEquals(await reading, "ping");
  target.close();
  await Promise.all([first.served, second.served]);
  assertEquals(reasons.length, 1);
});
