// Server-side TLS on the runtime's engine (lib/tls_native.ts): that this
// Deno runs it (not the node:tls fallback), that close() really closes the
// socket of a client still in its handshake, that nothing is left open
// after many connections, and that the fallback adapter still serves.
import { assert, assertEquals, assertRejects } from "@std/assert";
import { readExact, readTlsFiles, writeAll } from "../mod.ts";
import {
  NodeTlsConn,
  startServerTls,
  tlsServerContext,
} from "../lib/tls_node.ts";
import { NativeTlsConn } from "../lib/tls_native.ts";
import { serveEcho } from "../servers/echo.ts";
import {
  connectTls,
  eventually,
  makeCertificates,
  missing,
  pseudoRandomBytes,
  readAll,
  type TestCertificates,
} from "./_helpers.ts";

const noOpenssl = missing("openssl");

function contextOf(certs: TestCertificates) {
  return tlsServerContext(readTlsFiles(certs.cert, certs.key));
}

/**
 * This process's open sockets with `port` at either end: other test files
 * run in this process too (`--parallel`), so a count of every descriptor
 * would count theirs.
 */
function socketsOnPort(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set<string>();
  for (const table of ["/proc/self/net/tcp", "/proc/self/net/tcp6"]) {
    for (const line of Deno.readTextFileSync(table).split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      if (fields[1].endsWith(`:${hex}`) || fields[2].endsWith(`:${hex}`)) {
        inodes.add(fields[9]);
      }
    }
  }
  let count = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode && inodes.has(inode)) count++;
    } catch {
      // Closed meanwhile.
    }
  }
  return count;
}

/** Accepts one connection and starts server TLS on it. */
async function acceptTls(
  listener: Deno.Listener,
  context: ReturnType<typeof tlsServerContext>,
): Promise<Deno.TlsConn> {
  return startServerTls(await listener.accept(), context);
}

Deno.test({
  name: "this Deno runs server TLS on its own engine, not the fallback",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const client = Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    using server = await acceptTls(listener, contextOf(certs));
    assert(
      server instanceof NativeTlsConn,
      `server TLS fell back to ${server.constructor.name}: lib/tls_native.ts no longer finds what it needs in Deno ${Deno.version.deno}`,
    );
    (await client).close();
  },
});

Deno.test({
  name:
    "close() during the handshake closes the socket: a silent client sees the end at once",
  ignore: noOpenssl || Deno.build.os !== "linux",
  async fn() {
    await using certs = await makeCertificates();
    const context = contextOf(certs);
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const before = socketsOnPort(listener.addr.port);
    for (const sends of ["", "\x16\x03\x01\x00"]) {
      // Silent, or a ClientHello that stops after its first bytes.
      using client = await Deno.connect({
        hostname: "127.0.0.1",
        port: listener.addr.port,
      });
      if (sends) await writeAll(client, new TextEncoder().encode(sends));
      const server = await acceptTls(listener, context);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const started = performance.now();
      server.close();
      await assertRejects(() => server.handshake());
      // The end (no byte before it), well before any timeout.
      const got = await readAll(client).catch(() => new Uint8Array());
      assertEquals(got.byteLength, 0);
      assert(performance.now() - started < 1000, "the socket stayed open");
    }
    assertEquals(
      socketsOnPort(listener.addr.port),
      before,
      "sockets left open",
    );
  },
});

