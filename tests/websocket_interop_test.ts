/**
 * WebSocket interop with real peers: websockify (Debian's, 0.10) and
 * servers/forward.ts's bridge in front of the same servers/echo.ts give the
 * same bytes to the same clients (python3-websockets, and websockify's own
 * WebSocket client class); the base64 subprotocol; a wrong Origin refused
 * with 403 before the upgrade; clients/connect.ts against websockify and
 * against a Node `ws` server; the forwarder's wss:// TARGET verified with
 * --ca and --servername against websockify over TLS.
 */

import { assertEquals, assertMatch } from "@std/assert";
import {
  assertSameBytes,
  freePort,
  makeCertificates,
  missing,
  pseudoRandomBytes,
  readAll,
  repoPath,
  runCommand,
  spawn,
  startServer,
  startWebSocketBridge,
  waitListening,
} from "./_helpers.ts";
import { runClient } from "./_connect.ts";

/** Debian's python, which has python3-websockets and websockify's modules. */
const PYTHON = "/usr/bin/python3";
const WEBSOCKIFY = "/usr/bin/websockify";
const CLIENT = repoPath("tests/_ws_client.py");

function pythonHas(...modules: string[]): boolean {
  try {
    return new Deno.Command(PYTHON, {
      args: ["-c", modules.map((m) => `import ${m}`).join("; ")],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

const haveWebsockify = pythonHas("websockets", "websockify");
if (!haveWebsockify) {
  console.error(
    "SKIP: websockify or python3-websockets not installed for /usr/bin/python3 (.ci/run installs them)",
  );
}

/** Runs the Python client (`kind`: websockets or websockify) with `input`. */
async function pythonClient(
  kind: "websockets" | "websockify",
  url: string,
  input: Uint8Array,
  ...flags: string[]
) {
  const { code, stdout, stderr } = await runCommand(
    PYTHON,
    [CLIENT, kind, url, ...flags],
    input,
  );
  return { code, stdout, stderr };
}

/** Starts echo.ts, then websockify on a free port in front of it. */
async function echoBehindWebsockify(extra: string[] = []) {
  const echo = await startServer("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
  });
  const port = freePort();
  const websockify = spawn(WEBSOCKIFY, {
    args: [...extra, `127.0.0.1:${port}`, `127.0.0.1:${echo.port}`],
  });
  await waitListening(websockify.child.pid, { port });
  return {
    echo,
    port,
    websockify,
    async [Symbol.asyncDispose]() {
      await websockify[Symbol.asyncDispose]();
      await echo[Symbol.asyncDispose]();
    },
  };
}

Deno.test({
  name:
    "websockify and forward.ts in front of the same echo.ts give the same bytes to a python3-websockets client",
  ignore: !haveWebsockify,
  async fn() {
    await using peers = await echoBehindWebsockify();
    await using ours = await startWebSocketBridge([
      "ws://127.0.0.1:0/",
      `tcp://127.0.0.1:${peers.echo.port}`,
    ]);
    const input = pseudoRandomBytes(60_000, 7);
    // websockify's own client class (websockify.websocket.WebSocket) cannot
    // send in 0.10: its masking adds an int to bytes (TypeError).
    for (const kind of ["websockets"] as const) {
      const theirs = await pythonClient(
        kind,
        `ws://127.0.0.1:${peers.port}/`,
        input,
      );
      const mine = await pythonClient(
        kind,
        `ws://127.0.0.1:${ours.port}/`,
        input,
      );
      assertEquals(theirs.code, 0, `${kind} via websockify: ${theirs.stderr}`);
      assertEquals(mine.code, 0, `${kind} via forward.ts: ${mine.stderr}`);
      assertSameBytes(mine.stdout, theirs.stdout);
      assertSameBytes(mine.stdout, input);
    }
  },
});

Deno.test({
  name:
    "forward.ts speaks the base64 subprotocol to a client that offers only it (websockify 0.10 refuses it with 400)",
  ignore: !haveWebsockify,
  async fn() {
    await using peers = await echoBehindWebsockify();
    await using ours = await startWebSocketBridge([
      "ws://127.0.0.1:0/",
      `tcp://127.0.0.1:${peers.echo.port}`,
    ]);
    const input = pseudoRandomBytes(20_000, 8);
    const mine = await pythonClient(
      "websockets",
      `ws://127.0.0.1:${ours.port}/`,
      input,
      "--base64",
    );
    assertEquals(mine.code, 0, mine.stderr);
    assertSameBytes(mine.stdout, input);
    await ours.proc.waitForStderr(/^upgraded .*\(WebSocket \/, base64\)$/);
    // websockify 0.10 chooses `binary` or no subprotocol at all
    // (CompatibleWebSocket.select_subprotocol), and refuses a client that
    // offers only others.
    const theirs = await pythonClient(
      "websockets",
      `ws://127.0.0.1:${peers.port}/`,
      input,
      "--base64",
    );
    assertEquals([theirs.code, theirs.stderr.trim()], [3, "status 400"]);
  },
});

Deno.test({
  name:
    "forward.ts --origin: python3-websockets from a wrong Origin gets 403 before the upgrade, from the right one the echo",
  ignore: !haveWebsockify,
  async fn() {
    await using echo = await startServer("servers/echo.ts", {
      permissions: ["--allow-net=127.0.0.1"],
      args: ["--hostname", "127.0.0.1", "--port", "0"],
    });
    await using ours = await startWebSocketBridge([
      "--origin",
      "https://app.example",
      "ws://127.0.0.1:0/",
      `tcp://127.0.0.1:${echo.port}`,
    ]);
    const url = `ws://127.0.0.1:${ours.port}/`;
    const input = new TextEncoder().encode("hello\n");
    const wrong = await pythonClient(
      "websockets",
      url,
      input,
      "--origin",
      "https://evil.example",
    );
    assertEquals([wrong.code, wrong.stderr.trim()], [3, "status 403"]);
    await ours.proc.waitForStderr(
      /^closed 127\.0\.0\.1:\d+ \(0 bytes in, 0 bytes out\): Origin 'https:\/\/evil\.example' not allowed \(403\)$/,
    );
    // Refused before the upgrade: echo.ts never saw a connection.
    assertEquals(
      echo.proc.stderrLines.filter((line) => line.startsWith("accepted")),
      [],
    );
    const right = await pythonClient(
      "websockets",
      url,
      input,
      "--origin",
      "https://app.example",
    );
    assertEquals(right.code, 0, right.stderr);
    assertSameBytes(right.stdout, input);
  },
});

Deno.test({
  name: "connect.ts ws:// against websockify in front of echo.ts",
  ignore: !haveWebsockify,
  async fn() {
    await using peers = await echoBehindWebsockify();
    const input = pseudoRandomBytes(30_000, 9);
    const run = await runClient(
      [`--allow-net=127.0.0.1:${peers.port}`],
      [`ws://127.0.0.1:${peers.port}/`],
      [input],
    );
    assertEquals(run.code, 0, run.stderr);
    assertSameBytes(run.stdout, input);
  },
});

/**
 * A WebSocket echo server with Node's `ws` library, as a Node user writes
 * one (a string: a `.mjs` file here would be type-checked by `deno check`
 * without `ws` in the import map).
 */
const NODE_WS_ECHO = `
import { WebSocketServer } from "ws";
const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
server.on("listening", () => {
  console.error(\`listening on 127.0.0.1:\${server.address().port}\`);
});
server.on("connection", (socket) => {
  socket.on("error", () => {});
  socket.on("message", (data, isBinary) => socket.send(data, { binary: isBinary }));
  socket.on("close", (code, reason) => console.error(\`close \${code} \${reason}\`));
});
`;

/** {@linkcode NODE_WS_ECHO} run by node, with `ws` installed from Deno's npm cache. */
async function nodeWebSocketEcho() {
  const dir = await Deno.makeTempDir({ prefix: "sockets-node-ws-" });
  await Deno.writeTextFile(
    `${dir}/package.json`,
    JSON.stringify({ dependencies: { ws: "8.23.1" } }),
  );
  await Deno.writeTextFile(`${dir}/echo.mjs`, NODE_WS_ECHO);
  const install = await new Deno.Command(Deno.execPath(), {
    args: ["install", "--quiet", "--node-modules-dir=auto"],
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!install.success) {
    throw new Error(
      `installing ws: ${new TextDecoder().decode(install.stderr)}`,
    );
  }
  const child = new Deno.Command("node", {
    args: ["echo.mjs"],
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream());
  const reader = lines.getReader();
  let seen = "";
  while (!/listening on \S+:(\d+)\n/.test(seen)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`node ws server exited: ${seen}`);
    seen += value;
  }
  const port = Number(/listening on \S+:(\d+)\n/.exec(seen)![1]);
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return seen;
      seen += value;
    }
  })();
  return {
    port,
    log: () => seen,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await rest;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name:
    "connect.ts ws:// against a Node ws server: binary, and --text lines; its close frame reaches Node as 1000",
  ignore: missing("node"),
  async fn() {
    await using node = await nodeWebSocketEcho();
    const input = pseudoRandomBytes(30_000, 10);
    const run = await runClient(
      [`--allow-net=127.0.0.1:${node.port}`],
      [`ws://127.0.0.1:${node.port}/`],
      [input],
    );
    assertEquals(run.code, 0, run.stderr);
    assertSameBytes(run.stdout, input);
    const lines = await runClient(
      [`--allow-net=127.0.0.1:${node.port}`],
      ["--text", `ws://127.0.0.1:${node.port}/`],
      ["one\ntwo\n"],
    );
    assertEquals(lines.code, 0, lines.stderr);
    assertEquals(new TextDecoder().decode(lines.stdout), "one\ntwo\n");
    // Waits on the line Node logs when the close frame arrives.
    while (
      !/close 1000 stdin closed\n[^]*close 1000 stdin closed\n/.test(node.log())
    ) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  },
});

Deno.test({
  name:
    "forward.ts tcp:// to wss:// websockify --ssl-only, verified with --ca; another CA refused",
  ignore: !haveWebsockify,
  async fn() {
    await using certs = await makeCertificates();
    await using peers = await echoBehindWebsockify([
      "--cert",
      certs.cert,
      "--key",
      certs.key,
      "--ssl-only",
    ]);
    const target = `wss://localhost:${peers.port}/`;
    const permissions = (ca: string) => [
      `--allow-net=127.0.0.1:0,localhost:${peers.port}`,
      `--allow-read=${ca}`,
    ];
    await using ours = await startServer("servers/forward.ts", {
      permissions: permissions(certs.ca),
      args: ["--ca", certs.ca, "tcp://127.0.0.1:0", target],
    });
    const input = pseudoRandomBytes(40_000, 11);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: ours.port });
    const reading = readAll(conn);
    await conn.write(input);
    await conn.closeWrite();
    assertSameBytes(await reading, input);
    conn.close();
    await using wrong = await startServer("servers/forward.ts", {
      permissions: permissions(certs.wrongCa),
      args: ["--ca", certs.wrongCa, "tcp://127.0.0.1:0", target],
    });
    const refused = await Deno.connect({
      hostname: "127.0.0.1",
      port: wrong.port,
    });
    assertEquals((await readAll(refused)).length, 0);
    refused.close();
    const line = await wrong.proc.waitForStderr(/^closed .*: cannot open /);
    assertMatch(line.input!, /UnknownIssuer|certificate/i);
  },
});
