/**
 * `servers/inetd.ts --conf FILE`: the parser of `lib/inetd_conf.ts` line
 * by line; the script run with exactly the permissions its header gives
 * (programs as exec.ts runs them, internal services, one `error:` line
 * naming the file and line for what it cannot honour, SIGHUP reloads);
 * and the same inetd.conf under the real openbsd-inetd and under ours
 * giving the same bytes to the same clients.
 */

import { userInfo } from "node:os";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
} from "@std/assert";
import { writeAll } from "../mod.ts";
import {
  InetdConfError,
  parseInetdConf,
  parseServices,
} from "../lib/inetd_conf.ts";
import {
  assertSameBytes,
  freePort,
  ip,
  missing,
  pseudoRandomBytes,
  runCommand,
  runScript,
  type ScriptProcess,
  spawn,
  waitListening,
} from "./_helpers.ts";
import { exchange, program, readToEof } from "./_exec.ts";
import { udpAsk } from "./_simple.ts";

const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const USER = userInfo().username;
const SERVICES = parseServices(
  "echo 7/tcp\necho 7/udp\ndaytime 13/tcp\nqotd 17/tcp quote\ntcpmux 1/tcp\n",
);
const CTIME = /^\w{3} \w{3} [ 123]\d \d\d:\d\d:\d\d \d{4}\r\n$/;

/** Parses `text` as a file of this machine (user `root`, the table above). */
function parse(text: string) {
  return parseInetdConf(text, {
    file: "test.conf",
    services: () => SERVICES,
    currentUser: () => "root",
  });
}

// The parser, line by line.

Deno.test("parseInetdConf: comments, blank lines, addresses, names, aliases, tcp6, internal by name or after it", () => {
  const services = parse(
    [
      "# a comment",
      "",
      "   ",
      "echo stream tcp nowait root internal",
      "127.0.0.1:quote\tstream tcp nowait root internal",
      "*:10013 stream tcp nowait nobody internal daytime",
      "[::1]:8000 stream tcp6 nowait root /bin/cat cat",
      "8001 stream tcp6 nowait root /usr/bin/date /usr/bin/date -u",
      "echo dgram udp wait root internal",
    ].join("\n"),
  );
  assertEquals(
    services.map((s) => [
      s.line,
      s.label,
      s.hostname,
      s.port,
      s.transport,
      s.internal ?? s.program,
      s.args,
    ]),
    [
      [4, "echo/tcp", "0.0.0.0", 7, "tcp", "echo", []],
      [5, "quote/tcp", "127.0.0.1", 17, "tcp", "qotd", []],
      [6, "10013/tcp", "0.0.0.0", 10013, "tcp", "daytime", []],
      [7, "8000/tcp6", "::1", 8000, "tcp", "/bin/cat", []],
      [8, "8001/tcp6", "::", 8001, "tcp", "/usr/bin/date", ["-u"]],
      [9, "echo/udp", "0.0.0.0", 7, "udp", "echo", []],
    ],
  );
});

Deno.test("parseInetdConf: what cannot be honoured is one InetdConfError naming file and line", () => {
  for (
    const [line, reason] of [
      [
        "8000 stream tcp wait root /bin/cat cat",
        /wait stream services .*Deno cannot hand a socket to a child/,
      ],
      [
        "8000 dgram udp wait root /bin/cat cat",
        /dgram services that run a program .*Deno cannot hand a socket/,
      ],
      [
        "8000 stream tcp nowait alice /bin/cat cat",
        /runs as 'alice', but this server runs as 'root' .*no setuid/,
      ],
      [
        "8000 stream tcp nowait root:staff /bin/cat cat",
        /a group cannot be set/,
      ],
      ["tcpmux stream tcp nowait root internal", /tcpmux is not supported/],
      ["8000 stream sctp nowait root /bin/cat cat", /unknown protocol 'sctp'/],
      [
        "8000 raw tcp nowait root /bin/cat cat",
        /unknown or unsupported socket type 'raw'/,
      ],
      ["8000 stream udp nowait root /bin/cat cat", /does not go with/],
      [
        "finger stream tcp nowait root /bin/cat cat",
        /unknown service 'finger\/tcp' \(not in \/etc\/services\)/,
      ],
      ["70000 stream tcp nowait root /bin/cat cat", /invalid port '70000'/],
      [
        "8000 stream tcp nowait.10 root /bin/cat cat",
        /'nowait.10': a limit .* not supported/,
      ],
      ["8000 stream tcp maybe root /bin/cat cat", /expected wait or nowait/],
      [
        "8000 stream tcp nowait root /usr/sbin/tcpd in.fingerd",
        /argv\[0\] 'in.fingerd' is not the program's name/,
      ],
      [
        "8000 stream tcp nowait root cat cat",
        /must be an absolute path or internal/,
      ],
      ["8000 stream tcp nowait root internal", /no internal service '8000'/],
      [
        "8000 stream tcp nowait root internal finger",
        /no internal service 'finger'/,
      ],
      [
        "echo stream tcp wait root internal",
        /internal stream services are nowait/,
      ],
      [
        "10.0.0.1:8000 stream tcp6 nowait root /bin/cat cat",
        /invalid address '10.0.0.1' for tcp6/,
      ],
      [
        "host.example:8000 stream tcp nowait root /bin/cat cat",
        /invalid address 'host.example'/,
      ],
      [
        "8000 rpc/tcp nowait root /bin/cat cat",
        /unknown or unsupported socket type/,
      ],
      [
        "8000 stream rpc/tcp nowait root /bin/cat cat",
        /RPC services are not supported/,
      ],
      ["127.0.0.1:", /a line of only an address/],
      [
        "8000 stream tcp nowait root",
        /expected SERVICE SOCKET-TYPE .* got 5 field/,
      ],
    ] as const
  ) {
    const error = assertThrows(
      () => parse(`# first\n${line}\n`),
      InetdConfError,
      undefined,
      line,
    );
    assertEquals([error.file, error.line], ["test.conf", 2], line);
    assertMatch(error.message, /^test\.conf:2: /, line);
    assertMatch(error.reason, reason, line);
  }
});

