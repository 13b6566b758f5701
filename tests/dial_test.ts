import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
  assertRejects,
} from "@std/assert";
import { concat } from "@std/bytes";
import {
  ConnectError,
  connectFailureReason,
  type ConnectFunction,
  DialError,
  dialHappyEyeballs,
  dialHost,
  DialTimeoutError,
  happyEyeballsOrder,
  HostNotFoundError,
  relay,
  relayDatagrams,
  resolveHost,
} from "../mod.ts";
import { addressFamily } from "../lib/dial.ts";

const encoder = new TextEncoder();
import { assertSameBytes, pseudoRandomBytes, readAll } from "./_helpers.ts";

Deno.test("happyEyeballsOrder() puts IPv6 first and interleaves the families", () => {
  assertEquals(
    happyEyeballsOrder([
      "192.0.2.1",
      "192.0.2.2",
      "192.0.2.3",
      "2001:db8::1",
      "2001:db8::2",
    ]),
    ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "192.0.2.3"],
  );
});

Deno.test("happyEyeballsOrder() keeps the resolver's order within a family and drops duplicates", () => {
  assertEquals(
    happyEyeballsOrder(["10.0.0.2", "::2", "10.0.0.1", "::1", "::2"]),
    ["::2", "10.0.0.2", "::1", "10.0.0.1"],
  );
});

Deno.test("happyEyeballsOrder() honours First Address Family Count", () => {
  assertEquals(
    happyEyeballsOrder(["10.0.0.1", "10.0.0.2", "::1", "::2", "::3"], 2),
    ["::1", "::2", "10.0.0.1", "::3", "10.0.0.2"],
  );
});

Deno.test("happyEyeballsOrder() with one family keeps it as given", () => {
  assertEquals(happyEyeballsOrder(["10.0.0.3", "10.0.0.1"]), [
    "10.0.0.3",
    "10.0.0.1",
  ]);
  assertEquals(happyEyeballsOrder(["::3", "::1"]), ["::3", "::1"]);
  assertEquals(happyEyeballsOrder([]), []);
});

Deno.test("happyEyeballsOrder() treats IPv4-mapped IPv6 as IPv4", () => {
  assertEquals(addressFamily("::ffff:10.0.0.1"), 4);
  assertEquals(addressFamily("fe80::1"), 6);
  assertEquals(addressFamily("localhost"), 0);
  assertEquals(happyEyeballsOrder(["::ffff:10.0.0.1", "::1"]), [
    "::1",
    "::ffff:10.0.0.1",
  ]);
});

/** A scripted fake connection attempt, to test the race without a network. */
interface Script {
  /** Milliseconds until the outcome; `Infinity` hangs until aborted. */
  afterMs: number;
  outcome: "connect" | "refuse";
  /** Connect even when aborted (a connection that completes too late). */
  ignoreAbort?: boolean;
}

class FakeConn {
  closed = false;
  constructor(readonly address: string) {}
  close(): void {
    this.closed = true;
  }
}

