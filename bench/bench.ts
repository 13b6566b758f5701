/**
 * `deno task bench [--quick] [--rounds N] [--only NAME,...] [--family LIST]`:
 * our servers against a C epoll reference, the seed's iterative C daytime
 * server and Node's `net`, one after another with the same parameters,
 * each server pinned to CPU 0 and the C load generator (`bench/loadgen.c`)
 * to CPU 1. Prints one table and writes `bench/results/latest.json`.
 *
 * The `exec` family runs a program per connection (it prints one line and
 * exits; loadgen's `connect` kind reads it to EOF): `servers/exec.ts`
 * against tcpserver, xinetd, `ncat -e`, socat `EXEC` and a minimal Deno
 * loop (`bench/exec_loop.ts`), in a table of its own:
 * `deno task bench --family exec`.
 *
 * The handshake family (`bench/tls_handshake.ts`) counts full TLS
 * handshakes a second, 1 and 8 at a time, with and without a client
 * certificate, by a C OpenSSL client: `servers/echo.ts --tls` against a
 * minimal `Deno.listenTls` echo, Node's `tls`, haproxy (one thread) and
 * stunnel: `deno task bench --family handshake`.
 *
 * The forward family (see "Forwarding" below) puts forwarders in front of
 * the C echo server: ours (`servers/forward.ts`), a minimal Deno one
 * (`bench/minimal_forward.ts`: two read/write loops), haproxy on one thread
 * and socat (a process per connection), and prints a table of its own.
 *
 * The balance family (`bench/balance.ts`, `--family balance`) puts
 * forwarders with four targets (ours, haproxy, nginx's `stream`, and the
 * minimal Deno one taking the four in turn) in front of four C echo
 * servers: their rates, and the failover time when one target is killed.
 * The udp family (`bench/udp.ts`) is a 64-byte UDP ping-pong from 1 and 32
 * sockets against `servers/echo.ts --udp` (with `--udp-rate 0` and with
 * its defaults), a minimal `Deno.listenDatagram` echo, a C
 * `recvfrom`/`sendto` echo and Node's `dgram`: `deno task bench --family
 * udp`.
 * The websocket family (`bench/websocket.ts`) puts WebSocket bridges in
 * front of the C echo server, driven by `bench/wsloadgen.c`: ours
 * (`servers/forward.ts ws://`), a minimal `Deno.serve` bridge, a minimal
 * Node `ws` bridge and websockify: `deno task bench --family websocket`.
 *
 * Our servers run exactly as users run them: `deno run` with the
 * least-privilege permissions of their header, logging to a file.
 *
 * @module
 */

import { ProgressBar } from "@std/cli/unstable-progress-bar";
import {
  flag,
  flagsHelp,
  HelpRequested,
  parseCommandLine,
  UsageError,
} from "../lib/cli.ts";
import { BalanceBench } from "./balance.ts";
import { TlsBench } from "./tls.ts";
import { reportUdp, UDP_SCENARIOS, udpServers } from "./udp.ts";
import { HandshakeBench } from "./tls_handshake.ts";
import {
  reportWebSocket,
  WEBSOCKET_SCENARIOS,
  webSocketServers,
} from "./websocket.ts";
import { plotSvg } from "./plot.ts";
import {
  type Figure,
  format,
  hasCommand,
  loadgenFigure,
  median,
  printTable,
  type Running,
  type Target,
  verdict as targetVerdict,
} from "./_shared.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const RESULTS = `${ROOT}bench/results`;
const BIN = `${RESULTS}/bin`;
const LOGS = `${RESULTS}/logs`;

const FLAGS = {
  quick: flag.boolean(
    "a few seconds in all, small counts (CI runs this; numbers mean little)",
  ),
  rounds: flag.integer(
    "N",
    "run every server N times, interleaved, and keep each figure's median",
    { min: 1, max: 100, default: 1 },
  ),
  seconds: flag.seconds(
    "S",
    "seconds per stream / ping-pong / connect measurement",
    { shown: "3; 0.3 with --quick" },
  ),
  idle: flag.integer("N", "idle connections", {
    min: 1,
    max: 1_000_000,
    shown: "10000; 200 with --quick",
  }),
  only: flag.string(
    "LIST",
    "only these servers: ours,ours-2w,minimal,c,c-iterative,node;\nforward: fwd-ours,fwd-minimal,fwd-haproxy,fwd-socat;\nexec: ours,deno-loop,tcpserver,xinetd,ncat,socat;\ntls: tls-ours,tls-minimal,tls-node,tls-fwd-ours,tls-fwd-haproxy,\ntls-client;\nhandshake: hs-ours,hs-fwd-ours,hs-minimal,hs-node,hs-haproxy,\nhs-stunnel;\nbalance: bal-ours,bal-haproxy,bal-nginx,bal-minimal;\nudp: udp-ours,udp-ours-defaults,udp-minimal,udp-c,udp-node;\nwebsocket: ws-ours,ws-minimal,ws-node,ws-websockify",
  ),
  family: flag.string(
    "LIST",
    "only these families: echo,daytime,forward,exec,tls,handshake,balance,\nudp,websocket",
  ),
};

const USAGE = `usage: deno task bench [options]

${flagsHelp(FLAGS)}`;