Deno.test("parseInetdConf: two lines on one socket name both lines; tcp and udp may share a port", () => {
  const error = assertThrows(
    () =>
      parse(
        "8000 stream tcp nowait root /bin/cat cat\n8000 dgram udp wait root internal echo\n*:8000 stream tcp nowait root internal echo\n",
      ),
    InetdConfError,
  );
  assertEquals(error.line, 3);
  assertMatch(error.reason, /tcp port 8000 is already served by line 1/);
});

Deno.test("parseInetdConf reads /etc/services only for names, and the user only for programs", () => {
  let asked = 0;
  const options = {
    services: () => {
      asked++;
      return SERVICES;
    },
    currentUser: () => {
      asked += 10;
      return "root";
    },
  };
  parseInetdConf("8000 stream tcp nowait nobody internal echo\n", options);
  assertEquals(asked, 0);
  parseInetdConf(
    "echo stream tcp nowait root internal\ndaytime stream tcp nowait root internal\n9000 stream tcp nowait root /bin/cat\n",
    options,
  );
  assertEquals(asked, 11);
  // Without a services table or a user, such lines are refused.
  assertThrows(
    () => parseInetdConf("echo stream tcp nowait root internal\n"),
    InetdConfError,
    "unknown service 'echo/tcp'",
  );
  assertThrows(
    () => parseInetdConf("9000 stream tcp nowait root /bin/cat cat\n"),
    InetdConfError,
    "this server runs as another user",
  );
});

// The script, with its header's permissions.

/** The permissions inetd.ts's header gives for `--conf FILE` running `programs`. */
function confPermissions(file: string, programs: string[]): string[] {
  return [
    "--unstable-net",
    "--allow-net",
    `--allow-read=${[file, "/etc/services", ...programs].join(",")}`,
    ...(programs.length > 0 ? [`--allow-run=${programs.join(",")}`] : []),
    "--allow-sys=uid,gid,userInfo",
  ];
}

/** The programs an inetd.conf text runs (absolute paths in its 6th field). */
function programsOf(text: string): string[] {
  const found = new Set<string>();
  for (const line of text.split("\n")) {
    const server = line.trim().split(/\s+/)[5];
    if (server?.startsWith("/")) found.add(server);
  }
  return [...found];
}

/** The line of an internal echo on 127.0.0.1:`port`. */
const echoLine = (port: number) =>
  `127.0.0.1:${port} stream tcp nowait nobody internal echo\n`;
/** The line of `cat` as an echo on 127.0.0.1:`port`. */
const catLine = (port: number) =>
  `127.0.0.1:${port} stream tcp nowait ${USER} /bin/cat cat\n`;

/** A temporary inetd.conf, removed on dispose. */
class ConfFile implements AsyncDisposable {
  readonly path: string;
  constructor(text: string) {
    this.path = Deno.makeTempFileSync({ prefix: "inetd-", suffix: ".conf" });
    this.write(text);
  }
  write(text: string): void {
    // Write then rename: a reload never reads half a file.
    const next = `${this.path}.next`;
    Deno.writeTextFileSync(next, text);
    Deno.renameSync(next, this.path);
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.path).catch(() => {});
  }
}