function fakeNetwork(scripts: Record<string, Script>) {
  const began = performance.now();
  const started: { address: string; atMs: number }[] = [];
  const aborted: string[] = [];
  const conns: FakeConn[] = [];
  const connect: ConnectFunction<FakeConn> = (address, _port, signal) => {
    started.push({ address, atMs: performance.now() - began });
    const script = scripts[address];
    return new Promise((resolve, reject) => {
      const timer = Number.isFinite(script.afterMs)
        ? setTimeout(() => {
          signal.removeEventListener("abort", onAbort);
          if (script.outcome === "refuse") {
            reject(new Deno.errors.ConnectionRefused("Connection refused"));
          } else {
            const conn = new FakeConn(address);
            conns.push(conn);
            resolve(conn);
          }
        }, script.afterMs)
        : undefined;
      const onAbort = () => {
        aborted.push(address);
        if (script.ignoreAbort) return;
        clearTimeout(timer);
        reject(signal.reason);
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  };
  return { connect, started, aborted, conns };
}

Deno.test("dialHappyEyeballs() starts IPv4 after the attempt delay when IPv6 black-holes, and cancels IPv6", async () => {
  const net = fakeNetwork({
    "2001:db8::1": { afterMs: Infinity, outcome: "connect" },
    "192.0.2.1": { afterMs: 5, outcome: "connect" },
  });
  const conn = await dialHappyEyeballs(["192.0.2.1", "2001:db8::1"], 80, {
    connect: net.connect,
    attemptDelayMs: 100,
  });
  assertEquals(conn.address, "192.0.2.1");
  assertEquals(net.started.map((s) => s.address), [
    "2001:db8::1",
    "192.0.2.1",
  ]);
  assertGreaterOrEqual(
    net.started[1].atMs,
    95,
    `IPv4 at ${net.started[1].atMs} ms`,
  );
  assertEquals(net.aborted, ["2001:db8::1"]);
});

Deno.test("dialHappyEyeballs() lets a working IPv6 win without starting IPv4", async () => {
  const net = fakeNetwork({
    "2001:db8::1": { afterMs: 5, outcome: "connect" },
    "192.0.2.1": { afterMs: 1, outcome: "connect" },
  });
  const conn = await dialHappyEyeballs(["192.0.2.1", "2001:db8::1"], 80, {
    connect: net.connect,
  });
  assertEquals(conn.address, "2001:db8::1");
  assertEquals(net.started.map((s) => s.address), ["2001:db8::1"]);
});

Deno.test("dialHappyEyeballs() starts the next attempt at once when one fails", async () => {
  const net = fakeNetwork({
    "2001:db8::1": { afterMs: 5, outcome: "refuse" },
    "192.0.2.1": { afterMs: 5, outcome: "connect" },
  });
  const conn = await dialHappyEyeballs(["2001:db8::1", "192.0.2.1"], 80, {
    connect: net.connect,
    attemptDelayMs: 2000,
  });
  assertEquals(conn.address, "192.0.2.1");
  assertLess(net.started[1].atMs, 1000, `next at ${net.started[1].atMs} ms`);
});

Deno.test("dialHappyEyeballs() staggers every attempt while all hang, in interleaved order", async () => {
  const hang: Script = { afterMs: Infinity, outcome: "connect" };
  const net = fakeNetwork({
    "::1": hang,
    "::2": hang,
    "10.0.0.1": hang,
    "10.0.0.2": { afterMs: 1, outcome: "connect" },
  });
  const conn = await dialHappyEyeballs(
    ["10.0.0.1", "10.0.0.2", "::1", "::2"],
    80,
    { connect: net.connect, attemptDelayMs: 30 },
  );
  assertEquals(conn.address, "10.0.0.2");
  assertEquals(net.started.map((s) => s.address), [
    "::1",
    "10.0.0.1",
    "::2",
    "10.0.0.2",
  ]);
  for (let i = 1; i < net.started.length; i++) {
    const gap = net.started[i].atMs - net.started[i - 1].atMs;
    assertGreaterOrEqual(gap, 25, `gap ${i}: ${gap} ms`);
  }
  assertEquals(net.aborted.sort(), ["10.0.0.1", "::1", "::2"]);
});

Deno.test("dialHappyEyeballs() closes a loser that connects after the winner", async () => {
  const net = fakeNetwork({
    "::1": { afterMs: 60, outcome: "connect", ignoreAbort: true },
    "10.0.0.1": { afterMs: 5, outcome: "connect" },
  });
  const conn = await dialHappyEyeballs(["::1", "10.0.0.1"], 80, {
    connect: net.connect,
    attemptDelayMs: 10,
  });
  assertEquals(conn.address, "10.0.0.1");
  assertEquals(conn.closed, false);
  // dialHappyEyeballs() waited for the loser to settle, then closed it.
  const late = net.conns.find((c) => c.address === "::1");
  assert(late, "the late connection was made");
  assertEquals(late.closed, true);
});

Deno.test("dialHappyEyeballs() rejects with every failure when all are refused", async () => {
  const net = fakeNetwork({
    "::1": { afterMs: 1, outcome: "refuse" },
    "127.0.0.1": { afterMs: 1, outcome: "refuse" },
  });
  const error = await dialHappyEyeballs(["127.0.0.1", "::1"], 7, {
    connect: net.connect,
    target: "localhost:7",
  }).catch((e) => e);
  assert(error instanceof DialError);
  assertEquals(error.kind, "refused");
  assertEquals(error.target, "localhost:7");
  assertEquals(error.failures.map((f) => f.address), ["::1", "127.0.0.1"]);
  assertEquals(
    error.message,
    "cannot connect to localhost:7: connection refused ([::1]:7, 127.0.0.1:7)",
  );
});

Deno.test("dialHappyEyeballs() times out and aborts every attempt", async () => {
  const hang: Script = { afterMs: Infinity, outcome: "connect" };
  const net = fakeNetwork({ "::1": hang, "127.0.0.1": hang });
  const began = performance.now();
  const error = await dialHappyEyeballs(["127.0.0.1", "::1"], 7, {
    connect: net.connect,
    attemptDelayMs: 20,
    timeoutMs: 150,
  }).catch((e) => e);
  const tookMs = performance.now() - began;
  assert(error instanceof DialTimeoutError);
  assertEquals(error.kind, "timeout");
  assertEquals(error.message, "timed out after 0.15 s");
  assert(tookMs >= 140 && tookMs < 2000, `took ${tookMs} ms`);
  assertEquals(net.aborted.sort(), ["127.0.0.1", "::1"]);
});

Deno.test("dialHappyEyeballs() stops when its signal aborts", async () => {
  const net = fakeNetwork({ "::1": { afterMs: Infinity, outcome: "connect" } });
  const controller = new AbortController();
  const dialing = dialHappyEyeballs(["::1"], 7, {
    connect: net.connect,
    signal: controller.signal,
  });
  controller.abort(new Error("stop"));
  const stopped = await assertRejects(() => dialing, Error);
  assertMatch(stopped.message, /stop/);
  assertEquals(net.aborted, ["::1"]);
});

Deno.test("dialHappyEyeballs() with no address rejects with DialError", async () => {
  await assertRejects(() => dialHappyEyeballs([], 7), DialError);
});

Deno.test("dialHappyEyeballs() over real sockets: ::1 refused, 127.0.0.1 wins at once", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  const accepting = listener.accept();
  const began = performance.now();
  const failed: string[] = [];
  using conn = await dialHappyEyeballs(["127.0.0.1", "::1"], port, {
    attemptDelayMs: 5000,
    onFailure: (address, error) =>
      failed.push(`${address} ${connectFailureReason(error)}`),
  });
  using _server = await accepting;
  assertLess(performance.now() - began, 4000, "did not wait the delay");
  assertEquals((conn.remoteAddr as Deno.NetAddr).hostname, "127.0.0.1");
  assertEquals(failed.length, 1);
  assertMatch(
    failed[0],
    /^::1 (connection refused|.*unreachable|.*not available)/,
  );
});

Deno.test("resolveHost() returns literals as they are and resolves localhost", async () => {
  assertEquals(await resolveHost("192.0.2.7"), ["192.0.2.7"]);
  assertEquals(await resolveHost("[2001:db8::7]"), ["2001:db8::7"]);
  const local = await resolveHost("localhost");
  assert(
    local.every((a) => a === "127.0.0.1" || a === "::1"),
    local.join(),
  );
});

Deno.test("resolveHost() throws HostNotFoundError for an unknown name", async () => {
  const error = await resolveHost("no-such-host.invalid").catch((e) => e);
  assert(error instanceof HostNotFoundError);
  assert(error instanceof ConnectError);
  assertEquals(error.kind, "no-such-host");
  assertEquals(error.hostname, "no-such-host.invalid");
});

Deno.test("resolveHost() refuses what is neither an IP literal nor a name", async () => {
  const error = await resolveHost("1.2.3").catch((e) => e);
  assert(error instanceof ConnectError);
  assertEquals(error.kind, "invalid-address");
});

Deno.test("dialHost() reports addresses in attempt order and names the target in errors", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  let resolved: string[] = [];
  const error = await dialHost("127.0.0.1", port, {
    onResolved: (addresses) => resolved = addresses,
  }).catch((e) => e);
  assertEquals(resolved, ["127.0.0.1"]);
  assert(error instanceof DialError);
  assertEquals(
    error.message,
    `connection refused by 127.0.0.1:${port}`,
  );
});

Deno.test("relay() moves megabytes both ways byte-exact, with half-close", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const upload = pseudoRandomBytes(3 * 1024 * 1024, 11);
  const download = pseudoRandomBytes(2 * 1024 * 1024, 12);
  const serving = (async () => {
    using peer = await listener.accept();
    const writing = (async () => {
      for (let off = 0; off < download.byteLength;) {
        off += await peer.write(download.subarray(off, off + 100_000));
      }
    })();
    const received = await readAll(peer); // Ends only on the client's half-close.
    await writing;
    return received;
  })();
  using conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  let offset = 0;
  const input = {
    read(p: Uint8Array): Promise<number | null> {
      if (offset === upload.byteLength) return Promise.resolve(null);
      const n = Math.min(p.byteLength, 50_000, upload.byteLength - offset);
      p.set(upload.subarray(offset, offset + n));
      offset += n;
      return Promise.resolve(n);
    },
  };
  const chunks: Uint8Array[] = [];
  const output = {
    write(p: Uint8Array): Promise<number> {
      chunks.push(p.slice());
      return Promise.resolve(p.byteLength);
    },
  };
  const result = await relay(conn, { input, output });
  const received = await serving;
  assertEquals(result.bytesSent, upload.byteLength);
  assertEquals(result.bytesReceived, download.byteLength);
  assertEquals(result.inputEnded, true);
  assertSameBytes(received, upload, "upload");
  assertSameBytes(concat(chunks), download, "download");
});