function parseFlags() {
  try {
    return parseCommandLine(Deno.args, { usage: USAGE, flags: FLAGS }).values;
  } catch (error) {
    if (error instanceof HelpRequested) {
      console.log(error.usage);
      Deno.exit(0);
    }
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}`);
    Deno.exit(2);
  }
}

const flags = parseFlags();
const quick = flags.quick;
const rounds = flags.rounds;
const seconds = (flags.seconds ?? (quick ? 300 : 3000)) / 1000;
const idleCount = flags.idle ?? (quick ? 200 : 10000);
const only = flags.only?.split(",");
const families = flags.family?.split(",") ?? [
  "echo",
  "daytime",
  "forward",
  "exec",
  "tls",
  "handshake",
  "balance",
  "udp",
  "websocket",
];

// Server on CPU 0, load generator on CPU 1; a 1-CPU machine pins nothing.
const PIN = navigator.hardwareConcurrency >= 2;

// Each server kind, by scenario family.
const DAYTIME_SCRIPT = existsSync(`${ROOT}servers/daytime.ts`)
  ? "servers/daytime.ts"
  : "";

// A worker loads the script's modules again, under the script's permissions:
// with JSR_URL a file: mirror (no JSR reachable), its files too.
const JSR_MIRROR = Deno.env.get("JSR_URL")?.startsWith("file:")
  ? `,${new URL(Deno.env.get("JSR_URL")!).pathname}`
  : "";

function ours(script: string, extra: string[] = [], read = false): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    "--allow-net=127.0.0.1:{PORT}",
    ...(read ? [`--allow-read=${script},mod.ts,lib${JSR_MIRROR}`] : []),
    script,
    "--hostname",
    "127.0.0.1",
    "--port",
    "{PORT}",
    ...extra,
  ];
}

/** `command` (from {@linkcode ours}) serving `--stats` on a free port too. */
function withStats(command: string[]): string[] {
  return [
    ...command.map((arg) =>
      arg === "--allow-net=127.0.0.1:{PORT}"
        ? "--allow-net=127.0.0.1:{PORT},127.0.0.1:0"
        : arg
    ),
    "--stats",
    "127.0.0.1:0",
  ];
}

/** What the runtime allows: a bare Deno server (`bench/minimal_server.ts`). */
function minimal(mode: "echo" | "daytime"): Target {
  return {
    label: "minimal Deno",
    command: [
      Deno.execPath(),
      "run",
      "--quiet",
      "--allow-net=127.0.0.1:{PORT}",
      "bench/minimal_server.ts",
      mode,
      "{PORT}",
    ],
  };
}

const ECHO_SERVERS: Record<string, Target> = {
  ours: {
    label: "ours (servers/echo.ts)",
    command: ours("servers/echo.ts", [
      "--max-connections",
      String(idleCount + 1000),
      // The load generator is one host: lift the per-source limit.
      "--per-source",
      "0",
    ]),
  },
  "ours-2w": {
    label: "ours --workers 2",
    // Both CPUs, the load generator's included: what a user of a 2-CPU
    // machine gets from a second thread while the client runs there too.
    cpus: "0,1",
    command: ours("servers/echo.ts", [
      "--max-connections",
      String(idleCount + 1000),
      "--per-source",
      "0",
      "--workers",
      "2",
    ], true),
  },
  // `--stats` on: what counting costs the byte path (nothing measurable is
  // the goal), on the scenarios that move the most bytes and round trips.
  "ours-stats": {
    label: "ours --stats",
    command: withStats(ours("servers/echo.ts", [
      "--max-connections",
      String(idleCount + 1000),
      "--per-source",
      "0",
    ])),
    scenarios: ["stream-64", "pingpong-100"],
  },
  minimal: minimal("echo"),
  c: { label: "C epoll", command: [`${BIN}/cserver`, "echo", "{PORT}"] },
  node: {
    label: "Node net",
    command: ["node", `${ROOT}bench/node_server.mjs`, "echo", "{PORT}"],
  },
};

const DAYTIME_SERVERS: Record<string, Target> = {
  ours: { label: `ours (${DAYTIME_SCRIPT})`, command: ours(DAYTIME_SCRIPT) },
  "ours-stats": {
    label: "ours --stats",
    command: withStats(ours(DAYTIME_SCRIPT)),
    scenarios: ["connect-32"],
  },
  minimal: minimal("daytime"),
  c: { label: "C epoll", command: [`${BIN}/cserver`, "daytime", "{PORT}"] },
  "c-iterative": {
    label: "C iterative (seed)",
    command: [`${BIN}/daytime_iterative`, "{PORT}"],
  },
  node: {
    label: "Node net",
    command: ["node", `${ROOT}bench/node_server.mjs`, "daytime", "{PORT}"],
  },
};

// The exec family: one line and exit, the program loadgen's `connect`
// kind expects (a line ending in CRLF, then EOF). printf interprets the
// escapes itself; ncat and socat unescape `\\` first.
const LINE_PROGRAM = ["/usr/bin/printf", "hello\\r\\n"];
const PEER_LINE_PROGRAM = "/usr/bin/printf hello\\\\r\\\\n";
const EXEC_CONNECTIONS = 64;
const CLEAN_PATH =
  "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Deno finds `@std` through an offline mirror where JSR is out of reach. */
const JSR_ENV: Record<string, string> = Deno.env.get("JSR_URL")
  ? { JSR_URL: Deno.env.get("JSR_URL")! }
  : {};
const XINETD_CONF = `${RESULTS}/xinetd-exec.conf`;

function needs(command: string): () => string | undefined {
  return () => hasCommand(command) ? undefined : `${command} not installed`;
}

const EXEC_SERVERS: Record<string, Target> = {
  ours: {
    label: "ours (servers/exec.ts)",
    cleanEnv: true,
    command: [
      Deno.execPath(),
      "run",
      "--quiet",
      "--allow-net=127.0.0.1:{PORT}",
      `--allow-run=${LINE_PROGRAM[0]}`,
      `--allow-read=${LINE_PROGRAM[0]}`,
      "servers/exec.ts",
      "--hostname",
      "127.0.0.1",
      "--port",
      "{PORT}",
      // One source address, hundreds of connections a second, 8 at once.
      "--rate",
      "0",
      "--per-source",
      "0",
      "--max-connections",
      String(EXEC_CONNECTIONS),
      "--",
      ...LINE_PROGRAM,
    ],
  },
  "deno-loop": {
    label: "Deno loop (bench/exec_loop.ts)",
    cleanEnv: true,
    command: [
      Deno.execPath(),
      "run",
      "--quiet",
      "--allow-net=127.0.0.1:{PORT}",
      `--allow-run=${LINE_PROGRAM[0]}`,
      "bench/exec_loop.ts",
      "{PORT}",
      ...LINE_PROGRAM,
    ],
  },
  tcpserver: {
    label: "tcpserver",
    cleanEnv: true,
    command: [
      "tcpserver",
      "-c",
      String(EXEC_CONNECTIONS),
      "-H",
      "-R",
      "-l",
      "0",
      "127.0.0.1",
      "{PORT}",
      ...LINE_PROGRAM,
    ],
    ready: "connect",
    missing: needs("tcpserver"),
    peer: true,
  },
  xinetd: {
    label: "xinetd",
    cleanEnv: true,
    command: [
      "xinetd",
      "-dontfork",
      "-f",
      XINETD_CONF,
      "-pidfile",
      `${RESULTS}/xinetd-exec.pid`,
      "-filelog",
      `${LOGS}/exec-xinetd.filelog`,
    ],
    ready: "connect",
    before: (port) =>
      Deno.writeTextFileSync(
        XINETD_CONF,
        `defaults\n{\n}\nservice benchexec\n{\n${
          [
            "type = UNLISTED",
            "id = benchexec",
            "socket_type = stream",
            "protocol = tcp",
            `port = ${port}`,
            "bind = 127.0.0.1",
            "wait = no",
            "user = root",
            `server = ${LINE_PROGRAM[0]}`,
            `server_args = ${LINE_PROGRAM[1]}`,
            `instances = ${EXEC_CONNECTIONS}`,
            "per_source = UNLIMITED",
            "cps = 1000000 1",
          ].map((line) => `  ${line}\n`).join("")
        }}\n`,
      ),
    missing: () =>
      needs("xinetd")() ??
        (isRoot() ? undefined : "xinetd needs root here"),
    peer: true,
  },
  ncat: {
    label: "ncat -e",
    cleanEnv: true,
    command: [
      "ncat",
      "-l",
      "-k",
      "-m",
      String(EXEC_CONNECTIONS),
      "127.0.0.1",
      "{PORT}",
      "-e",
      PEER_LINE_PROGRAM,
    ],
    ready: "connect",
    missing: needs("ncat"),
    peer: true,
  },
  socat: {
    label: "socat EXEC",
    cleanEnv: true,
    command: [
      "socat",
      `TCP-LISTEN:{PORT},bind=127.0.0.1,fork,reuseaddr,max-children=${EXEC_CONNECTIONS}`,
      `EXEC:${PEER_LINE_PROGRAM}`,
    ],
    ready: "connect",
    missing: needs("socat"),
    peer: true,
  },
};

interface Scenario {
  /** Row key, e.g. `pingpong-100`. */
  key: string;
  kind:
    | "stream"
    | "pingpong"
    | "connect"
    | "short"
    | "idle"
    | "udp"
    | "ws-pingpong"
    | "ws-stream";
  connections: number;
}

const ECHO_SCENARIOS: Scenario[] = [
  { key: "stream-1", kind: "stream", connections: 1 },
  { key: "stream-64", kind: "stream", connections: 64 },
  { key: "pingpong-1", kind: "pingpong", connections: 1 },
  { key: "pingpong-100", kind: "pingpong", connections: 100 },
  { key: "short-1", kind: "short", connections: 1 },
  { key: "short-32", kind: "short", connections: 32 },
  { key: `idle-${idleCount}`, kind: "idle", connections: idleCount },
];
const DAYTIME_SCENARIOS: Scenario[] = [
  { key: "connect-1", kind: "connect", connections: 1 },
  { key: "connect-32", kind: "connect", connections: 32 },
];
const EXEC_SCENARIOS: Scenario[] = [
  { key: "exec-1", kind: "connect", connections: 1 },
  { key: "exec-8", kind: "connect", connections: 8 },
];

/** Whether we run as root (`id -u`: Deno.uid() needs --allow-sys). */
function isRoot(): boolean {
  const { stdout } = new Deno.Command("id", { args: ["-u"] }).outputSync();
  return new TextDecoder().decode(stdout).trim() === "0";
}

// Forwarding: forwarders in front of the C echo server (`{ECHO}`, on the
// load generator's CPU), each forwarder alone on CPU 0.

/** Idle pairs: each holds two descriptors in the forwarder, within a 20,000 limit. */
const forwardIdle = Math.min(idleCount, 4000);

const FORWARD_SCENARIOS: Scenario[] = [
  { key: "fwd-stream-64", kind: "stream", connections: 64 },
  { key: "fwd-pingpong-100", kind: "pingpong", connections: 100 },
  { key: `fwd-idle-${forwardIdle}`, kind: "idle", connections: forwardIdle },
];

const HAPROXY_CONFIG = `${RESULTS}/haproxy.cfg`;

function forwardServers(echoPort: number): Record<string, Target> {
  const echo = `127.0.0.1:${echoPort}`;
  const allow = `--allow-net=127.0.0.1:{PORT},${echo}`;
  return {
    "fwd-ours": {
      label: "ours (servers/forward.ts)",
      command: [
        Deno.execPath(),
        "run",
        "--quiet",
        allow,
        "servers/forward.ts",
        "--max-connections",
        String(forwardIdle + 1000),
        // The load generator is one host: lift the per-source limit.
        "--per-source",
        "0",
        "tcp://127.0.0.1:{PORT}",
        `tcp://${echo}`,
      ],
    },
    "fwd-minimal": {
      label: "minimal Deno (bench/minimal_forward.ts)",
      command: [
        Deno.execPath(),
        "run",
        "--quiet",
        allow,
        "bench/minimal_forward.ts",
        "{PORT}",
        String(echoPort),
      ],
    },
    "fwd-haproxy": {
      label: "haproxy (nbthread 1)",
      command: [
        "env",
        "FWD_PORT={PORT}",
        "haproxy",
        "-db",
        "-f",
        HAPROXY_CONFIG,
      ],
      ready: "connect",
    },
    "fwd-socat": {
      label: "socat fork",
      // A process per connection: its CPU and memory are not the PID's.
      command: [
        "socat",
        "-d",
        "-d",
        "TCP-LISTEN:{PORT},bind=127.0.0.1,reuseaddr,fork,backlog=1024",
        `TCP:${echo}`,
      ],
      scenarios: ["fwd-stream-64", "fwd-pingpong-100"],
    },
    // The reference: our echo server alone, through the same scenarios
    // (so its heap has grown as the forwarders' have when idle is measured).
    "fwd-echo": {
      label: "ours, echo alone (the reference)",
      command: ours("servers/echo.ts", [
        "--max-connections",
        String(forwardIdle + 1000),
        "--per-source",
        "0",
      ]),
    },
  };
}