/** inetd.ts --conf running `conf`, with exactly the header's permissions. */
interface ConfServer extends AsyncDisposable {
  proc: ScriptProcess;
  /** Waits for the next `reloaded` line (or the error one) after a SIGHUP. */
  hangUp(): Promise<string>;
}

async function startConf(
  conf: ConfFile,
  programs: string[],
  lines: number,
  graceSeconds = 5,
): Promise<ConfServer> {
  const proc = spawn("servers/inetd.ts", {
    permissions: confPermissions(conf.path, programs),
    args: ["--conf", conf.path, "--grace", String(graceSeconds)],
    env: { TZ: "UTC" },
  });
  try {
    await proc.until(
      () =>
        proc.stderrLines.filter((l) => l.startsWith("listening on ")).length >=
          lines,
      `${lines} listening lines`,
    );
  } catch (error) {
    await proc[Symbol.asyncDispose]();
    throw error;
  }
  let hangUps = 0;
  return {
    proc,
    async hangUp() {
      const seen = ++hangUps;
      proc.kill("SIGHUP");
      const done = (l: string) =>
        l.startsWith("reloaded ") ||
        l.endsWith("keeping the running configuration");
      await proc.until(
        () => proc.stderrLines.filter(done).length >= seen,
        `reload ${seen}`,
      );
      return proc.stderrLines.filter(done)[seen - 1];
    },
    async [Symbol.asyncDispose]() {
      proc.kill("SIGTERM");
      const { code, stderr } = await proc.finished();
      assertEquals(code, 0, stderr);
    },
  };
}

Deno.test("inetd.ts --conf runs programs as exec.ts does (tcp and tcp6, tcpserver's variables) and internal services over TCP and UDP", async () => {
  const [cat, env, daytime, echo] = [
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ];
  const text = [
    `127.0.0.1:${cat} stream tcp nowait ${USER} /bin/cat cat`,
    `[::1]:${cat} stream tcp6 nowait ${USER} /bin/cat cat`,
    `127.0.0.1:${env} stream tcp nowait ${USER} ${program("env.sh")} env.sh`,
    `127.0.0.1:${daytime} stream tcp nowait nobody internal daytime`,
    `127.0.0.1:${echo} dgram udp wait nobody internal echo`,
    "",
  ].join("\n");
  await using conf = new ConfFile(text);
  await using server = await startConf(conf, programsOf(text), 5);
  assertEquals(
    server.proc.stderrLines.filter((l) => l.startsWith("listening on")),
    [
      `listening on 127.0.0.1:${cat} (${cat}/tcp)`,
      `listening on [::1]:${cat} (${cat}/tcp6)`,
      `listening on 127.0.0.1:${env} (${env}/tcp)`,
      `listening on 127.0.0.1:${daytime} (${daytime}/tcp)`,
      `listening on 127.0.0.1:${echo} (${echo}/udp)`,
    ],
  );
  const data = pseudoRandomBytes(100_000, 7);
  assertSameBytes(await exchange(cat, data), data, "cat over tcp");
  assertSameBytes(
    await exchange(cat, data, { hostname: "::1" }),
    data,
    "cat over tcp6",
  );
  const variables = decode(await exchange(env, null)).split("\n");
  assert(variables.includes("PROTO=TCP"), variables.join("\n"));
  assert(variables.includes(`TCPLOCALPORT=${env}`), variables.join("\n"));
  assert(variables.includes("TCPREMOTEIP=127.0.0.1"), variables.join("\n"));
  assertMatch(decode(await exchange(daytime, null)), CTIME);
  assertEquals(decode((await udpAsk(echo, "ping"))!), "ping");
  // The log: exec.ts's lines, labelled by the file's service.
  await server.proc.waitForStderr(
    new RegExp(
      `^${cat}/tcp6: closed \\[::1\\]:\\d+ \\(100000 bytes in, 100000 bytes out\\)$`,
    ),
  );
});

