/**
 * `deno task bench [--quick] [--rounds N] [--only NAME,...]`: our servers
 * against a C epoll reference, the seed's iterative C daytime server and
 * Node's `net`, one after another with the same parameters, each server
 * pinned to CPU 0 and the C load generator (`bench/loadgen.c`) to CPU 1.
 * Prints one table and writes `bench/results/latest.json`.
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
import { TlsBench } from "./tls.ts";

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
    "only these servers: ours,ours-2w,c,c-iterative,node",
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

// Server on CPU 0, load generator on CPU 1; a 1-CPU machine pins nothing.
const PIN = navigator.hardwareConcurrency >= 2;

/** One measurement: what the load generator printed. */
type Figure = Record<string, number | string | boolean>;

interface Target {
  /** Command line; `{PORT}` is replaced. */
  command: string[];
  /** Shown in the table. */
  label: string;
  /** CPUs the server may use (`taskset -c`). Default `0`. */
  cpus?: string;
}

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

const ECHO_SERVERS: Record<string, Target> = {
  ours: {
    label: "ours (servers/echo.ts)",
    command: ours("servers/echo.ts", [
      "--max-connections",
      String(idleCount + 1000),
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
      "--workers",
      "2",
    ], true),
  },
  c: { label: "C epoll", command: [`${BIN}/cserver`, "echo", "{PORT}"] },
  node: {
    label: "Node net",
    command: ["node", `${ROOT}bench/node_server.mjs`, "echo", "{PORT}"],
  },
};