/** The forward family's haproxy configuration, written where it runs it. */
function writeHaproxyConfig(echoPort: number): void {
  Deno.writeTextFileSync(HAPROXY_CONFIG, haproxyConfig(echoPort));
}

/**
 * haproxy's configuration: one thread, `mode tcp`, in front of the echo
 * target, `bind` options after the address (`ssl crt FILE` for the TLS
 * family); the port comes from the environment (`FWD_PORT`, see
 * `forwardServers`), as haproxy expands variables in quoted strings.
 */
function haproxyConfig(echoPort: number, bind = ""): string {
  return `global
  nbthread 1
  maxconn ${forwardIdle + 1000}
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
frontend f
  bind "127.0.0.1:\${FWD_PORT}"${bind && ` ${bind}`}
  default_backend b
backend b
  server s 127.0.0.1:${echoPort}
`;
}

/** The websocket family: the C echo target, then each bridge in front of it. */
async function runWebSocketFamily(): Promise<void> {
  if (!Object.keys(webSocketServers(ROOT, RESULTS, 0)).some(isSelected)) {
    return;
  }
  await behindCEcho("websocket", (echoPort) =>
    runFamily(
      "websocket",
      webSocketServers(ROOT, RESULTS, echoPort),
      WEBSOCKET_SCENARIOS,
    ));
}

