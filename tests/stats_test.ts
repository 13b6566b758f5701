/**
 * `--stats`: what the servers count, checked against what each test did
 * (N connections, B bytes, R refusals of each kind), through the real
 * endpoint of a real server process; `promtool check metrics` accepts
 * `/metrics`; a real Prometheus scrapes it; the page loads in headless
 * Chromium and shows the JSON's figures; SIGUSR2 writes them to the log.
 */

import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertMatch,
  assertStringIncludes,
} from "@std/assert";
import {
  assertUsageError,
  closing,
  freePort,
  hasCommand,
  makeCertificates,
  readAll,
  receiveWithin,
  runCommand,
  type ScriptProcess,
  spawn,
  type SpawnOptions,
  type StartedServer,
  startServer,
} from "./_helpers.ts";
import { TextLineStream } from "@std/streams";
import { startExec } from "./_exec.ts";

const encoder = new TextEncoder();

/** The stats port from a server's `stats on http://127.0.0.1:PORT/` line. */
async function statsPort(proc: ScriptProcess): Promise<number> {
  const match = await proc.waitForStderr(
    /^stats on http:\/\/127\.0\.0\.1:(\d+)\/$/,
  );
  return Number(match[1]);
}

/**
 * Starts `script` as `startServer` does, then waits for its `stats on`
 * line too; the server, with its stats port.
 */
async function startWithStats(
  script: string,
  options: SpawnOptions,
): Promise<StartedServer & AsyncDisposable & { stats: number }> {
  const server = await startServer(script, options);
  try {
    return Object.assign(server, { stats: await statsPort(server.proc) });
  } catch (error) {
    await server[Symbol.asyncDispose]();
    throw error;
  }
}

async function get(port: number, path: string): Promise<Response> {
  return await fetch(`http://127.0.0.1:${port}${path}`);
}

/** `/metrics` as a map from series (name and labels, as written) to value. */
async function metrics(port: number): Promise<Map<string, number>> {
  const response = await get(port, "/metrics");
  assertEquals(response.status, 200);
  assertEquals(
    response.headers.get("content-type"),
    "text/plain; version=0.0.4; charset=utf-8",
  );
  const series = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    series.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return series;
}

function labels(pairs: Record<string, string>): string {
  return `{${Object.entries(pairs).map(([k, v]) => `${k}="${v}"`).join(",")}}`;
}

/** One echo exchange: sends `bytes` bytes, reads them back, closes. */
async function echoOnce(port: number, bytes: number): Promise<void> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new Uint8Array(bytes).fill(0x61));
  await conn.closeWrite();
  assertEquals((await readAll(conn)).byteLength, bytes);
}

/** A connection from `source` (a loopback address) held by socat until `end()`. */
function holdFrom(source: string, port: number): ScriptProcess {
  return spawn("socat", {
    args: ["STDIO", `TCP:127.0.0.1:${port},bind=${source}`],
    stdin: true,
  });
}

async function end(proc: ScriptProcess): Promise<void> {
  await proc.child.stdin.close();
  await proc.finished();
}

/** Counts the lines of `proc`'s stderr matching `pattern`. */
function count(proc: ScriptProcess, pattern: RegExp): number {
  return proc.stderrLines.filter((line) => pattern.test(line)).length;
}