Deno.test("relayDatagrams() prints only the peer's datagrams, one per input chunk", async () => {
  const peer = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const stranger = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const seen: string[] = [];
  // The peer answers each datagram; a stranger also writes to our socket.
  const answering = (async () => {
    for (let i = 0; i < 2; i++) {
      const [data, from] = await peer.receive();
      seen.push(new TextDecoder().decode(data));
      await stranger.send(encoder.encode("spoofed"), socket.addr);
      await peer.send(encoder.encode(`re:${seen.at(-1)}`), from);
    }
  })();
  const chunks = ["a", "b"].map((c) => encoder.encode(c));
  const input = {
    async read(p: Uint8Array): Promise<number | null> {
      await new Promise((r) => setTimeout(r, 50));
      const chunk = chunks.shift();
      if (!chunk) return null;
      p.set(chunk);
      return chunk.byteLength;
    },
  };
  let out = "";
  const output = {
    write(p: Uint8Array): Promise<number> {
      out += new TextDecoder().decode(p);
      return Promise.resolve(p.byteLength);
    },
  };
  const result = await relayDatagrams(socket, peer.addr, {
    input,
    output,
    quietMs: 300,
  });
  await answering;
  peer.close();
  stranger.close();
  assertEquals(seen, ["a", "b"]);
  assertEquals(out, "re:are:b");
  assertEquals(result, {
    bytesSent: 2,
    bytesReceived: 8,
    inputEnded: true,
  });
});