Deno.test("inetd.ts --conf: what cannot be honoured is one error line at start naming the file and line, exit 1", async () => {
  const notExecutable = Deno.makeTempFileSync({ prefix: "inetd-noexec-" });
  const other = USER === "root" ? "nobody" : "root";
  try {
    for (
      const [line, reason] of [
        [
          `8000 stream tcp wait ${USER} /bin/cat cat`,
          /wait stream services are not supported: .*Deno cannot hand a socket to a child process/,
        ],
        [
          `8000 dgram udp wait ${USER} /bin/cat cat`,
          /dgram services that run a program are not supported/,
        ],
        [
          `8000 stream tcp nowait ${other} /bin/cat cat`,
          new RegExp(
            `runs as '${other}', but this server runs as '${USER}' and cannot change user \\(no setuid here\\)`,
          ),
        ],
        [
          `tcpmux stream tcp nowait ${USER} internal`,
          /tcpmux is not supported/,
        ],
        [
          `8000 stream sctp nowait ${USER} /bin/cat cat`,
          /unknown protocol 'sctp'/,
        ],
        [
          `8000 seqpacket tcp nowait ${USER} /bin/cat cat`,
          /unknown or unsupported socket type 'seqpacket'/,
        ],
        [
          `no-such-service stream tcp nowait ${USER} internal`,
          /unknown service 'no-such-service\/tcp' \(not in \/etc\/services\)/,
        ],
        [
          `8000 stream tcp nowait ${USER} /nonexistent/prog prog`,
          /\/nonexistent\/prog: no such file/,
        ],
        [
          `8000 stream tcp nowait ${USER} ${notExecutable} ${notExecutable}`,
          /not executable/,
        ],
      ] as const
    ) {
      const text =
        `# line 1\n10000 stream tcp nowait ${USER} internal echo\n${line}\n`;
      await using conf = new ConfFile(text);
      const { code, stdout, stderr } = await runScript("servers/inetd.ts", {
        permissions: confPermissions(conf.path, programsOf(text)),
        args: ["--conf", conf.path],
      });
      assertEquals(code, 1, `${line}: ${stderr}`);
      assertEquals(stdout, "");
      assertEquals(stderr.split("\n").length, 1, stderr);
      assert(stderr.startsWith(`error: ${conf.path}:3: `), stderr);
      assertMatch(stderr, reason);
    }
  } finally {
    Deno.removeSync(notExecutable);
  }
});

/** Whether a socket on [::] takes IPv4 too here (Linux's default). */
function ipv6TakesIPv4(): boolean {
  using v4 = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  try {
    Deno.listen({ hostname: "::", port: v4.addr.port }).close();
    return false;
  } catch (error) {
    return error instanceof Deno.errors.AddrInUse;
  }
}

Deno.test("inetd.ts --conf: a missing file, a taken port, tcp and tcp6 on one port, a missing permission: one error line, exit 1", async () => {
  {
    const { code, stderr } = await runScript("servers/inetd.ts", {
      permissions: confPermissions("/nonexistent/inetd.conf", []),
      args: ["--conf", "/nonexistent/inetd.conf"],
    });
    assertEquals([code, stderr], [
      1,
      "error: cannot read inetd.conf '/nonexistent/inetd.conf': no such file",
    ]);
  }
  {
    using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = taken.addr;
    const text = `127.0.0.1:${port} stream tcp nowait nobody internal echo\n`;
    await using conf = new ConfFile(text);
    const { code, stderr } = await runScript("servers/inetd.ts", {
      permissions: confPermissions(conf.path, []),
      args: ["--conf", conf.path],
    });
    assertEquals([code, stderr], [
      1,
      `error: ${conf.path}:1: ${port}/tcp: address 127.0.0.1:${port} is already in use`,
    ]);
  }
  if (!ipv6TakesIPv4()) {
    console.error(
      "SKIP: tcp and tcp6 on one port: a socket on [::] takes no IPv4 here",
    );
  } else {
    // tcp and tcp6 on one port, as Debian's inetd.conf has them.
    const port = freePort("0.0.0.0");
    const text = `${port} stream tcp nowait nobody internal echo\n` +
      `${port} stream tcp6 nowait nobody internal echo\n`;
    await using conf = new ConfFile(text);
    const { code, stderr } = await runScript("servers/inetd.ts", {
      permissions: confPermissions(conf.path, []),
      args: ["--conf", conf.path],
    });
    assertEquals(code, 1, stderr);
    assertEquals(
      stderr,
      `error: ${conf.path}:2: ${port}/tcp6: address [::]:${port} is already in use (by line 1: on this host a socket on [::] takes IPv4 too, and Deno cannot make it IPv6-only; the tcp6 line alone serves both)`,
    );
  }
  {
    const text = `echo stream tcp nowait nobody internal\n`;
    await using conf = new ConfFile(text);
    const { code, stderr } = await runScript("servers/inetd.ts", {
      permissions: ["--allow-net", `--allow-read=${conf.path}`],
      args: ["--conf", conf.path],
    });
    assertEquals(code, 1, stderr);
    assertEquals(
      stderr,
      `error: ${conf.path}:1: cannot read services file '/etc/services': no read permission (run again as: deno run --unstable-net --allow-net --allow-read=${conf.path},/etc/services servers/inetd.ts --conf ${conf.path})`,
    );
  }
  {
    const text = `8000 stream tcp nowait ${USER} /bin/cat cat\n`;
    await using conf = new ConfFile(text);
    const { code, stderr } = await runScript("servers/inetd.ts", {
      permissions: confPermissions(conf.path, ["/bin/cat"]).filter((p) =>
        !p.startsWith("--allow-sys")
      ),
      args: ["--conf", conf.path],
    });
    assertEquals(code, 1, stderr);
    assertMatch(
      stderr,
      /^error: .*:1: cannot tell which user runs this server.*: run again as: deno run --unstable-net --allow-net .*--allow-sys=uid,gid,userInfo servers\/inetd\.ts --conf \S+$/,
    );
  }
});