Deno.test("--stats counts N connections, B bytes and each refusal exactly; promtool accepts /metrics; SIGUSR2 logs the same", async () => {
  if (!hasCommand("socat")) {
    console.log(
      "skipped: socat is not installed (connections from other sources)",
    );
    return;
  }
  await using server = await startWithStats("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args: [
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--stats",
      "127.0.0.1:0",
      "--max-connections",
      "2",
      "--per-source",
      "1",
      "--deny",
      "127.0.0.9",
    ],
  });
  const { proc, port, stats } = server;
  const closed = () => count(proc, /^closed 127\.0\.0\.\d+:\d+ \(/);
  // N = 3 exchanges of 5, 6 and 7 bytes: B = 18 each way.
  for (const [i, bytes] of [5, 6, 7].entries()) {
    await echoOnce(port, bytes);
    await proc.until(() => closed() === i + 1, `closing line ${i + 1}`);
  }
  // Access: 127.0.0.9 is denied.
  await end(holdFrom("127.0.0.9", port));
  await proc.waitForStderr(/^refused 127\.0\.0\.9:\d+: not allowed$/);
  // Per-source: a second connection from 127.0.0.1 while one is held.
  const held = await Deno.connect({ hostname: "127.0.0.1", port });
  await proc.until(
    () => count(proc, /^accepted 127\.0\.0\.1:/) === 4,
    "the held connection's accept",
  );
  const second = await Deno.connect({ hostname: "127.0.0.1", port });
  await proc.waitForStderr(
    /^refused 127\.0\.0\.1:\d+: too many connections from 127\.0\.0\.1/,
  );
  second.close();
  // Full: a second source fills the server, a third is refused.
  const other = holdFrom("127.0.0.2", port);
  await proc.waitForStderr(/^accepted 127\.0\.0\.2:/);
  await end(holdFrom("127.0.0.3", port));
  await proc.waitForStderr(
    /^refused 127\.0\.0\.3:\d+: too many connections \(max 2\)$/,
  );
  held.close();
  await end(other);
  await proc.until(() => closed() === 5, "the held connections' closing lines");

  const service = { service: "echo", transport: "tcp" };
  const figures = await metrics(stats);
  const expect: [string, number][] = [
    [`sockets_connections_accepted_total${labels(service)}`, 5],
    [`sockets_connections_open${labels(service)}`, 0],
    [`sockets_received_bytes_total${labels(service)}`, 18],
    [`sockets_sent_bytes_total${labels(service)}`, 18],
    [`sockets_connection_duration_seconds_count${labels(service)}`, 5],
    [
      `sockets_connection_duration_seconds_bucket${
        labels({ ...service, le: "+Inf" })
      }`,
      5,
    ],
  ];
  for (
    const [reason, n] of [
      ["access", 1],
      ["per-source", 1],
      ["full", 1],
      ["rate", 0],
      ["proxy-header", 0],
      ["tls-handshake", 0],
    ] as const
  ) {
    expect.push([
      `sockets_connections_refused_total${labels({ ...service, reason })}`,
      n,
    ]);
  }
  for (const [series, value] of expect) {
    assertEquals(figures.get(series), value, series);
  }
  assertGreaterOrEqual(figures.get("process_resident_memory_bytes")!, 1);
  assertEquals(figures.get("sockets_log_lines_dropped_total"), 0);

  // The JSON has the same figures.
  const json = await (await get(stats, "/stats.json")).json();
  const accepted = json.metrics.find((f: { name: string }) =>
    f.name === "sockets_connections_accepted_total"
  );
  assertEquals(accepted.type, "counter");
  assertEquals(accepted.series, [{ labels: service, value: 5 }]);

  if (hasCommand("promtool")) {
    const text = await (await get(stats, "/metrics")).text();
    const check = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = check.stdin.getWriter();
    await writer.write(encoder.encode(text));
    await writer.close();
    const { code, stdout, stderr } = await check.output();
    const said = new TextDecoder().decode(stdout) +
      new TextDecoder().decode(stderr);
    assertEquals(code, 0, said);
    assertEquals(said.trim(), "", "promtool's lint found something");
  } else {
    console.log(
      "promtool check skipped: promtool is not installed (Debian prometheus)",
    );
  }

  // SIGUSR2: the same figures, in the log.
  proc.kill("SIGUSR2");
  const [line] = await proc.waitForStderr(/^stats: echo\/tcp: .*/);
  for (
    const figure of [
      "connections_accepted 5",
      "connections_refused (access) 1",
      "connections_refused (per-source) 1",
      "connections_refused (full) 1",
      "received_bytes 18",
      "sent_bytes 18",
    ]
  ) {
    assertStringIncludes(line, figure);
  }
  await proc.waitForStderr(
    /^stats: process: process_resident_memory_bytes \d+/,
  );
  await server.proc.terminate();
});

