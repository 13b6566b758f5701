/**
 * One dialer and one error table: every client connects through
 * `dialHost`, every failure is told by `classifyConnectFailure`, and the
 * address check is `checkConnectHost`.
 */
import { assertEquals, assertInstanceOf, assertThrows } from "@std/assert";
import {
  checkConnectHost,
  classifyConnectFailure,
  ConnectError,
  DialError,
  readExact,
} from "../mod.ts";
import { freePort, runScript } from "./_helpers.ts";

Deno.test("classifyConnectFailure() tells each expected failure by errno code or by class", () => {
  const coded = (code: string) =>
    Object.assign(new Error(`${code} (os error 1)`), { code });
  const cases: [unknown, string, string, string][] = [
    [
      new Deno.errors.ConnectionRefused("Connection refused (os error 111)"),
      "refused",
      "connection refused",
      "connection refused by h:1",
    ],
    [
      coded("ECONNRESET"),
      "reset",
      "connection reset",
      "connection to h:1 was reset by the peer",
    ],
    [
      coded("EHOSTUNREACH"),
      "unreachable",
      "no route to host",
      "cannot connect to h:1: no route to host",
    ],
    [
      new Deno.errors.NetworkUnreachable("Network is unreachable"),
      "unreachable",
      "network is unreachable",
      "cannot connect to h:1: network is unreachable",
    ],
    [
      coded("EAGAIN"),
      "busy",
      "not accepting connections (its backlog is full)",
      "cannot connect to h:1: not accepting connections (its backlog is full); try again later",
    ],
    [
      new Error("Something odd (os error 99)"),
      "other",
      "something odd",
      "cannot connect to h:1: something odd",
    ],
  ];
  for (const [error, kind, reason, message] of cases) {
    const failure = classifyConnectFailure(error);
    assertEquals(
      [failure.kind, failure.reason, failure.message("h:1")],
      [kind, reason, message],
    );
  }
});

Deno.test("checkConnectHost() is the one address check: literals, names, and one error for the rest", () => {
  assertEquals(checkConnectHost("[2001:db8::1]", 80), {
    hostname: "2001:db8::1",
    family: 6,
    target: "[2001:db8::1]:80",
  });
  assertEquals(checkConnectHost("localhost").target, "localhost");
  const error = assertThrows(() => checkConnectHost("1.2.3", 13), ConnectError);
  assertEquals(error.kind, "invalid-address");
  assertEquals(error.target, "1.2.3:13");
});

Deno.test("DialError: one address that is the target is its own line; several are listed", () => {
  const refused = new Deno.errors.ConnectionRefused("Connection refused");
  assertEquals(
    new DialError(7, [{ address: "127.0.0.1", error: refused }], "127.0.0.1:7")
      .message,
    "connection refused by 127.0.0.1:7",
  );
  assertEquals(
    new DialError(7, [
      { address: "::1", error: refused },
      { address: "127.0.0.1", error: refused },
    ], "localhost:7").message,
    "cannot connect to localhost:7: connection refused ([::1]:7, 127.0.0.1:7)",
  );
});

Deno.test("readExact() gives up when its signal aborts", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  using _silent = await listener.accept();
  const controller = new AbortController();
  const stop = setTimeout(() => controller.abort(new Error("deadline")), 50);
  // Without the signal the read would wait for ever: bound the test.
  let guard: ReturnType<typeof setTimeout> | undefined;
  const error = await Promise.race([
    readExact(conn, 4, { signal: controller.signal }).catch((e) => e),
    new Promise((resolve) => guard = setTimeout(() => resolve("hung"), 2000)),
  ]);
  clearTimeout(stop);
  clearTimeout(guard);
  assertInstanceOf(error, Error);
  assertEquals(error.message, "deadline");
});

Deno.test("daytime.ts dials a name with Happy Eyeballs: refused on every address lists them all, as connect.ts does", async () => {
  const port = freePort();
  const run = await runScript("clients/daytime.ts", {
    permissions: [`--allow-net=localhost,127.0.0.1:${port},[::1]:${port}`],
    args: ["localhost", "--port", String(port)],
  });
  assertEquals(run.code, 1, run.stderr);
  const line = run.stderr.trimEnd();
  // localhost is 127.0.0.1, and ::1 where the machine has IPv6.
  const listed =
    /^error: cannot connect to localhost:(\d+): connection refused \((.*)\)$/
      .exec(line);
  assertEquals(listed?.[1], String(port), line);
  assertEquals(
    listed?.[2].split(", ").every((a) =>
      a === `127.0.0.1:${port}` || a === `[::1]:${port}`
    ),
    true,
    line,
  );
});

Deno.test("daytime.ts with only --allow-net=localhost:PORT still connects (Deno resolves the name)", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  const serving = listener.accept().then(async (conn) => {
    await conn.write(new TextEncoder().encode("Tue Nov  4 09:05:01 2026\r\n"));
    conn.close();
  });
  const run = await runScript("clients/daytime.ts", {
    permissions: [`--allow-net=localhost:${port}`],
    args: ["localhost", "--port", String(port)],
  });
  await serving;
  assertEquals(run.code, 0, run.stderr);
  assertEquals(run.stdout, "Tue Nov  4 09:05:01 2026\r\n");
});

Deno.test("an invalid address is echoed without its control characters", async () => {
  const run = await runScript("clients/daytime.ts", {
    permissions: ["--allow-net=127.0.0.1:13"],
    args: ["a\x1b[2Jb"],
  });
  assertEquals(run.code, 1, run.stderr);
  assertEquals(
    run.stderr.trimEnd(),
    "error: invalid address 'a\\x1b[2Jb': expected an IPv4 address (192.0.2.1), an IPv6 address (2001:db8::1) or a host name",
  );
});