Deno.test("inetd.ts: --conf with a flag the file replaces is a usage error, exit 2", async () => {
  for (
    const flag of [["--base", "20000"], ["--only", "echo"], ["--tcp-only"], [
      "--hostname",
      "127.0.0.1",
    ]]
  ) {
    const { code, stderr } = await runScript("servers/inetd.ts", {
      permissions: confPermissions("x.conf", []),
      args: ["--conf", "x.conf", ...flag],
    });
    assertEquals(code, 2, stderr);
    assertEquals(
      stderr,
      `error: ${
        flag[0]
      } cannot be used with --conf: the file says where each service listens`,
    );
  }
});

// SIGHUP.

Deno.test("inetd.ts --conf on SIGHUP starts an added service and leaves the unchanged one bound", async () => {
  const [echo, cat] = [freePort(), freePort()];
  await using conf = new ConfFile(echoLine(echo));
  await using server = await startConf(conf, ["/bin/cat"], 1);
  // A client of the unchanged service, connected across the reload.
  using before = await Deno.connect({ hostname: "127.0.0.1", port: echo });
  await assertRejects(() => exchange(cat, "x"), Deno.errors.ConnectionRefused);
  conf.write(echoLine(echo) + catLine(cat));
  assertEquals(
    await server.hangUp(),
    `reloaded ${conf.path}: 1 added, 0 removed, 1 unchanged`,
  );
  assertEquals(decode(await exchange(cat, "added\n")), "added\n");
  assertEquals(decode(await exchange(echo, "kept\n")), "kept\n");
  await writeAll(before, new TextEncoder().encode("across\n"));
  await before.closeWrite();
  assertEquals(decode(await readToEof(before)), "across\n");
  const log = server.proc.stderrLines;
  assertEquals(
    log.filter((l) => l.includes("listening on")),
    [
      `listening on 127.0.0.1:${echo} (${echo}/tcp)`,
      `listening on 127.0.0.1:${cat} (${cat}/tcp)`,
    ],
  );
});

/** A client that sends a line and reads to EOF, whatever comes of it. */
async function tryExchange(port: number): Promise<void> {
  try {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const reading = readToEof(conn).catch(() => {});
    await writeAll(conn, new TextEncoder().encode("racing\n")).catch(() => {});
    await conn.closeWrite().catch(() => {});
    await reading;
  } catch {
    // Refused: between the old listener and the new one.
  }
}

Deno.test("inetd.ts --conf on SIGHUP moves a port between a program and an internal service, 100 times under traffic: every reload ends listening there, answering as the file says", async () => {
  // A removed line's port is not free when its listener's close() returns:
  // an accept still pending holds the socket until the event loop has
  // cancelled it, and a program spawned for a connection just before holds
  // a copy until its exec has closed it. Clients connecting as each SIGHUP
  // goes out make the second likely: the reload must wait for the socket,
  // try the bind again, and count only what listens.
  const port = freePort();
  const daytime =
    `127.0.0.1:${port} stream tcp nowait nobody internal daytime\n`;
  await using conf = new ConfFile(catLine(port));
  await using server = await startConf(conf, ["/bin/cat"], 1);
  for (let reload = 1; reload <= 100; reload++) {
    const toCat = reload % 2 === 0;
    conf.write(toCat ? catLine(port) : daytime);
    const racing = [1, 2, 3].map(() => tryExchange(port));
    const line = await server.hangUp();
    const errors = server.proc.stderrLines.filter((l) => l.startsWith("error"));
    assertEquals(
      [line, errors],
      [`reloaded ${conf.path}: 1 added, 1 removed, 0 unchanged`, []],
      `reload ${reload}`,
    );
    const answer = decode(await exchange(port, "ping\n"));
    if (toCat) assertEquals(answer, "ping\n", `reload ${reload}`);
    else assertMatch(answer, CTIME, `reload ${reload}`);
    await Promise.all(racing);
  }
});