Deno.test("--stats counts a bad PROXY header, a failed TLS handshake and a TLS handshake by version", async () => {
  await using certs = await makeCertificates();
  await using server = await startWithStats("servers/echo.ts", {
    permissions: [
      "--allow-net=127.0.0.1",
      `--allow-read=${certs.cert},${certs.key}`,
    ],
    args: [
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--stats",
      "127.0.0.1:0",
      "--tls",
      "--cert",
      certs.cert,
      "--key",
      certs.key,
      "--accept-proxy",
    ],
  });
  const { proc, port, stats } = server;
  const header = "PROXY TCP4 192.0.2.1 127.0.0.1 5000 15000\r\n";
  // A bad header.
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(encoder.encode("GET / HTTP/1.0\r\n\r\n"));
    await readAll(conn).catch(() => undefined);
  }
  await proc.waitForStderr(/without a valid PROXY header|PROXY/);
  // A good header, then no TLS.
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(encoder.encode(header + "not a ClientHello\r\n"));
    await readAll(conn).catch(() => undefined);
  }
  await proc.waitForStderr(/^TLS handshake failed:/);
  // A good header, then TLS: two exchanges.
  const caCerts = [await Deno.readTextFile(certs.ca)];
  for (let i = 0; i < 2; i++) {
    const plain = await Deno.connect({ hostname: "127.0.0.1", port });
    await plain.write(encoder.encode(header));
    using conn = await Deno.startTls(plain, { hostname: "localhost", caCerts });
    await conn.write(encoder.encode("hello"));
    const reply = new Uint8Array(5);
    for (let got = 0; got < 5;) {
      got += (await conn.read(reply.subarray(got))) ?? 5;
    }
    assertEquals(new TextDecoder().decode(reply), "hello", proc.stderr);
  }
  await proc.until(
    () => count(proc, /^closed .* \(5 bytes in, 5 bytes out\)/) === 2,
    "two closing lines",
  );
  const service = { service: "echo", transport: "tls" };
  const figures = await metrics(stats);
  assertEquals(
    figures.get(`sockets_connections_accepted_total${labels(service)}`),
    2,
  );
  for (const reason of ["proxy-header", "tls-handshake"]) {
    assertEquals(
      figures.get(
        `sockets_connections_refused_total${labels({ ...service, reason })}`,
      ),
      1,
      reason,
    );
  }
  assertEquals(
    figures.get(
      `sockets_tls_handshakes_total${
        labels({
          ...service,
          protocol: "TLSv1.3",
          client_certificate: "none",
        })
      }`,
    ),
    2,
    [...figures.keys()].filter((k) => k.includes("tls")).join("\n"),
  );
  assertEquals(
    figures.get(`sockets_received_bytes_total${labels(service)}`),
    10,
  );
  await server.proc.terminate();
});

