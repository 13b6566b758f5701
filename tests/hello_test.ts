import { assertEquals, assertMatch } from "@std/assert";
import { readExact, silentLog, writeAll } from "../mod.ts";
import { serveHello } from "../servers/hello.ts";
import { sayHello } from "../clients/hello.ts";
import {
  assertUsageError,
  freePort,
  memoryOutput,
  missing,
  pseudoRandomBytes,
  readAll,
  runCommand,
  runScript,
  spawn,
  startServer,
} from "./_helpers.ts";

const SERVER = "servers/hello.ts";
const CLIENT = "clients/hello.ts";
const decoder = new TextDecoder();

Deno.test("serveHello() and sayHello() talk in process; --once stops the server", async () => {
  const output = memoryOutput();
  const server = serveHello({ port: 0, once: true, output, log: silentLog });
  const { port } = server.addr as Deno.NetAddr;
  const reply = await sayHello({ port, message: "hi there" });
  await server.finished;
  assertEquals(decoder.decode(reply), "hello");
  assertEquals(output.text(), "Client with IP 127.0.0.1 connected\nhi there");
});

Deno.test("hello.ts server and client scripts, with their header's permissions", async () => {
  const port = freePort();
  await using server = await startServer(SERVER, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--port", String(port), "--once"],
  });
  assertEquals(server.address, `127.0.0.1:${port}`);
  const client = await runScript(CLIENT, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--port", String(port), "hi there"],
  });
  assertEquals(client.code, 0, client.stderr);
  // The reply, and a newline: it did not end its line.
  assertEquals(client.stdout, "hello\n");
  assertEquals(client.stderr, "");
  const { code, stdout, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
  assertEquals(stdout, "Client with IP 127.0.0.1 connected\nhi there");
});

Deno.test("hello.ts client sends 'hello' by default", async () => {
  const output = memoryOutput();
  await using server = serveHello({ port: 0, output, log: silentLog });
  const { port } = server.addr as Deno.NetAddr;
  const client = await runScript(CLIENT, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--port", String(port)],
  });
  assertEquals(client.code, 0, client.stderr);
  // The reply, and a newline: it did not end its line.
  assertEquals(client.stdout, "hello\n");
  await server.shutdown();
  assertEquals(output.text(), "Client with IP 127.0.0.1 connected\nhello");
});

Deno.test("hello.ts server reads at most 512 bytes, once", async () => {
  const output = memoryOutput();
  await using server = serveHello({ port: 0, output, log: silentLog });
  const { port } = server.addr as Deno.NetAddr;
  const payload = pseudoRandomBytes(512, 3).map((b) => 0x41 + b % 26);
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, payload);
    await writeAll(conn, new TextEncoder().encode("TAIL NOT READ"));
    // The server closes with the tail unread (a reset may follow): read
    // just the greeting.
    assertEquals(decoder.decode(await readExact(conn, 5)), "hello");
  }
  await server.shutdown();
  assertEquals(
    output.text(),
    `Client with IP 127.0.0.1 connected\n${decoder.decode(payload)}`,
  );
});

Deno.test("hello.ts server serves clients one after another until SIGTERM, exit 0", async () => {
  const port = freePort();
  await using server = await startServer(SERVER, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--port", String(port)],
  });
  for (const message of ["one", "two"]) {
    const reply = await sayHello({ port, message });
    assertEquals(decoder.decode(reply), "hello");
  }
  {
    // A client that sends nothing: the server says so on stderr.
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.closeWrite();
    assertEquals(decoder.decode(await readAll(conn)), "hello");
  }
  await server.proc.waitForStderr(/closed the connection without sending/);
  server.proc.kill("SIGTERM");
  const { code, stdout, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr);
  assertEquals(
    stdout,
    "Client with IP 127.0.0.1 connected\none" +
      "Client with IP 127.0.0.1 connected\ntwo" +
      "Client with IP 127.0.0.1 connected\n",
  );
});

Deno.test("hello.ts server on :: prints an IPv4 client dotted and an IPv6 one as is", async () => {
  const port = freePort();
  await using server = await startServer(SERVER, {
    permissions: [`--allow-net=[::]:${port}`],
    args: ["--hostname", "::", "--port", String(port)],
  });
  await sayHello({ hostname: "127.0.0.1", port });
  await sayHello({ hostname: "::1", port });
  server.proc.kill("SIGTERM");
  const { code, stdout } = await server.proc.finished();
  assertEquals(code, 0);
  assertEquals(
    stdout,
    "Client with IP 127.0.0.1 connected\nhello" +
      "Client with IP ::1 connected\nhello",
  );
});

Deno.test({
  name: "hello.ts server under a socat client and an nc client",
  ignore: missing("socat", "nc"),
  async fn() {
    const port = freePort();
    await using server = await startServer(SERVER, {
      permissions: [`--allow-net=127.0.0.1:${port}`],
      args: ["--port", String(port)],
    });
    const socat = await runCommand(
      "socat",
      ["-", `TCP:127.0.0.1:${port}`],
      "from socat",
    );
    assertEquals(socat.code, 0, socat.stderr);
    assertEquals(decoder.decode(socat.stdout), "hello");
    const nc = await runCommand(
      "nc",
      ["-N", "127.0.0.1", String(port)],
      "from nc",
    );
    assertEquals(nc.code, 0, nc.stderr);
    assertEquals(decoder.decode(nc.stdout), "hello");
    server.proc.kill("SIGTERM");
    const { code, stdout } = await server.proc.finished();
    assertEquals(code, 0);
    assertEquals(
      stdout,
      "Client with IP 127.0.0.1 connected\nfrom socat" +
        "Client with IP 127.0.0.1 connected\nfrom nc",
    );
  },
});