Deno.test("inetd.ts --conf on SIGHUP tries an added line's taken port again until it is free; one that stays taken is an error line, counted, and the next SIGHUP starts it", async () => {
  const [echo, cat] = [freePort(), freePort()];
  await using conf = new ConfFile(echoLine(echo));
  await using server = await startConf(conf, ["/bin/cat"], 1);
  const { proc } = server;
  const reloads = () =>
    proc.stderrLines.filter((l) => l.startsWith("reloaded "));
  const taken = `address 127.0.0.1:${cat} is already in use`;

  // Taken when the reload binds it, freed a moment later (as a program
  // forked just before frees its copy): the reload waits for it.
  let holder = Deno.listen({ hostname: "127.0.0.1", port: cat });
  conf.write(echoLine(echo) + catLine(cat));
  const reloaded = server.hangUp();
  await proc.until(
    () =>
      reloads().length > 0 ||
      proc.stderrLines.includes(
        `${conf.path}:2: ${cat}/tcp: ${taken}; trying again for up to 1 s`,
      ),
    "the reload to try the taken port again",
  );
  holder.close();
  assertEquals(
    await reloaded,
    `reloaded ${conf.path}: 1 added, 0 removed, 1 unchanged`,
  );
  assertEquals(decode(await exchange(cat, "waited\n")), "waited\n");

  // Taken for good: one error line, counted, not listening.
  conf.write(echoLine(echo));
  assertEquals(
    await server.hangUp(),
    `reloaded ${conf.path}: 0 added, 1 removed, 1 unchanged`,
  );
  holder = Deno.listen({ hostname: "127.0.0.1", port: cat });
  try {
    conf.write(echoLine(echo) + catLine(cat));
    assertEquals(
      await server.hangUp(),
      `reloaded ${conf.path}: 0 added, 0 removed, 1 unchanged, 1 failed`,
    );
    assertEquals(
      proc.stderrLines.filter((l) => l.startsWith("error: ")),
      [
        `error: ${conf.path}:2: ${cat}/tcp: ${taken}; not listening (the next reload tries again)`,
      ],
    );
  } finally {
    holder.close();
  }
  // Freed: the next SIGHUP starts it, as added.
  assertEquals(
    await server.hangUp(),
    `reloaded ${conf.path}: 1 added, 0 removed, 1 unchanged`,
  );
  assertEquals(decode(await exchange(cat, "later\n")), "later\n");
});

Deno.test("inetd.ts --conf on SIGHUP stops a removed service; its connection in flight completes, past --grace", async () => {
  const [echo, cat] = [freePort(), freePort()];
  await using conf = new ConfFile(echoLine(echo) + catLine(cat));
  // Retired by a reload, a connection goes on until it ends, as inetd's
  // children do: --grace is for SIGTERM, not for a reload.
  await using server = await startConf(conf, ["/bin/cat"], 2, 0.2);
  using inFlight = await Deno.connect({ hostname: "127.0.0.1", port: cat });
  const reading = readToEof(inFlight, 10_000);
  await writeAll(inFlight, new TextEncoder().encode("before "));
  await server.proc.waitForStderr(new RegExp(`^${cat}/tcp: accepted `));
  conf.write(echoLine(echo));
  assertEquals(
    await server.hangUp(),
    `reloaded ${conf.path}: 0 added, 1 removed, 1 unchanged`,
  );
  assert(
    server.proc.stderrLines.includes(
      `stopped listening on 127.0.0.1:${cat} (${cat}/tcp)`,
    ),
    server.proc.stderr,
  );
  await assertRejects(() => exchange(cat, "x"), Deno.errors.ConnectionRefused);
  await new Promise((resolve) => setTimeout(resolve, 600)); // 3 graces
  await writeAll(inFlight, new TextEncoder().encode("and after"));
  await inFlight.closeWrite();
  assertEquals(decode(await reading), "before and after");
  assertEquals(decode(await exchange(echo, "kept")), "kept");
});