Deno.test("--stats counts datagrams in and out, and drops by access and the rate", async () => {
  await using server = await startWithStats("servers/daytime.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: [
      "--udp",
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--udp-rate",
      "1",
      "--deny",
      "127.0.0.9",
      "--stats",
      "127.0.0.1:0",
    ],
  });
  const { proc, port, stats } = server;
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  // From a denied address: dropped.
  {
    using denied = closing(Deno.listenDatagram({
      transport: "udp",
      hostname: "127.0.0.9",
      port: 0,
    }));
    await denied.send(encoder.encode("a"), to);
    await proc.waitForStderr(
      /^refused datagram from 127\.0\.0\.9:\d+: not allowed$/,
    );
  }
  using socket = closing(Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  }));
  // A request: answered (the source's one reply this second).
  await socket.send(encoder.encode("x"), to);
  assert(await receiveWithin(socket, 10_000), "no reply");
  // Another: answered if a second has passed, else held back by the rate;
  // the reply or the log says which.
  await socket.send(encoder.encode("y"), to);
  let second = false;
  const replied = socket.receive().then(() => second = true, () => {});
  await Promise.race([
    replied,
    proc.waitForStderr(/over 1 replies\/s/, 30_000),
  ]);
  const service = { service: "daytime", transport: "udp" };
  const figures = await metrics(stats);
  const drops = (reason: string) =>
    figures.get(
      `sockets_datagrams_dropped_total${labels({ ...service, reason })}`,
    );
  assertEquals(
    figures.get(`sockets_datagrams_received_total${labels(service)}`),
    3,
  );
  assertEquals(
    figures.get(`sockets_datagrams_sent_total${labels(service)}`),
    second ? 2 : 1,
  );
  assertEquals(drops("access"), 1);
  assertEquals(drops("rate"), second ? 0 : 1);
  assertEquals(drops("loop"), 0);
  await server.proc.terminate();
});

Deno.test("--stats counts a datagram loop guard's drop: forward.ts udp:// to itself", async () => {
  const port = freePort();
  await using server = await startWithStats("servers/forward.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: [
      "--stats",
      "127.0.0.1:0",
      `udp://127.0.0.1:${port}`,
      `udp://127.0.0.1:${port}`,
    ],
  });
  const { proc, stats } = server;
  using client = closing(Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  }));
  await client.send(encoder.encode("ping"), {
    transport: "udp",
    hostname: "127.0.0.1",
    port,
  });
  await proc.waitForStderr(/own sessions .*loop protection\)$/);
  const service = { service: "forward", transport: "udp" };
  const figures = await metrics(stats);
  assertEquals(
    figures.get(`sockets_datagrams_received_total${labels(service)}`),
    2,
  );
  assertEquals(
    figures.get(
      `sockets_datagrams_dropped_total${
        labels({ ...service, reason: "loop" })
      }`,
    ),
    1,
  );
  assertEquals(
    figures.get(`sockets_datagrams_sent_total${labels(service)}`),
    0,
  );
  await server.proc.terminate();
});

Deno.test("--stats counts exec's programs: started, exit statuses, signals, running, and rate refusals", async () => {
  const sh = "/bin/sh";
  await using server = await startExec(
    [
      sh,
      "-c",
      'read line; case "$line" in kill) kill -TERM $$;; *) exit 3;; esac',
    ],
    ["--stats", "127.0.0.1:0", "--rate", "2"],
    {
      permissions: [
        "--allow-net=127.0.0.1",
        `--allow-run=${sh}`,
        `--allow-read=${sh}`,
      ],
    },
  );
  const { proc, port } = server;
  const stats = await statsPort(proc);
  const run = async (line: string) => {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(encoder.encode(line + "\n"));
    await readAll(conn).catch(() => undefined);
  };
  await run("exit");
  await run("kill");
  // A third within the second: over --rate 2 (a burst of 2), unless a
  // second passed; the log says which.
  await run("exit");
  await proc.until(
    () =>
      count(proc, /exited 3|killed by SIGTERM/) +
          count(proc, /over 2 new connections\/s/) >= 3,
    "three outcomes",
  );
  const refusedRate = count(proc, /over 2 new connections\/s/);
  const service = { service: "exec" };
  const figures = await metrics(stats);
  assertEquals(
    figures.get(`sockets_programs_started_total${labels(service)}`),
    3 - refusedRate,
  );
  assertEquals(figures.get(`sockets_programs_running${labels(service)}`), 0);
  assertEquals(
    figures.get(
      `sockets_program_exits_total${labels({ ...service, code: "3" })}`,
    ),
    2 - refusedRate,
  );
  assertEquals(
    figures.get(
      `sockets_program_signals_total${
        labels({ ...service, signal: "SIGTERM" })
      }`,
    ),
    1,
  );
  assertEquals(
    figures.get(
      `sockets_connections_refused_total${
        labels({ service: "exec", transport: "tcp", reason: "rate" })
      }`,
    ),
    refusedRate,
  );
});