Deno.test({
  name: "hello.ts client against an nc listener and a socat listener",
  ignore: missing("socat", "nc"),
  async fn() {
    const ncPort = freePort();
    await using nc = spawn("nc", {
      args: ["-v", "-N", "-l", "127.0.0.1", String(ncPort)],
      stdin: true,
    });
    await nc.waitForStderr(/[Ll]istening on/);
    const writer = nc.child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("hey from nc"));
    await writer.close();
    const viaNc = await runScript(CLIENT, {
      permissions: [`--allow-net=127.0.0.1:${ncPort}`],
      args: ["--port", String(ncPort)],
    });
    assertEquals(viaNc.code, 0, viaNc.stderr);
    assertEquals(viaNc.stdout, "hey from nc\n");
    assertEquals((await nc.finished()).stdout, "hello");

    const socatPort = freePort();
    await using socat = spawn("socat", {
      args: [
        "-d",
        "-d",
        `TCP-LISTEN:${socatPort},bind=127.0.0.1,reuseaddr`,
        "PIPE",
      ],
    });
    await socat.waitForStderr(/listening on/);
    const viaSocat = await runScript(CLIENT, {
      permissions: [`--allow-net=127.0.0.1:${socatPort}`],
      args: ["--port", String(socatPort), "echo me"],
    });
    assertEquals(viaSocat.code, 0, viaSocat.stderr);
    assertEquals(viaSocat.stdout, "echo me\n");
  },
});

Deno.test("hello.ts client: refused, unknown host, bad address and timeout are one error line, exit 1", async () => {
  const port = freePort();
  const refused = await runScript(CLIENT, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--port", String(port)],
  });
  assertEquals(refused.code, 1);
  assertEquals(
    refused.stderr.trimEnd(),
    `error: connection refused by 127.0.0.1:${port}`,
  );

  const unknown = await runScript(CLIENT, {
    permissions: ["--allow-net=no-such-host.invalid:3500"],
    args: ["--hostname", "no-such-host.invalid"],
  });
  assertEquals(unknown.code, 1);
  assertMatch(
    unknown.stderr.trimEnd(),
    /^error: (no such host|cannot resolve host) 'no-such-host\.invalid'[^\n]*$/,
  );

  const bad = await runScript(CLIENT, {
    permissions: ["--allow-net=127.0.0.1:3500"],
    args: ["--hostname", "1.2.3"],
  });
  assertEquals(bad.code, 1);
  assertMatch(
    bad.stderr.trimEnd(),
    /^error: invalid address '1\.2\.3': [^\n]*$/,
  );

  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const silentPort = (listener.addr as Deno.NetAddr).port;
  const accepted = listener.accept();
  const silent = await runScript(CLIENT, {
    permissions: [`--allow-net=127.0.0.1:${silentPort}`],
    args: ["--port", String(silentPort), "--timeout", "0.3"],
  });
  (await accepted).close();
  assertEquals(silent.code, 1);
  assertEquals(
    silent.stderr.trimEnd(),
    `error: timed out after 0.3 s waiting for data from 127.0.0.1:${silentPort}`,
  );
});

Deno.test("hello.ts: usage errors exit 2 with one line, --help exits 0", async () => {
  const cases: [string, string[], RegExp][] = [
    [CLIENT, ["a", "b"], /^error: unexpected argument 'b'/],
    [CLIENT, ["--port", "0"], /^error: invalid value '0' for --port/],
    [CLIENT, ["--timeout", "-1"], /^error: /],
    [CLIENT, ["--udp"], /^error: unknown option '--udp'/],
    [SERVER, ["--udp"], /^error: unknown option '--udp'/],
    [SERVER, ["--port", "x"], /^error: invalid value 'x' for --port/],
    [SERVER, ["extra"], /^error: unexpected argument 'extra'/],
  ];
  for (const [script, args, pattern] of cases) {
    await assertUsageError(
      script,
      ["--allow-net=127.0.0.1:3500"],
      args,
      pattern,
    );
  }
  for (const script of [CLIENT, SERVER]) {
    const help = await runScript(script, { args: ["--help"] });
    assertEquals(help.code, 0);
    assertMatch(help.stdout, /^usage: hello\.ts/);
  }
});

Deno.test("hello.ts server: a port in use is one error line, exit 1", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = taken.addr as Deno.NetAddr;
  const { code, stderr } = await runScript(SERVER, {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--port", String(port)],
  });
  assertEquals(code, 1);
  assertEquals(
    stderr.trimEnd(),
    `error: address 127.0.0.1:${port} is already in use (pick another port with --port)`,
  );
});

Deno.test("serveHello({ once }) refuses a second client while serving the first", async () => {
  const output = memoryOutput();
  const server = serveHello({ port: 0, once: true, output, log: silentLog });
  const { port } = server.addr as Deno.NetAddr;
  using first = await Deno.connect({ hostname: "127.0.0.1", port });
  assertEquals(decoder.decode(await readExact(first, 5)), "hello");
  {
    using second = await Deno.connect({ hostname: "127.0.0.1", port });
    assertEquals((await readAll(second)).byteLength, 0, "second was served");
  }
  await writeAll(first, new TextEncoder().encode("first"));
  await server.finished;
  assertEquals(output.text(), "Client with IP 127.0.0.1 connected\nfirst");
});