Deno.test({
  name:
    "after a thousand TLS connections of every kind no descriptor is left open",
  ignore: noOpenssl || Deno.build.os !== "linux",
  async fn() {
    await using certs = await makeCertificates();
    const lines: string[] = [];
    await using server = serveEcho({
      hostname: "127.0.0.1",
      port: 0,
      tls: readTlsFiles(certs.cert, certs.key),
      // Long enough for a loaded machine's honest handshakes (300 ms cut
      // some, with 40 at once in this one process); the silent clients,
      // all waiting at once from the start, meet it once.
      handshakeTimeoutMs: 3000,
      perSource: 0,
      log: (line) => lines.push(line),
    });
    const { port } = server.addr as Deno.NetAddr;
    const data = pseudoRandomBytes(100 * 1024, 5);
    const before = socketsOnPort(port);
    const good = async () => {
      using conn = await connectTls(port, certs.ca);
      await writeAll(conn, data);
      assertEquals(
        (await readExact(conn, data.byteLength)).byteLength,
        100 * 1024,
      );
      await conn.closeWrite();
      assertEquals((await readAll(conn)).byteLength, 0);
    };
    const cut = async () => {
      // Leaves mid-stream, without close_notify.
      using conn = await connectTls(port, certs.ca);
      await writeAll(conn, data.subarray(0, 1000));
      await readExact(conn, 1000);
    };
    const garbage = async () => {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
      await readAll(conn).catch(() => {});
    };
    const silent = async () => {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await readAll(conn).catch(() => {});
    };
    const silentOnes = Array.from({ length: 50 }, silent);
    for (let round = 0; round < 25; round++) {
      await Promise.all([
        ...Array.from({ length: 30 }, good),
        ...Array.from({ length: 5 }, cut),
        ...Array.from({ length: 3 }, garbage),
      ]);
    }
    await Promise.all(silentOnes);
    // Server-side closes finish a moment after the clients'.
    await eventually(() => socketsOnPort(port) <= before, "sockets closed")
      .catch(() => {});
    assertEquals(socketsOnPort(port), before, "sockets left open");
    assertEquals(
      lines.filter((l) => l.startsWith("accepted")).length,
      25 * 35,
      lines.slice(-5).join("\n"),
    );
  },
});

Deno.test({
  name: "the node:tls fallback still serves a server connection",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const connecting = connectTls(listener.addr.port, certs.ca);
    using server = new NodeTlsConn(await listener.accept(), {
      server: contextOf(certs),
    });
    using client = await connecting;
    await server.handshake();
    const data = pseudoRandomBytes(300 * 1024, 9);
    const echoing = (async () => {
      const buffer = new Uint8Array(16 * 1024);
      for (let n; (n = await server.read(buffer)) !== null;) {
        await writeAll(server, buffer.subarray(0, n));
      }
      await server.closeWrite();
    })();
    const reading = readAll(client);
    await writeAll(client, data);
    await client.closeWrite();
    assertEquals(await reading, data);
    await echoing;
  },
});

Deno.test({
  name:
    "reads of every size get the bytes in order, large ones straight from the engine",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const connecting = connectTls(listener.addr.port, certs.ca);
    using server = await acceptTls(listener, contextOf(certs));
    using client = await connecting;
    await server.handshake();
    const data = pseudoRandomBytes(3 * 1024 * 1024, 13);
    const sending = writeAll(client, data).then(() => client.closeWrite());
    const received = new Uint8Array(data.byteLength);
    let offset = 0;
    // Sizes below, at and above the direct-read threshold, and odd ones.
    const sizes = [100, 20_000, 16 * 1024, 7, 70_000, 1, 65_536, 3000];
    for (let i = 0;; i++) {
      const buffer = new Uint8Array(sizes[i % sizes.length]);
      const n = await server.read(buffer);
      if (n === null) break;
      received.set(buffer.subarray(0, n), offset);
      offset += n;
    }
    await sending;
    assertEquals(offset, data.byteLength);
    assertEquals(received, data);
  },
});

Deno.test({
  name:
    "reads waiting together are served in order; closeWrite() ends our side only",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const connecting = connectTls(listener.addr.port, certs.ca);
    using server = await acceptTls(listener, contextOf(certs));
    using client = await connecting;
    await server.handshake();
    const first = new Uint8Array(32 * 1024);
    const second = new Uint8Array(5);
    const reads = [server.read(first), server.read(second)];
    await writeAll(client, new TextEncoder().encode("hello world"));
    const a = await reads[0];
    await writeAll(client, new TextEncoder().encode("12345"));
    const b = await reads[1];
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    assertEquals(decode(first.subarray(0, a!)), "hello world");
    assertEquals(decode(second.subarray(0, b!)), "12345");
    // Our close_notify ends what the client reads; it still writes to us.
    await writeAll(server, new TextEncoder().encode("bye"));
    await server.closeWrite();
    assertEquals(new TextDecoder().decode(await readAll(client)), "bye");
    await writeAll(client, new TextEncoder().encode("still"));
    await client.closeWrite();
    const rest = new Uint8Array(16);
    let text = "";
    for (let n; (n = await server.read(rest)) !== null;) {
      text += new TextDecoder().decode(rest.subarray(0, n));
    }
    assert(text.endsWith("still"), text);
  },
});