/** The forward family: the C echo target, then each forwarder in front of it. */
async function runForwardFamily(): Promise<void> {
  const servers = forwardServers(0);
  if (!Object.keys(servers).some(isSelected)) return;
  await behindCEcho("forward", async (echoPort) => {
    const family = forwardServers(echoPort);
    for (
      const [name, peer] of [["fwd-haproxy", "haproxy"], ["fwd-socat", "socat"]]
    ) {
      if (!hasCommand(peer)) {
        console.error(`bench: ${name} skipped: ${peer} is not installed`);
        delete family[name];
      }
    }
    if (family["fwd-haproxy"]) writeHaproxyConfig(echoPort);
    await runFamily("forward", family, FORWARD_SCENARIOS);
  });
}

/**
 * Runs `body` with the C echo server, the target of the family's
 * forwarders, on the load generator's CPU; a target that does not start
 * is reported and the family skipped.
 */
async function behindCEcho(
  family: string,
  body: (echoPort: number) => Promise<void>,
): Promise<void> {
  let echo: Running;
  try {
    echo = await startServer("c-echo", {
      label: "C epoll echo (the target)",
      command: [`${BIN}/cserver`, "echo", "{PORT}"],
      cpus: PIN ? "1" : "0",
    }, family);
  } catch (error) {
    console.error(`bench: ${family}: ${(error as Error).message}`);
    return;
  }
  try {
    await body(echo.port);
  } finally {
    await echo.stop();
  }
}

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function run(
  command: string[],
  options: { cpu?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = options.cpu === undefined || !PIN
    ? command
    : ["taskset", "-c", String(options.cpu), ...command];
  const output = await new Deno.Command(args[0], {
    args: args.slice(1),
    stdout: "piped",
    stderr: "piped",
    cwd: ROOT,
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * The handshake family's load generator: built with OpenSSL's headers
 * (libssl-dev), which a machine may lack; then that family alone is
 * skipped, saying why.
 */
let handshakeLoadgen: { path: string } | { missing: string } = {
  missing: "not built",
};

async function buildHandshakeLoadgen(): Promise<void> {
  const path = `${BIN}/tls_handshake_loadgen`;
  const result = await run([
    "gcc",
    "-O2",
    "-Wall",
    "-o",
    path,
    `${ROOT}bench/tls_handshake_loadgen.c`,
    "-lssl",
    "-lcrypto",
    "-lpthread",
  ]);
  handshakeLoadgen = result.code === 0 ? { path } : {
    missing:
      `bench/tls_handshake_loadgen.c did not build (OpenSSL's headers: apt-get install libssl-dev):\n${result.stderr.trim()}`,
  };
}

async function build(): Promise<void> {
  Deno.mkdirSync(BIN, { recursive: true });
  Deno.mkdirSync(LOGS, { recursive: true });
  for (
    const name of ["loadgen", "wsloadgen", "cserver", "daytime_iterative"]
  ) {
    const result = await run([
      "gcc",
      "-O2",
      "-Wall",
      "-o",
      `${BIN}/${name}`,
      `${ROOT}bench/${name}.c`,
    ]);
    if (result.code !== 0) {
      throw new Error(`gcc ${name}.c failed:\n${result.stderr}`);
    }
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Whether something accepts connections on 127.0.0.1:`port` now. */
async function accepts(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** Starts a server on CPU 0, stderr to a log file; waits for `listening on`. */
async function startServer(
  name: string,
  target: Target,
  family: string,
): Promise<Running> {
  const port = freePort();
  target.before?.(port);
  const log = `${LOGS}/${family}-${name}.log`;
  // A log left by an earlier run must not pass for this one's.
  try {
    Deno.removeSync(log);
  } catch {
    // None yet.
  }
  const command = target.command.map((part) =>
    part.replaceAll("{PORT}", String(port))
  );
  // The shell raises the open-file limit for the idle scenario, pins the
  // server to CPU 0 and sends its log lines to a file, as a service would.
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; log=$1; shift; exec ${
        PIN ? `taskset -c ${target.cpus ?? "0"} ` : ""
      }"$@" 2>"$log"`,
      "sh",
      log,
      ...command,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
    ...(target.cleanEnv
      ? { clearEnv: true, env: { NO_COLOR: "1", PATH: CLEAN_PATH, ...JSR_ENV } }
      : { env: { NO_COLOR: "1" } }),
  }).spawn();
  const deadline = Date.now() + 60_000; // a loaded CI machine starts slowly
  const ready = target.ready ?? /listening on/;
  while (true) {
    let text = "";
    try {
      text = Deno.readTextFileSync(log);
    } catch {
      // Not created yet.
    }
    if (ready === "connect" ? await accepts(port) : ready.test(text)) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${name} did not start; its log:\n${text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    pid: child.pid,
    port,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Gone.
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // Gone.
        }
      }, 5000);
      await child.status;
      clearTimeout(timer);
    },
  };
}

async function measure(
  scenario: Scenario,
  server: Running,
): Promise<Figure> {
  const last = scenario.kind === "idle" ? String(server.pid) : String(seconds);
  // WebSocket scenarios: bench/wsloadgen.c's `pingpong` and `stream`.
  const [program, kind] = scenario.kind.startsWith("ws-")
    ? ["wsloadgen", scenario.kind.slice(3)]
    : ["loadgen", scenario.kind];
  const result = await run([
    `${BIN}/${program}`,
    kind,
    "127.0.0.1",
    String(server.port),
    String(scenario.connections),
    last,
    String(server.pid),
  ], { cpu: 1 });
  // Work: a round trip, a connection, or a MB.
  return loadgenFigure(
    result,
    (figure) =>
      figure.round_trips ?? figure.completed ?? (figure.bytes as number) / 1e6,
  );
}

/**
 * Where the run is, on stderr: a progress bar on a terminal, a plain line
 * a measurement otherwise (a CI log).
 */
class Progress {
  readonly #total: number;
  #done = 0;
  readonly #bar?: ProgressBar;

  constructor(total: number) {
    this.#total = total;
    if (Deno.stderr.isTerminal()) {
      this.#bar = new ProgressBar({
        max: total,
        formatter: (f) =>
          `[${f.styledTime}] [${f.progressBar}] ${f.value}/${f.max} measurements`,
      });
    }
  }

  step(what: string): void {
    this.#done++;
    if (this.#bar) this.#bar.value = this.#done - 1;
    else console.error(`bench: [${this.#done}/${this.#total}] ${what}`);
  }

  async stop(): Promise<void> {
    if (this.#bar) {
      this.#bar.value = this.#total;
      await this.#bar.stop();
    }
  }
}

/** Whether `--only` keeps the server `name` (`forward` keeps every forwarder). */
function isSelected(name: string): boolean {
  return !only || only.includes(name) ||
    (name.startsWith("fwd-") && only.includes("forward"));
}

/** Measurements a family makes: each selected server's scenarios. */
function measurements(
  servers: Record<string, Target>,
  scenarios: Scenario[],
): number {
  return Object.entries(servers).filter(([name]) => isSelected(name))
    .reduce(
      (n, [, target]) => n + (target.scenarios?.length ?? scenarios.length),
      0,
    );
}

// UDP: ours --udp against Deno.listenDatagram, C and Node (bench/udp.ts).
const UDP_SERVERS: Record<string, Target> = udpServers(ROOT, BIN);

// TLS: ours --tls against Deno.listenTls and Node's tls (bench/tls.ts).
const tls = new TlsBench({
  root: ROOT,
  results: RESULTS,
  seconds,
  quick,
  only,
  haproxyConfig,
  run,
  startServer,
  step: (what) => progress.step(what),
});

// Balancing: forwarders in front of four C echo targets (bench/balance.ts).
const balance = new BalanceBench({
  root: ROOT,
  results: RESULTS,
  failoverSeconds: quick ? 3 : 6,
  only,
  startServer,
  measure,
  step: (what) => progress.step(what),
});

// TLS handshakes: ours against Deno.listenTls, Node, haproxy and stunnel
// (bench/tls_handshake.ts).
const handshake = new HandshakeBench({
  root: ROOT,
  results: RESULTS,
  seconds,
  only,
  get loadgen() {
    return handshakeLoadgen;
  },
  haproxyConfig,
  run,
  startServer,
  step: (what) => progress.step(what),
});

const progress = new Progress(
  rounds * (
    (families.includes("echo")
      ? measurements(ECHO_SERVERS, ECHO_SCENARIOS)
      : 0) +
    (families.includes("daytime")
      ? measurements(DAYTIME_SERVERS, DAYTIME_SCENARIOS)
      : 0) +
    (families.includes("forward")
      ? measurements(forwardServers(0), FORWARD_SCENARIOS)
      : 0) +
    (families.includes("exec")
      ? measurements(EXEC_SERVERS, EXEC_SCENARIOS)
      : 0) +
    (families.includes("tls") ? tls.measurements : 0) +
    (families.includes("balance") ? balance.measurements : 0) +
    (families.includes("udp") ? measurements(UDP_SERVERS, UDP_SCENARIOS) : 0) +
    (families.includes("handshake") ? handshake.measurements : 0) +
    (families.includes("websocket")
      ? measurements(webSocketServers(ROOT, RESULTS, 0), WEBSOCKET_SCENARIOS)
      : 0)
  ),
);

/** results[scenario][server] = figures of each round. */
const results: Record<string, Record<string, Figure[]>> = {};
/** `scenario/server` of peers' figures: their failures never fail the run. */
const lenient = new Set<string>();

async function runFamily(
  family: string,
  servers: Record<string, Target>,
  scenarios: Scenario[],
): Promise<void> {
  for (const [name, target] of Object.entries(servers)) {
    if (!isSelected(name)) continue;
    const absent = target.missing?.();
    if (absent) {
      console.error(`bench: skipping ${name}: ${absent}`);
      for (const scenario of scenarios) {
        progress.step(`${name} ${scenario.key} skipped`);
      }
      continue;
    }
    let server: Running;
    try {
      server = await startServer(name, target, family);
    } catch (error) {
      console.error(`bench: ${(error as Error).message}`);
      continue;
    }
    try {
      for (const scenario of scenarios) {
        if (target.scenarios && !target.scenarios.includes(scenario.key)) {
          continue;
        }
        progress.step(`${name} ${scenario.key}`);
        const figure = await measure(scenario, server);
        if (figure.error) {
          console.error(`bench: ${name} ${scenario.key}: ${figure.error}`);
        }
        ((results[scenario.key] ??= {})[name] ??= []).push(figure);
        if (target.peer) lenient.add(`${scenario.key}/${name}`);
      }
    } finally {
      await server.stop();
    }
  }
}

interface Row {
  scenario: string;
  metric: string;
  unit: string;
  /** Which server the "C" column and ratio compare with. */
  reference: "c" | "c-iterative";
  higherIsBetter: boolean;
  /** Ours / reference must be at least (or, lower-is-better, at most) this. */
  targetVsC?: number;
  /** Ours / minimal Deno: the share of what the runtime allows. */
  targetVsMinimal?: number;
  targetVsNode?: number;
}

const ROWS: Row[] = [
  {
    scenario: "stream-1",
    metric: "mb_per_s",
    unit: "MB/s",
    reference: "c",
    higherIsBetter: true,
  },
  {
    scenario: "stream-64",
    metric: "mb_per_s",
    unit: "MB/s",
    reference: "c",
    higherIsBetter: true,
    targetVsC: 0.95,
  },
  {
    scenario: "stream-64",
    metric: "cpu_us",
    unit: "CPU µs/MB",
    reference: "c",
    higherIsBetter: false,
  },
  {
    scenario: "pingpong-1",
    metric: "per_s",
    unit: "trips/s",
    reference: "c",
    higherIsBetter: true,
  },
  {
    scenario: "pingpong-1",
    metric: "p50_us",
    unit: "p50 µs",
    reference: "c",
    higherIsBetter: false,
    targetVsC: 1.2,
  },
  {
    scenario: "pingpong-1",
    metric: "p99_us",
    unit: "p99 µs",
    reference: "c",
    higherIsBetter: false,
  },
  {
    scenario: "pingpong-1",
    metric: "cpu_us",
    unit: "CPU µs/trip",
    reference: "c",
    higherIsBetter: false,
  },
  {
    scenario: "pingpong-100",
    metric: "per_s",
    unit: "trips/s",
    reference: "c",
    higherIsBetter: true,
    targetVsC: 0.85,
    targetVsNode: 1.2,
    targetVsMinimal: 0.97,
  },
  {
    scenario: "pingpong-100",
    metric: "p50_us",
    unit: "p50 µs",
    reference: "c",
    higherIsBetter: false,
  },
  {
    scenario: "pingpong-100",
    metric: "p99_us",
    unit: "p99 µs",
    reference: "c",
    higherIsBetter: false,
  },
  {
    scenario: "pingpong-100",
    metric: "cpu_us",
    unit: "CPU µs/trip",
    reference: "c",
    higherIsBetter: false,
  },
  {
    scenario: "short-1",
    metric: "per_s",
    unit: "conn/s",
    reference: "c",
    higherIsBetter: true,
    targetVsMinimal: 0.95,
  },
  {
    scenario: "short-32",
    metric: "per_s",
    unit: "conn/s",
    reference: "c",
    higherIsBetter: true,
    targetVsMinimal: 0.95,
  },
  {
    scenario: "short-32",
    metric: "cpu_us",
    unit: "CPU µs/conn",
    reference: "c",
    higherIsBetter: false,
  },
  {
    scenario: "connect-1",
    metric: "per_s",
    unit: "conn/s",
    reference: "c-iterative",
    higherIsBetter: true,
    targetVsC: 0.6,
  },
  {
    scenario: "connect-32",
    metric: "per_s",
    unit: "conn/s",
    reference: "c-iterative",
    higherIsBetter: true,
    targetVsC: 1.0,
    targetVsMinimal: 0.95,
  },
  {
    scenario: "connect-32",
    metric: "cpu_us",
    unit: "CPU µs/conn",
    reference: "c-iterative",
    higherIsBetter: false,
  },
  {
    scenario: `idle-${idleCount}`,
    metric: "bytes_per_connection",
    unit: "B RSS/conn",
    reference: "c",
    higherIsBetter: false,
    targetVsNode: 1.0,
  },
];

function verdict(
  ratio: number | null,
  target: number | undefined,
  higherIsBetter: boolean,
): string {
  // A few hundred idle connections move RSS less than the GC does: a
  // negative or zero figure is noise, not a result to judge.
  if (ratio !== null && target !== undefined && !(ratio > 0)) {
    return "noise (too small to judge)";
  }
  return targetVerdict(ratio, target, higherIsBetter);
}

function report(): Record<string, unknown>[] {
  const table: Record<string, unknown>[] = [];
  const lines: string[][] = [[
    "scenario",
    "unit",
    "ours",
    "--stats",
    "2 workers",
    "minimal",
    "C epoll",
    "C iter.",
    "Node",
    "ours/min",
    "ours/C",
    "ours/Node",
    "target vs min",
    "target vs C",
    "target vs Node",
  ]];
  for (const row of ROWS) {
    const figures = results[row.scenario] ?? {};
    const value = (name: string) => median(figures[name], row.metric);
    const ourValue = value("ours");
    const ref = value(row.reference);
    const node = value("node");
    const least = value("minimal");
    const vsMinimal = ourValue !== null && least ? ourValue / least : null;
    const vsC = ourValue !== null && ref ? ourValue / ref : null;
    const vsNode = ourValue !== null && node ? ourValue / node : null;
    const entry = {
      scenario: row.scenario,
      metric: row.metric,
      unit: row.unit,
      reference: row.reference,
      ours: ourValue,
      ours_stats: value("ours-stats"),
      ours_2_workers: value("ours-2w"),
      minimal_deno: least,
      c_epoll: value("c"),
      c_iterative: value("c-iterative"),
      node,
      ours_vs_minimal: vsMinimal,
      ours_vs_c: vsC,
      ours_vs_node: vsNode,
      target_vs_minimal: verdict(
        vsMinimal,
        row.targetVsMinimal,
        row.higherIsBetter,
      ),
      target_vs_c: verdict(vsC, row.targetVsC, row.higherIsBetter),
      target_vs_node: verdict(vsNode, row.targetVsNode, row.higherIsBetter),
    };
    table.push(entry);
    lines.push([
      row.scenario,
      row.unit,
      format(ourValue),
      format(entry.ours_stats),
      format(entry.ours_2_workers),
      format(least),
      format(entry.c_epoll),
      format(entry.c_iterative),
      format(node),
      vsMinimal === null ? "-" : vsMinimal.toFixed(2),
      vsC === null ? "-" : vsC.toFixed(2),
      vsNode === null ? "-" : vsNode.toFixed(2),
      entry.target_vs_minimal,
      entry.target_vs_c,
      entry.target_vs_node,
    ]);
  }
  printTable(lines, (i) => i < 2);
  console.log(
    "ours/C compares with C epoll, except connect rows: the seed's iterative C server.",
  );
  console.log(
    "CPU rows: the server's CPU time (all threads) per unit of work; lower is better, and a loaded machine moves it least.",
  );
  console.log(
    "--stats: ours serving its stats too (stream-64, pingpong-100, connect-32: what counting costs).",
  );
  return table;
}

interface ForwardRow {
  scenario: string;
  metric: string;
  unit: string;
  higherIsBetter: boolean;
  /** Ours / haproxy must be at least (lower-is-better: at most) this. */
  targetVsHaproxy?: number;
  /** Ours / socat must be at least this. */
  targetVsSocat?: number;
  /** Ours / our echo alone must be at most this (memory). */
  targetVsEcho?: number;
}

const FORWARD_ROWS: ForwardRow[] = [
  {
    scenario: "fwd-stream-64",
    metric: "mb_per_s",
    unit: "MB/s",
    higherIsBetter: true,
    targetVsHaproxy: 0.95,
  },
  {
    scenario: "fwd-stream-64",
    metric: "cpu_us",
    unit: "CPU µs/MB",
    higherIsBetter: false,
  },
  {
    scenario: "fwd-pingpong-100",
    metric: "per_s",
    unit: "trips/s",
    higherIsBetter: true,
    targetVsHaproxy: 0.7,
    targetVsSocat: 1.5,
  },
  {
    scenario: "fwd-pingpong-100",
    metric: "p99_us",
    unit: "p99 µs",
    higherIsBetter: false,
  },
  {
    scenario: "fwd-pingpong-100",
    metric: "cpu_us",
    unit: "CPU µs/trip",
    higherIsBetter: false,
  },
  {
    scenario: `fwd-idle-${forwardIdle}`,
    metric: "bytes_per_connection",
    unit: "B RSS/pair",
    higherIsBetter: false,
    targetVsEcho: 2,
  },
];

/** The forward family's table (printed, and returned for the JSON). */
function reportForward(): Record<string, unknown>[] {
  if (!FORWARD_ROWS.some((row) => results[row.scenario])) return [];
  const table: Record<string, unknown>[] = [];
  const lines: string[][] = [[
    "forwarding to C echo",
    "unit",
    "ours",
    "minimal",
    "haproxy",
    "socat",
    "echo alone",
    "ours/haproxy",
    "ours/socat",
    "target",
  ]];
  for (const row of FORWARD_ROWS) {
    const figures = results[row.scenario] ?? {};
    const value = (name: string) => median(figures[name], row.metric);
    const ourValue = value("fwd-ours");
    const haproxy = value("fwd-haproxy");
    const socat = row.metric === "cpu_us" ? null : value("fwd-socat");
    const echo = value("fwd-echo");
    const ratio = (other: number | null) =>
      ourValue !== null && other ? ourValue / other : null;
    const verdicts = [
      verdict(ratio(haproxy), row.targetVsHaproxy, row.higherIsBetter),
      verdict(ratio(socat), row.targetVsSocat, row.higherIsBetter),
      verdict(ratio(echo), row.targetVsEcho, row.higherIsBetter),
    ].map((v, i) => v && `${["vs haproxy", "vs socat", "vs echo"][i]} ${v}`)
      .filter(Boolean).join("; ");
    table.push({
      scenario: row.scenario,
      metric: row.metric,
      unit: row.unit,
      ours: ourValue,
      minimal: value("fwd-minimal"),
      haproxy,
      socat,
      echo_alone: echo,
      ours_vs_haproxy: ratio(haproxy),
      ours_vs_socat: ratio(socat),
      ours_vs_echo: ratio(echo),
      target: verdicts,
    });
    lines.push([
      row.scenario,
      row.unit,
      format(ourValue),
      format(value("fwd-minimal")),
      format(haproxy),
      format(socat),
      format(echo),
      ratio(haproxy)?.toFixed(2) ?? "-",
      ratio(socat)?.toFixed(2) ?? "-",
      verdicts,
    ]);
  }
  console.log("");
  printTable(lines, (i) => i < 2 || i === lines[0].length - 1);
  console.log(
    "Forwarders on CPU 0, the C echo target and the load generator on CPU 1; socat forks a process per connection, so its CPU and memory are not measured.",
  );
  return table;
}

/** Where ours must stand against each peer, per exec scenario. */
const EXEC_TARGETS: Record<string, number> = {
  ncat: 1.0,
  socat: 1.0,
  xinetd: 0.9,
};

/** The exec family's table: connections a second, ours against each. */
function reportExec(): Record<string, unknown>[] {
  const names = Object.keys(EXEC_SERVERS);
  const table: Record<string, unknown>[] = [];
  const lines: string[][] = [[
    "scenario",
    ...names,
    ...Object.keys(EXEC_TARGETS).map((peer) => `ours/${peer}`),
  ]];
  for (const scenario of EXEC_SCENARIOS) {
    const figures = results[scenario.key] ?? {};
    const value = (name: string) => median(figures[name], "per_s");
    const ours = value("ours");
    const entry: Record<string, unknown> = {
      scenario: scenario.key,
      // The plot draws rows by metric: without one, no exec group.
      metric: "per_s",
      unit: "conn/s",
    };
    for (const name of names) entry[name] = value(name);
    const ratios: string[] = [];
    for (const [peer, target] of Object.entries(EXEC_TARGETS)) {
      const theirs = value(peer);
      const ratio = ours !== null && theirs ? ours / theirs : null;
      entry[`ours_vs_${peer}`] = ratio;
      entry[`target_vs_${peer}`] = verdict(ratio, target, true);
      ratios.push(
        ratio === null
          ? "-"
          : `${ratio.toFixed(2)} ${verdict(ratio, target, true).split(" ")[0]}`,
      );
    }
    table.push(entry);
    lines.push([
      `${scenario.key} conn/s`,
      ...names.map((name) => format(value(name))),
      ...ratios,
    ]);
  }
  printTable(lines, (i) => i === 0);
  console.log(
    `exec: a program per connection (${
      LINE_PROGRAM.join(" ")
    }), 1 and 8 clients at a time; targets: ours >= 1.0x ncat and socat, >= 0.9x xinetd.`,
  );
  return table;
}

function loadAverage(): string {
  try {
    return Deno.loadavg().map((n) => n.toFixed(2)).join(" ");
  } catch {
    return "?";
  }
}

if (import.meta.main) {
  const started = new Date();
  const loadBefore = loadAverage();
  await build();
  if (families.includes("handshake")) await buildHandshakeLoadgen();
  console.log(
    `bench: ${
      quick ? "quick, " : ""
    }${rounds} round(s), ${seconds} s a measurement, ${idleCount} idle connections; load average ${loadBefore}; ${navigator.hardwareConcurrency} CPUs`,
  );
  for (let round = 0; round < rounds; round++) {
    if (families.includes("echo")) {
      await runFamily("echo", ECHO_SERVERS, ECHO_SCENARIOS);
    }
    if (families.includes("daytime")) {
      await runFamily("daytime", DAYTIME_SERVERS, DAYTIME_SCENARIOS);
    }
    if (families.includes("forward")) await runForwardFamily();
    if (families.includes("exec")) {
      await runFamily("exec", EXEC_SERVERS, EXEC_SCENARIOS);
    }
    if (families.includes("tls")) await tls.round();
    if (families.includes("handshake")) await handshake.round();
    if (families.includes("balance")) await balance.round();
    if (families.includes("udp")) {
      await runFamily("udp", UDP_SERVERS, UDP_SCENARIOS);
    }
    if (families.includes("websocket")) await runWebSocketFamily();
  }
  await progress.stop();
  const loadAfter = loadAverage();
  const table = families.some((f) => f === "echo" || f === "daytime")
    ? report()
    : [];
  const forwardTable = families.includes("forward") ? reportForward() : [];
  const execTable = families.includes("exec") ? reportExec() : [];
  const tlsTable = families.includes("tls") ? tls.report() : [];
  const balanceTable = families.includes("balance") ? balance.report() : [];
  const udpTable = families.includes("udp")
    ? reportUdp(results, UDP_SERVERS)
    : [];
  const handshakeTable = families.includes("handshake")
    ? handshake.report()
    : [];
  const webSocketTable = families.includes("websocket")
    ? reportWebSocket(results, webSocketServers(ROOT, RESULTS, 0))
    : [];
  console.log(`load average before ${loadBefore}, after ${loadAfter}`);
  const json = {
    started: started.toISOString(),
    quick,
    rounds,
    seconds,
    idleConnections: idleCount,
    cpus: navigator.hardwareConcurrency,
    loadAverage: { before: loadBefore, after: loadAfter },
    deno: Deno.version.deno,
    daytimeScript: DAYTIME_SCRIPT,
    table,
    forwardTable,
    execTable,
    udpTable,
    webSocketTable,
    raw: results,
    tls: { table: tlsTable, raw: tls.results },
    balance: { table: balanceTable, raw: balance.results },
    handshake: { table: handshakeTable, raw: handshake.results },
  };
  Deno.writeTextFileSync(
    `${RESULTS}/latest.json`,
    JSON.stringify(json, null, 2) + "\n",
  );
  Deno.writeTextFileSync(`${RESULTS}/latest.svg`, plotSvg(json));
  console.log("bench: wrote bench/results/latest.json and latest.svg");
  // A scenario that failed (a wrong byte, a refused connection) fails the
  // run; slow numbers never do, nor a peer's failure (reported above).
  const failed = tls.failed || handshake.failed || balance.failed ||
    Object.entries(results).some(([scenario, servers]) =>
      Object.entries(servers).some(([name, figures]) =>
        !lenient.has(`${scenario}/${name}`) && figures.some((f) => f.error)
      )
    );
  Deno.exit(failed ? 1 : 0);
}