Deno.test("relay() keeps sending after the peer half-closes first, until the input ends", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const upload = pseudoRandomBytes(3 * 1024 * 1024, 21);
  const serving = (async () => {
    using peer = await listener.accept();
    await peer.write(encoder.encode("ready\n"));
    await peer.closeWrite(); // Done sending; still reading.
    return await readAll(peer);
  })();
  using conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  let offset = 0;
  const input = {
    async read(p: Uint8Array): Promise<number | null> {
      // A slow producer: the peer's end of stream comes long before ours.
      if (offset % (512 * 1024) === 0) {
        await new Promise((r) => setTimeout(r, 30));
      }
      if (offset === upload.byteLength) return null;
      const n = Math.min(p.byteLength, 64 * 1024, upload.byteLength - offset);
      p.set(upload.subarray(offset, offset + n));
      offset += n;
      return n;
    },
  };
  let reply = "";
  const output = {
    write(p: Uint8Array): Promise<number> {
      reply += new TextDecoder().decode(p);
      return Promise.resolve(p.byteLength);
    },
  };
  const result = await relay(conn, { input, output });
  assertEquals(reply, "ready\n");
  assertEquals(result.inputEnded, true);
  assertSameBytes(await serving, upload, "upload");
});

Deno.test("relay() stops once the peer has closed and the input stays idle for lingerMs", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    using peer = await listener.accept();
    await peer.write(encoder.encode("bye\n"));
  })();
  using conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  let release = () => {};
  const input = {
    read(_p: Uint8Array): Promise<number | null> {
      // An interactive stdin: nothing typed, never ends (until released).
      return new Promise((resolve) => release = () => resolve(null));
    },
  };
  const output = { write: (p: Uint8Array) => Promise.resolve(p.byteLength) };
  const began = performance.now();
  const result = await relay(conn, { input, output, lingerMs: 200 });
  const tookMs = performance.now() - began;
  await serving;
  release();
  assertEquals(result.bytesReceived, 4);
  assertEquals(result.inputEnded, false);
  assert(tookMs >= 150 && tookMs < 5000, `took ${tookMs} ms`);
});