Deno.test("inetd.ts --conf: SIGTERM gives a connection retired by a reload --grace, then closes it", async () => {
  const [echo, cat] = [freePort(), freePort()];
  await using conf = new ConfFile(echoLine(echo) + catLine(cat));
  await using server = await startConf(conf, ["/bin/cat"], 2, 0.3);
  using inFlight = await Deno.connect({ hostname: "127.0.0.1", port: cat });
  const reading = readToEof(inFlight, 10_000);
  await writeAll(inFlight, new TextEncoder().encode("held"));
  await server.proc.waitForStderr(new RegExp(`^${cat}/tcp: accepted `));
  conf.write(echoLine(echo));
  await server.hangUp();
  const stopping = performance.now();
  server.proc.kill("SIGTERM");
  const { code } = await server.proc.finished();
  const seconds = (performance.now() - stopping) / 1000;
  assertEquals(code, 0);
  assertEquals(decode(await reading), "held");
  // Cut by the grace period, not left to run, nor cut at once.
  assert(seconds >= 0.25 && seconds < 3, `stopped after ${seconds} s`);
  assert(
    server.proc.stderrLines.some((l) =>
      l ===
        `${cat}/tcp: grace period over: closed 1 connection(s) still in flight`
    ),
    server.proc.stderr,
  );
});

Deno.test("inetd.ts --conf on SIGHUP with a bad file logs the error and keeps the running services", async () => {
  const [echo, cat] = [freePort(), freePort()];
  const good = echoLine(echo);
  await using conf = new ConfFile(good);
  await using server = await startConf(conf, ["/bin/cat"], 1);
  conf.write(
    `${good}${catLine(cat)}${cat} stream tcp wait ${USER} /bin/cat cat\n`,
  );
  assertMatch(
    await server.hangUp(),
    new RegExp(
      `^error: ${conf.path}:3: wait stream services are not supported: .*; keeping the running configuration$`,
    ),
  );
  assertEquals(decode(await exchange(echo, "still")), "still");
  await assertRejects(() => exchange(cat, "x"), Deno.errors.ConnectionRefused);
  // Fixed, it applies.
  conf.write(
    good + catLine(cat),
  );
  assertEquals(
    await server.hangUp(),
    `reloaded ${conf.path}: 1 added, 0 removed, 1 unchanged`,
  );
  assertEquals(decode(await exchange(cat, "fixed")), "fixed");
});

// Conformance with openbsd-inetd.

/**
 * openbsd-inetd's binary: `$OPENBSD_INETD` (.ci/run unpacks it there), or
 * downloaded and unpacked here with apt-get and dpkg-deb (the package
 * conflicts with xinetd, so it is not installed); `undefined`, with the
 * reason printed, where neither works.
 */