const DAYTIME_SERVERS: Record<string, Target> = {
  ours: { label: `ours (${DAYTIME_SCRIPT})`, command: ours(DAYTIME_SCRIPT) },
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

interface Scenario {
  /** Row key, e.g. `pingpong-100`. */
  key: string;
  kind: "stream" | "pingpong" | "connect" | "idle";
  connections: number;
}

const ECHO_SCENARIOS: Scenario[] = [
  { key: "stream-1", kind: "stream", connections: 1 },
  { key: "stream-64", kind: "stream", connections: 64 },
  { key: "pingpong-1", kind: "pingpong", connections: 1 },
  { key: "pingpong-100", kind: "pingpong", connections: 100 },
  { key: `idle-${idleCount}`, kind: "idle", connections: idleCount },
];
const DAYTIME_SCENARIOS: Scenario[] = [
  { key: "connect-1", kind: "connect", connections: 1 },
  { key: "connect-32", kind: "connect", connections: 32 },
];

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

async function build(): Promise<void> {
  Deno.mkdirSync(BIN, { recursive: true });
  Deno.mkdirSync(LOGS, { recursive: true });
  for (const name of ["loadgen", "cserver", "daytime_iterative"]) {
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

interface Running {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

/** Starts a server on CPU 0, stderr to a log file; waits for `listening on`. */
async function startServer(
  name: string,
  target: Target,
  family: string,
): Promise<Running> {
  const port = freePort();
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
    env: { NO_COLOR: "1" },
  }).spawn();
  const deadline = Date.now() + 60_000; // a loaded CI machine starts slowly
  while (true) {
    let text = "";
    try {
      text = Deno.readTextFileSync(log);
    } catch {
      // Not created yet.
    }
    if (/listening on/.test(text)) break;
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
  const result = await run([
    `${BIN}/loadgen`,
    scenario.kind,
    "127.0.0.1",
    String(server.port),
    String(scenario.connections),
    last,
    String(server.pid),
  ], { cpu: 1 });
  if (result.code !== 0) {
    return { error: result.stderr.trim() || `exit ${result.code}` };
  }
  const figure: Figure = JSON.parse(result.stdout);
  // Server CPU per unit of work: what a loaded machine disturbs least.
  const cpuMs = figure.server_cpu_ms as number | undefined;
  const work = (figure.round_trips ?? figure.completed ??
    (figure.bytes as number) / 1e6) as number | undefined;
  if (cpuMs !== undefined && work) figure.cpu_us = cpuMs * 1000 / work;
  return figure;
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

function selected(servers: Record<string, Target>): number {
  return Object.keys(servers).filter((name) => !only || only.includes(name))
    .length;
}

// TLS: ours --tls against Deno.listenTls and Node's tls (bench/tls.ts).
const tls = new TlsBench({
  root: ROOT,
  results: RESULTS,
  seconds,
  only,
  run,
  startServer,
  step: (what) => progress.step(what),
});

const progress = new Progress(
  rounds * (selected(ECHO_SERVERS) * ECHO_SCENARIOS.length +
    selected(DAYTIME_SERVERS) * DAYTIME_SCENARIOS.length + tls.measurements),
);

/** results[scenario][server] = figures of each round. */
const results: Record<string, Record<string, Figure[]>> = {};

async function runFamily(
  family: string,
  servers: Record<string, Target>,
  scenarios: Scenario[],
): Promise<void> {
  for (const [name, target] of Object.entries(servers)) {
    if (only && !only.includes(name)) continue;
    let server: Running;
    try {
      server = await startServer(name, target, family);
    } catch (error) {
      console.error(`bench: ${(error as Error).message}`);
      continue;
    }
    try {
      for (const scenario of scenarios) {
        progress.step(`${name} ${scenario.key}`);
        const figure = await measure(scenario, server);
        if (figure.error) {
          console.error(`bench: ${name} ${scenario.key}: ${figure.error}`);
        }
        ((results[scenario.key] ??= {})[name] ??= []).push(figure);
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

function median(figures: Figure[] | undefined, metric: string): number | null {
  const values = (figures ?? [])
    .map((f) => f[metric])
    .filter((v): v is number => typeof v === "number")
    .sort((a, b) => a - b);
  if (values.length === 0) return null;
  return values[Math.floor(values.length / 2)];
}

function verdict(
  ratio: number | null,
  target: number | undefined,
  higherIsBetter: boolean,
): string {
  if (ratio === null || target === undefined) return "";
  // A few hundred idle connections move RSS less than the GC does: a
  // negative or zero figure is noise, not a result to judge.
  if (!(ratio > 0)) return "noise (too small to judge)";
  const met = higherIsBetter ? ratio >= target : ratio <= target;
  return `${met ? "met" : "MISSED"} (${higherIsBetter ? ">=" : "<="}${target})`;
}

function format(value: number | null): string {
  if (value === null) return "-";
  if (value >= 100) return Math.round(value).toString();
  return value.toFixed(1);
}

function report(): Record<string, unknown>[] {
  const table: Record<string, unknown>[] = [];
  const lines: string[][] = [[
    "scenario",
    "unit",
    "ours",
    "2 workers",
    "C epoll",
    "C iter.",
    "Node",
    "ours/C",
    "ours/Node",
    "target vs C",
    "target vs Node",
  ]];
  for (const row of ROWS) {
    const figures = results[row.scenario] ?? {};
    const value = (name: string) => median(figures[name], row.metric);
    const ourValue = value("ours");
    const ref = value(row.reference);
    const node = value("node");
    const vsC = ourValue !== null && ref ? ourValue / ref : null;
    const vsNode = ourValue !== null && node ? ourValue / node : null;
    const entry = {
      scenario: row.scenario,
      metric: row.metric,
      unit: row.unit,
      reference: row.reference,
      ours: ourValue,
      ours_2_workers: value("ours-2w"),
      c_epoll: value("c"),
      c_iterative: value("c-iterative"),
      node,
      ours_vs_c: vsC,
      ours_vs_node: vsNode,
      target_vs_c: verdict(vsC, row.targetVsC, row.higherIsBetter),
      target_vs_node: verdict(vsNode, row.targetVsNode, row.higherIsBetter),
    };
    table.push(entry);
    lines.push([
      row.scenario,
      row.unit,
      format(ourValue),
      format(entry.ours_2_workers),
      format(entry.c_epoll),
      format(entry.c_iterative),
      format(node),
      vsC === null ? "-" : vsC.toFixed(2),
      vsNode === null ? "-" : vsNode.toFixed(2),
      entry.target_vs_c,
      entry.target_vs_node,
    ]);
  }
  const widths = lines[0].map((_, i) =>
    Math.max(...lines.map((line) => line[i].length))
  );
  for (const line of lines) {
    console.log(
      line.map((cell, i) =>
        i < 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])
      )
        .join("  ").trimEnd(),
    );
  }
  console.log(
    "ours/C compares with C epoll, except connect rows: the seed's iterative C server.",
  );
  console.log(
    "CPU rows: the server's CPU time (all threads) per unit of work; lower is better, and a loaded machine moves it least.",
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
  console.log(
    `bench: ${
      quick ? "quick, " : ""
    }${rounds} round(s), ${seconds} s a measurement, ${idleCount} idle connections; load average ${loadBefore}; ${navigator.hardwareConcurrency} CPUs`,
  );
  for (let round = 0; round < rounds; round++) {
    await runFamily("echo", ECHO_SERVERS, ECHO_SCENARIOS);
    await runFamily("daytime", DAYTIME_SERVERS, DAYTIME_SCENARIOS);
    await tls.round();
  }
  await progress.stop();
  const loadAfter = loadAverage();
  const table = report();
  const tlsTable = tls.report();
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
    raw: results,
    tls: { table: tlsTable, raw: tls.results },
  };
  Deno.writeTextFileSync(
    `${RESULTS}/latest.json`,
    JSON.stringify(json, null, 2) + "\n",
  );
  console.log("bench: wrote bench/results/latest.json");
  // A scenario that failed (a wrong byte, a refused connection) fails the
  // run; slow numbers never do.
  const failed = tls.failed ||
    Object.values(results).some((servers) =>
      Object.values(servers).some((figures) => figures.some((f) => f.error))
    );
  Deno.exit(failed ? 1 : 0);
}