Deno.test("--stats shows forward's targets: up and down, clients, failures and checks", async () => {
  using live = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const livePort = live.addr.port;
  const deadPort = freePort();
  const accepting = (async () => {
    for await (const conn of live) {
      conn.write(encoder.encode("hi")).then(() => conn.close(), () => {});
    }
  })();
  await using server = await startWithStats("servers/forward.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args: [
      "--stats",
      "127.0.0.1:0",
      "--check-interval",
      "0.2",
      "tcp://127.0.0.1:0",
      `tcp://127.0.0.1:${livePort}`,
      `tcp://127.0.0.1:${deadPort}`,
    ],
  });
  const { proc, port, stats } = server;
  await proc.waitForStderr(
    new RegExp(`target 127\\.0\\.0\\.1:${deadPort} down:`),
  );
  for (let i = 0; i < 3; i++) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    assertEquals(new TextDecoder().decode(await readAll(conn)), "hi");
  }
  await proc.until(() => count(proc, /^closed /) === 3, "three closing lines");
  const figures = await metrics(stats);
  const target = (p: number) => ({
    service: "forward",
    target: `tcp://127.0.0.1:${p}`,
  });
  assertEquals(figures.get(`sockets_target_up${labels(target(livePort))}`), 1);
  assertEquals(figures.get(`sockets_target_up${labels(target(deadPort))}`), 0);
  assertEquals(
    figures.get(`sockets_target_connections_open${labels(target(livePort))}`),
    0,
  );
  const failed = figures.get(
    `sockets_target_checks_total${
      labels({ ...target(deadPort), result: "failed" })
    }`,
  )!;
  assertGreaterOrEqual(failed, 3);
  assertEquals(
    figures.get(
      `sockets_target_failures_total${
        labels({ ...target(deadPort), source: "check" })
      }`,
    ),
    failed,
  );
  assertEquals(
    figures.get(
      `sockets_connections_accepted_total${
        labels({ service: "forward", transport: "tcp" })
      }`,
    ),
    3,
  );
  await server.proc.terminate();
  live.close();
  await accepting.catch(() => {});
});

Deno.test("forward.ts udp:// --stats counts datagrams in and out", async () => {
  using target = closing(Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  }));
  const targetPort = (target.addr as Deno.NetAddr).port;
  const echoing = (async () => {
    for (let i = 0; i < 2; i++) {
      const [data, from] = await target.receive();
      await target.send(data, from);
    }
  })();
  await using server = await startWithStats("servers/forward.ts", {
    // Answers go to whoever asked: host-wide net, as the header says.
    permissions: ["--unstable-net", "--allow-net"],
    args: [
      "--stats",
      "127.0.0.1:0",
      "udp://127.0.0.1:0",
      `udp://127.0.0.1:${targetPort}`,
    ],
  });
  const { proc, port, stats } = server;
  using client = closing(Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  }));
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  for (const text of ["one", "three"]) {
    await client.send(encoder.encode(text), to);
    // The deadline guards a hang only.
    const got = await receiveWithin(client, 10_000);
    assert(got, `no answer to ${text}; stderr:\n${proc.stderr}`);
    assertEquals(new TextDecoder().decode(got[0]), text);
  }
  await echoing;
  const service = { service: "forward", transport: "udp" };
  const figures = await metrics(stats);
  assertEquals(
    figures.get(`sockets_datagrams_received_total${labels(service)}`),
    2,
  );
  assertEquals(
    figures.get(`sockets_datagrams_sent_total${labels(service)}`),
    2,
  );
  assertEquals(
    figures.get(`sockets_received_bytes_total${labels(service)}`),
    8,
  );
  assertEquals(figures.get(`sockets_sent_bytes_total${labels(service)}`), 8);
  await server.proc.terminate();
});