async function openbsdInetd(): Promise<string | undefined> {
  if (Deno.uid() !== 0) {
    console.error(
      "SKIP: openbsd-inetd conformance: needs root (its lines run as root)",
    );
    return undefined;
  }
  const given = Deno.env.get("OPENBSD_INETD");
  if (given) return given;
  if (missing("apt-get", "dpkg-deb")) return undefined;
  const dir = await Deno.makeTempDir({ prefix: "openbsd-inetd-" });
  addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Gone.
    }
  });
  const download = await new Deno.Command("apt-get", {
    args: ["download", "openbsd-inetd"],
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  const deb = [...Deno.readDirSync(dir)].find((e) => e.name.endsWith(".deb"));
  if (!download.success || !deb) {
    console.error(
      `SKIP: openbsd-inetd conformance: apt-get download openbsd-inetd failed: ${
        decode(download.stderr).trim().split("\n").at(-1)
      }`,
    );
    return undefined;
  }
  const unpack = await runCommand("dpkg-deb", [
    "-x",
    `${dir}/${deb.name}`,
    `${dir}/root`,
  ]);
  if (unpack.code !== 0) throw new Error(`dpkg-deb: ${unpack.stderr}`);
  return `${dir}/root/usr/sbin/inetd`;
}

const OPENBSD_INETD = await openbsdInetd();
const ignoreConformance = OPENBSD_INETD === undefined;

/**
 * The text `ask` gets, a time of day (`date -u`, daytime), checked to be
 * the time it was asked at, to the second.
 */
async function within(ask: () => Promise<Uint8Array>): Promise<string> {
  // A C inetd reads the time with time(), Linux's coarse clock, which may
  // lag the precise one by a tick (4 ms): a reply a moment after a second
  // began could still name the second before (seen once in CI).
  const before = Math.floor((Date.now() - 20) / 1000) * 1000;
  const text = decode(await ask());
  const after = Date.now();
  const at = Date.parse(`${text.trim().replace(" UTC", "")} UTC`);
  assert(
    at >= before && at <= after,
    `${JSON.stringify(text)} is not between ${
      new Date(before).toISOString()
    } and ${new Date(after).toISOString()}`,
  );
  return text;
}

/**
 * Runs the inetd.conf `text` under openbsd-inetd (`inetd -d`, in the
 * foreground) and under ours, one after the other, each listening on
 * `ports`; `check` gets each one's name. `prefix` runs both in a network
 * namespace.
 */
async function underBoth(
  text: string,
  ports: number[],
  check: (name: string) => Promise<void>,
  prefix: string[] = [],
): Promise<void> {
  const file = Deno.makeTempFileSync({
    prefix: "inetd-both-",
    suffix: ".conf",
  });
  Deno.writeTextFileSync(file, text);
  const netns = prefix.at(-1);
  try {
    for (const name of ["openbsd-inetd", "ours"]) {
      const proc = name === "ours"
        ? spawn("servers/inetd.ts", {
          prefix,
          permissions: confPermissions(file, programsOf(text)),
          args: ["--conf", file],
          env: { TZ: "UTC" },
        })
        : prefix.length > 0
        ? spawn(prefix[0], {
          args: [
            ...prefix.slice(1),
            "env",
            "TZ=UTC",
            OPENBSD_INETD!,
            "-d",
            file,
          ],
        })
        : spawn("env", { args: ["TZ=UTC", OPENBSD_INETD!, "-d", file] });
      try {
        for (const port of ports) {
          await waitListening(proc.child.pid, { port, netns });
        }
        await check(name);
      } catch (error) {
        throw new Error(
          `under ${name}: ${(error as Error).message}\n${proc.stderr}`,
          { cause: error },
        );
      } finally {
        await proc.terminate();
      }
    }
  } finally {
    Deno.removeSync(file);
  }
}

Deno.test({
  name:
    "the same inetd.conf under openbsd-inetd and ours: cat echoes 1 MB with half-close, date -u, a program answering a line",
  ignore: ignoreConformance,
  async fn() {
    const [cat, date, answer] = [freePort(), freePort(), freePort()];
    const text = [
      `127.0.0.1:${cat} stream tcp nowait root /bin/cat cat`,
      `127.0.0.1:${date} stream tcp nowait root /bin/date date -u`,
      `127.0.0.1:${answer} stream tcp nowait root ${
        program("answer.sh")
      } answer.sh`,
      "",
    ].join("\n");
    const data = pseudoRandomBytes(1 << 20, 14);
    const dates = new Map<string, string>();
    await underBoth(text, [cat, date, answer], async (name) => {
      assertSameBytes(await exchange(cat, data), data, `cat under ${name}`);
      const line = await within(() =>
        exchange(date, null, { halfClose: false })
      );
      dates.set(name, line);
      assertEquals(
        decode(await exchange(answer, "world\n", { halfClose: false })),
        "hello, world\n",
      );
    });
    // The same line but for the digits (the two ran a moment apart).
    const [theirs, ours] = [dates.get("openbsd-inetd")!, dates.get("ours")!];
    assertMatch(
      ours,
      /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d UTC \d{4}\n$/,
    );
    assertEquals(theirs.replace(/\d/g, "0"), ours.replace(/\d/g, "0"));
  },
});

Deno.test({
  name:
    "the same inetd.conf under openbsd-inetd and ours: internal echo and daytime at their names' ports",
  ignore: ignoreConformance || missing("ip", "socat"),
  async fn() {
    // openbsd-inetd knows its internal services by name only, so they
    // listen at 7 and 13: in a network namespace of their own.
    const netns = `inetd-conf${Deno.pid}`;
    await ip("netns", "add", netns);
    try {
      await ip("-n", netns, "link", "set", "lo", "up");
      const text = [
        "127.0.0.1:echo stream tcp nowait root internal",
        "127.0.0.1:daytime stream tcp nowait root internal",
        "",
      ].join("\n");
      const data = pseudoRandomBytes(200_000, 9);
      const echoed = new Map<string, Uint8Array>();
      const daytimes = new Map<string, string>();
      const socat = async (port: number, input: Uint8Array | string) => {
        const { code, stdout, stderr } = await runCommand("ip", [
          "netns",
          "exec",
          netns,
          "socat",
          "-",
          `TCP:127.0.0.1:${port}`,
        ], input);
        assertEquals(code, 0, stderr);
        return stdout;
      };
      await underBoth(text, [7, 13], async (name) => {
        echoed.set(name, await socat(7, data));
        daytimes.set(name, await within(() => socat(13, "")));
      }, ["ip", "netns", "exec", netns]);
      for (const [name, bytes] of echoed) {
        assertSameBytes(bytes, data, `echo under ${name}`);
      }
      const [theirs, ours] = [
        daytimes.get("openbsd-inetd")!,
        daytimes.get("ours")!,
      ];
      assertMatch(theirs, CTIME);
      assertMatch(ours, CTIME);
    } finally {
      await runCommand("ip", ["netns", "del", netns]);
    }
  },
});