Deno.test("inetd.ts --stats labels each service and transport", async () => {
  await using server = await startWithStats("servers/inetd.ts", {
    permissions: ["--unstable-net", "--allow-net=127.0.0.1"],
    args: [
      "--hostname",
      "127.0.0.1",
      "--base",
      "0",
      "--only",
      "echo,discard",
      "--stats",
      "127.0.0.1:0",
    ],
  });
  const { proc, stats } = server;
  await proc.until(
    () => count(proc, /^listening on /) === 4,
    "four listening lines",
  );
  const echoPort = Number(
    proc.stderrLines.find((l) => /^listening on .* \(echo\/tcp\)$/.test(l))!
      .match(/:(\d+) /)![1],
  );
  await echoOnce(echoPort, 4);
  await proc.waitForStderr(/^echo\/tcp: closed /);
  const figures = await metrics(stats);
  assertEquals(
    figures.get(
      `sockets_connections_accepted_total${
        labels({ service: "echo", transport: "tcp" })
      }`,
    ),
    1,
  );
  assertEquals(
    figures.get(
      `sockets_connections_accepted_total${
        labels({ service: "discard", transport: "tcp" })
      }`,
    ),
    0,
  );
  assertEquals(
    figures.get(
      `sockets_datagrams_received_total${
        labels({ service: "echo", transport: "udp" })
      }`,
    ),
    0,
  );
  await server.proc.terminate();
});

Deno.test("inetd.ts --conf --stats labels each line: an internal service and a program", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sockets-stats-conf-" });
  const conf = `${dir}/inetd.conf`;
  const [echoPort, catPort] = [freePort(), freePort()];
  await Deno.writeTextFile(
    conf,
    `127.0.0.1:${echoPort} stream tcp nowait root internal echo\n` +
      `127.0.0.1:${catPort} stream tcp nowait root /bin/cat cat\n`,
  );
  try {
    await using server = await startWithStats("servers/inetd.ts", {
      permissions: [
        "--unstable-net",
        "--allow-net",
        `--allow-read=${conf},/etc/services,/bin/cat`,
        "--allow-run=/bin/cat",
        "--allow-sys=uid,gid,userInfo",
      ],
      args: ["--conf", conf, "--stats", "127.0.0.1:0"],
    });
    const { proc, stats } = server;
    await proc.until(
      () => count(proc, /^listening on /) === 2,
      "two listening lines",
    );
    await echoOnce(echoPort, 3);
    await echoOnce(catPort, 4);
    await proc.until(() => count(proc, /: closed /) === 2, "two closing lines");
    const figures = await metrics(stats);
    for (
      const [service, bytes] of [[String(echoPort), 3], [
        String(catPort),
        4,
      ]] as const
    ) {
      const line = { service, transport: "tcp" };
      assertEquals(
        figures.get(`sockets_connections_accepted_total${labels(line)}`),
        1,
        service,
      );
      assertEquals(
        figures.get(`sockets_received_bytes_total${labels(line)}`),
        bytes,
        service,
      );
    }
    assertEquals(
      figures.get(
        `sockets_programs_started_total${labels({ service: String(catPort) })}`,
      ),
      1,
    );
    assertEquals(
      figures.get(
        `sockets_program_exits_total${
          labels({ service: String(catPort), code: "0" })
        }`,
      ),
      1,
    );
    await server.proc.terminate();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--stats counts the log lines dropped while stderr is not read, as the log's own report does", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net=127.0.0.1",
      "servers/echo.ts",
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--stats",
      "127.0.0.1:0",
      // A burst holds more than 256 connections of this one source.
      "--per-source",
      "0",
    ],
    cwd: new URL("../", import.meta.url).pathname,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream())
    .pipeThrough(new TextLineStream()).getReader();
  const lines: string[] = [];
  const readLine = async () => {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stderr ended: ${lines.slice(-20).join("\n")}`);
    lines.push(value);
    return value;
  };
  let port = 0;
  let stats = 0;
  while (port === 0 || stats === 0) {
    const line = await readLine();
    stats ||= Number(
      /^stats on http:\/\/127\.0\.0\.1:(\d+)\//.exec(line)?.[1] ?? 0,
    );
    port ||= Number(/^listening on 127\.0\.0\.1:(\d+)$/.exec(line)?.[1] ?? 0);
  }
  try {
    // stderr is not read now: 8,000 connections' lines (about 700 KB)
    // fill the pipe, what the reader holds and the log's 256 KiB, and
    // the rest are dropped.
    for (let i = 0; i < 8000; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
    }
    // Every connection accepted and closed: its lines were logged or
    // dropped.
    const service = labels({ service: "echo", transport: "tcp" });
    // Accepted or refused (a burst may fill --max-connections), and
    // closed.
    const done = (figures: Map<string, number>) =>
      [...figures].filter(([series]) =>
          series.startsWith("sockets_connections_accepted_total{") ||
          series.startsWith("sockets_connections_refused_total{")
        ).reduce((sum, [, value]) => sum + value, 0) === 8000 &&
      figures.get(`sockets_connections_open${service}`) === 0;
    let figures = await metrics(stats);
    const deadline = Date.now() + 60_000; // guards a hang only
    while (!done(figures) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      figures = await metrics(stats);
    }
    assert(
      done(figures),
      `the server did not take all 8,000 connections: ${
        [...figures].filter(([k]) => k.includes("connections")).join("; ")
      }`,
    );
    const dropped = figures.get("sockets_log_lines_dropped_total")!;
    assert(dropped > 0, "no line dropped: the test did not fill stderr");
    // Read again: the log reports what it dropped where it dropped it
    // (a line for each stretch of drops); nothing is logged meanwhile.
    const guard = setTimeout(() => child.kill("SIGKILL"), 30_000); // a hang only
    let reported = 0;
    try {
      while (reported < dropped) {
        const report = /^(\d+) log lines? dropped \(stderr fell behind/
          .exec(await readLine());
        if (report) reported += Number(report[1]);
      }
    } finally {
      clearTimeout(guard);
    }
    assertEquals(reported, dropped);
  } finally {
    child.kill("SIGTERM");
    while (!(await reader.read()).done) { /* drain */ }
    await child.status;
  }
});

Deno.test("--stats shows open descriptors and their limit where libc is granted (--allow-ffi), and leaves them out where not", async () => {
  const libc = "/lib/x86_64-linux-gnu/libc.so.6";
  if (Deno.build.arch !== "x86_64" || !hasCommand("ldconfig")) {
    console.log("skipped: the libc path granted is Debian's x86_64 one");
    return;
  }
  const args = [
    "--hostname",
    "127.0.0.1",
    "--port",
    "0",
    "--stats",
    "127.0.0.1:0",
  ];
  {
    await using server = await startWithStats("servers/echo.ts", {
      permissions: [
        "--allow-net=127.0.0.1",
        `--allow-ffi=${libc}`,
      ],
      args,
    });
    const { stats } = server;
    const figures = await metrics(stats);
    const limits = await Deno.readTextFile(
      `/proc/${server.proc.child.pid}/limits`,
    );
    const soft = Number(/^Max open files\s+(\d+)/m.exec(limits)![1]);
    assertEquals(figures.get("process_max_fds"), soft);
    const open = figures.get("process_open_fds")!;
    assert(open > 3 && open < soft, `process_open_fds ${open}`);
    await server.proc.terminate();
  }
  await using server = await startWithStats("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args,
  });
  const figures = await metrics(server.stats);
  assertEquals(figures.has("process_open_fds"), false);
  assertEquals(figures.has("process_max_fds"), false);
  await server.proc.terminate();
});

Deno.test("--stats-allow: a client it does not name gets 403; --stats takes HOST:PORT or unix:PATH", async () => {
  await using server = await startWithStats("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args: [
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--stats",
      "127.0.0.1:0",
      "--stats-allow",
      "10.0.0.0/8",
    ],
  });
  const { stats } = server;
  const response = await get(stats, "/metrics");
  assertEquals(response.status, 403);
  await response.body?.cancel();
  await server.proc.terminate();
  const script = "servers/echo.ts";
  const net = ["--allow-net=127.0.0.1"];
  await assertUsageError(
    script,
    net,
    ["--stats-allow", "10.0.0.0/8"],
    /^error: --stats-allow needs --stats$/,
  );
  await assertUsageError(
    script,
    net,
    ["--stats", "udp://127.0.0.1:9"],
    /^error: invalid value 'udp:\/\/127\.0\.0\.1:9' for --stats: expected HOST:PORT or unix:PATH$/,
  );
  await assertUsageError(script, net, [
    "--stats",
    "127.0.0.1:0",
    "--workers",
    "2",
  ], /^error: --stats cannot be used with --workers$/);
  await assertUsageError(script, net, [
    "--stats",
    "127.0.0.1:0",
    "--stats-allow",
    "nonsense",
  ], /^error: invalid value 'nonsense' for --stats-allow/);
});

Deno.test("--stats unix:PATH serves the stats on a Unix socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sockets-stats-" });
  const path = `${dir}/stats.sock`;
  try {
    await using server = await startServer("servers/echo.ts", {
      permissions: [
        `--allow-net=127.0.0.1,unix:${path}`,
        `--allow-read=${path}`,
        `--allow-write=${path}`,
      ],
      args: [
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--stats",
        `unix:${path}`,
      ],
    });
    await server.proc.waitForStderr(new RegExp(`^stats on ${path}$`));
    const { code, stdout } = await runCommand("curl", [
      "-s",
      "--unix-socket",
      path,
      "http://localhost/metrics",
    ]);
    assertEquals(code, 0);
    assertMatch(new TextDecoder().decode(stdout), /^# HELP /m);
    await server.proc.terminate();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a real Prometheus scrapes --stats and its query API returns the connections made", async () => {
  if (!hasCommand("prometheus")) {
    console.log("skipped: prometheus is not installed (Debian prometheus)");
    return;
  }
  await using server = await startWithStats("servers/echo.ts", {
    permissions: ["--allow-net=127.0.0.1"],
    args: ["--hostname", "127.0.0.1", "--port", "0", "--stats", "127.0.0.1:0"],
  });
  const { stats } = server;
  const N = 4;
  for (let i = 0; i < N; i++) await echoOnce(server.port, 3);
  await server.proc.until(
    () => count(server.proc, /^closed /) === N,
    "N closing lines",
  );
  const dir = await Deno.makeTempDir({ prefix: "sockets-prometheus-" });
  const webPort = freePort();
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    [
      "global:",
      "  scrape_interval: 1s",
      "scrape_configs:",
      "  - job_name: sockets",
      "    static_configs:",
      `      - targets: ["127.0.0.1:${stats}"]`,
      "",
    ].join("\n"),
  );
  await using prometheus = spawn("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${webPort}`,
    ],
  });
  try {
    const query = encodeURIComponent(
      'sockets_connections_accepted_total{service="echo",transport="tcp"}',
    );
    let value: string | undefined;
    // Asked until a scrape has come (the deadline only guards a hang).
    const deadline = Date.now() + 60_000;
    while (value === undefined) {
      if (Date.now() > deadline) throw new Error("no sample within 60 s");
      const answer = await fetch(
        `http://127.0.0.1:${webPort}/api/v1/query?query=${query}`,
      ).then((r) => r.json(), () => undefined).catch(() => undefined);
      const result = answer?.data?.result?.[0];
      if (result) value = result.value[1];
      else await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assertEquals(value, String(N));
  } finally {
    await prometheus.terminate();
    await Deno.remove(dir, { recursive: true });
  }
  await server.proc.terminate();
});
