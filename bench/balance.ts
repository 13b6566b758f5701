/**
 * The balancing part of `deno task bench` (`--family balance`): forwarders
 * in front of four C echo targets (`bench/cserver.c`, on CPU 1 with the
 * load generator), each forwarder alone on CPU 0:
 *
 * - `bal-ours`: `servers/forward.ts` with the four targets (`roundrobin`,
 *   passive health only);
 * - `bal-haproxy`: haproxy, one thread, `balance roundrobin`, `server ...
 *   check inter 1s`, `retries 2` and `option redispatch`;
 * - `bal-nginx`: nginx's `stream` module, one process (`master_process
 *   off`, so its CPU is the PID's), an `upstream` of the four
 *   (Debian: `nginx` and `libnginx-mod-stream`);
 * - `bal-minimal`: what the runtime allows, `bench/minimal_forward.ts`
 *   with the four ports (round robin, no limits, no logs, no health):
 *   the rates only.
 *
 * Rates: ping-pong with 100 connections and short connections (connect,
 * one 64-byte round trip, close) 32 at a time, as the echo family's.
 *
 * Failover: 32 clients making short connections without a pause, in this
 * process; one target is killed; the figure is the time from the kill to
 * the last client that saw an error (a refused or reset connection, a
 * wrong echo), and how many did. A client in flight on the killed target
 * when it dies is reset (or sees its end) unless the forwarder sends its
 * request on to another target, as ours does with `--retry-unanswered`
 * (haproxy does that for HTTP only). Measured for ours with passive health
 * only, with `--check-interval 1` and with `--retry-unanswered`, for haproxy with and without
 * `check inter 1s`, and for nginx (passive: `max_fails`, and
 * `proxy_next_upstream`, its default).
 *
 * @module
 */

import {
  type Figure,
  format,
  hasCommand,
  median,
  printTable,
  type Running,
  type Target,
  verdict,
} from "./_shared.ts";

/** A forwarder or target: what this family sets of bench.ts's `Target`. */
type BalanceTarget = Pick<
  Target,
  "command" | "label" | "cpus" | "ready" | "before"
>;

interface Scenario {
  key: string;
  kind: "pingpong" | "short";
  connections: number;
}

/** What bench.ts lends this part. */
export interface BalanceBenchContext {
  root: string;
  results: string;
  /** Seconds of each failover run (the kill comes a third of the way in). */
  failoverSeconds: number;
  only?: string[];
  startServer(
    name: string,
    target: BalanceTarget,
    family: string,
  ): Promise<Running>;
  measure(scenario: Scenario, server: Running): Promise<Figure>;
  step(what: string): void;
}

const SCENARIOS: Scenario[] = [
  { key: "bal-pingpong-100", kind: "pingpong", connections: 100 },
  { key: "bal-short-32", kind: "short", connections: 32 },
];

/** The targets a forwarder spreads over. */
const TARGETS = 4;

/** The forwarders whose rates are measured, in the table's order. */
const RATE_FORWARDERS = ["bal-ours", "bal-haproxy", "bal-nginx", "bal-minimal"];

/** The failover runs: a forwarder, with or without active checks. */
const FAILOVER_RUNS = [
  { key: "bal-ours", label: "ours, passive only" },
  { key: "bal-ours-check", label: "ours --check-interval 1" },
  { key: "bal-ours-retry", label: "ours --retry-unanswered" },
  { key: "bal-haproxy-passive", label: "haproxy, no check" },
  { key: "bal-haproxy", label: "haproxy check inter 1s" },
  { key: "bal-nginx", label: "nginx (passive)" },
];

interface Row {
  scenario: string;
  metric: string;
  unit: string;
  higherIsBetter: boolean;
  /** Ours / haproxy must be at least (lower-is-better: at most) this. */
  targetVsHaproxy?: number;
  /** Ours / nginx must be at least this. */
  targetVsNginx?: number;
}

const ROWS: Row[] = [
  {
    scenario: "bal-pingpong-100",
    metric: "per_s",
    unit: "trips/s",
    higherIsBetter: true,
    targetVsHaproxy: 0.8,
    targetVsNginx: 1.0,
  },
  {
    scenario: "bal-pingpong-100",
    metric: "cpu_us",
    unit: "CPU µs/trip",
    higherIsBetter: false,
  },
  {
    scenario: "bal-short-32",
    metric: "per_s",
    unit: "conn/s",
    higherIsBetter: true,
    targetVsHaproxy: 0.8,
    targetVsNginx: 1.0,
  },
  {
    scenario: "bal-short-32",
    metric: "cpu_us",
    unit: "CPU µs/conn",
    higherIsBetter: false,
  },
];

/** Where Debian's `libnginx-mod-stream` puts the module. */
const NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so";

function nginxMissing(): string | undefined {
  if (!hasCommand("nginx")) return "nginx is not installed";
  try {
    Deno.statSync(NGINX_STREAM_MODULE);
  } catch {
    return `${NGINX_STREAM_MODULE} is missing (Debian: libnginx-mod-stream)`;
  }
}

/** One client making short connections: connect, 64 bytes each way, close. */
async function shortConnection(port: number, message: Uint8Array) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    let written = 0;
    while (written < message.length) {
      written += await conn.write(message.subarray(written));
    }
    const reply = new Uint8Array(message.length);
    let got = 0;
    while (got < reply.length) {
      const n = await conn.read(reply.subarray(got));
      if (n === null) throw new Error("closed before the echo");
      got += n;
    }
    if (reply.some((byte, i) => byte !== message[i])) {
      throw new Error("a wrong echo");
    }
  } finally {
    conn.close();
  }
}

/** The balancing forwarders, rates and failover, one round at a time. */
export class BalanceBench {
  readonly #context: BalanceBenchContext;
  readonly #dir: string;
  /** results[scenario][forwarder] = figures of each round. */
  readonly results: Record<string, Record<string, Figure[]>> = {};
  /** A failed measurement of ours (not a peer's): fails the run. */
  failed = false;

  constructor(context: BalanceBenchContext) {
    this.#context = context;
    this.#dir = `${context.results}/balance`;
  }

  #selected(name: string): boolean {
    const only = this.#context.only;
    return !only || only.includes(name) || only.includes("balance");
  }

  /** Measurements a round takes. */
  get measurements(): number {
    const rates = RATE_FORWARDERS
      .filter((name) => this.#selected(name)).length * SCENARIOS.length;
    const failovers =
      FAILOVER_RUNS.filter((run) =>
        this.#selected(run.key.replace(/-(check|passive|retry)$/, ""))
      ).length;
    return rates + failovers;
  }

  /** The forwarders in front of `ports`, by name. */
  #forwarders(
    ports: number[],
  ): Record<string, BalanceTarget & { missing?: string }> {
    const targets = ports.map((port) => `127.0.0.1:${port}`);
    const ours = (extra: string[]): BalanceTarget => ({
      label: "ours (servers/forward.ts)",
      command: [
        Deno.execPath(),
        "run",
        "--quiet",
        `--allow-net=127.0.0.1:{PORT},${targets.join(",")}`,
        "servers/forward.ts",
        "--max-connections",
        "2000",
        // The load generator is one host: lift the per-source limit.
        "--per-source",
        "0",
        ...extra,
        "tcp://127.0.0.1:{PORT}",
        ...targets,
      ],
    });
    const haproxy = (
      check: boolean,
    ): BalanceTarget & { missing?: string } => {
      const config = `${this.#dir}/haproxy${check ? "" : "-passive"}.cfg`;
      return {
        label: `haproxy (nbthread 1${check ? ", check inter 1s" : ""})`,
        command: ["haproxy", "-db", "-f", config],
        ready: "connect",
        missing: hasCommand("haproxy") ? undefined : "haproxy is not installed",
        before: (port) =>
          Deno.writeTextFileSync(
            config,
            `global
  nbthread 1
  maxconn 2000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
  retries 2
  option redispatch
listen balanced
  bind 127.0.0.1:${port}
  balance roundrobin
${
              targets.map((target, i) =>
                `  server s${i} ${target}${check ? " check inter 1s" : ""}\n`
              ).join("")
            }`,
          ),
      };
    };
    const nginxConfig = `${this.#dir}/nginx.conf`;
    return {
      "bal-minimal": {
        label: "minimal Deno (bench/minimal_forward.ts)",
        command: [
          Deno.execPath(),
          "run",
          "--quiet",
          `--allow-net=127.0.0.1:{PORT},${targets.join(",")}`,
          "bench/minimal_forward.ts",
          "{PORT}",
          ...ports.map(String),
        ],
      },
      "bal-ours": ours([]),
      "bal-ours-check": ours(["--check-interval", "1"]),
      "bal-ours-retry": ours(["--retry-unanswered"]),
      "bal-haproxy": haproxy(true),
      "bal-haproxy-passive": haproxy(false),
      "bal-nginx": {
        label: "nginx stream (one process)",
        command: ["nginx", "-p", `${this.#dir}/`, "-c", nginxConfig],
        ready: "connect",
        missing: nginxMissing(),
        before: (port) =>
          Deno.writeTextFileSync(
            nginxConfig,
            `load_module ${NGINX_STREAM_MODULE};
worker_processes 1;
master_process off;
daemon off;
pid ${this.#dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
stream {
  upstream balanced {
${targets.map((target) => `    server ${target};\n`).join("")}  }
  server {
    listen 127.0.0.1:${port};
    proxy_pass balanced;
    proxy_connect_timeout 5s;
  }
}
`,
          ),
      },
    };
  }

  /** Starts the four C echo targets on CPU 1. */
  async #startTargets(): Promise<Running[]> {
    const started: Running[] = [];
    try {
      for (let i = 0; i < TARGETS; i++) {
        started.push(
          await this.#context.startServer(`bal-target-${i}`, {
            label: "C epoll echo (a target)",
            command: [`${this.#context.results}/bin/cserver`, "echo", "{PORT}"],
            cpus: "1",
          }, "balance"),
        );
      }
    } catch (error) {
      await Promise.all(started.map((target) => target.stop()));
      throw error;
    }
    return started;
  }

  /** Rates, then failover, for every selected forwarder. */
  async round(): Promise<void> {
    if (this.measurements === 0) return;
    Deno.mkdirSync(this.#dir, { recursive: true });
    await this.#rates();
    for (const run of FAILOVER_RUNS) {
      if (!this.#selected(run.key.replace(/-(check|passive|retry)$/, ""))) {
        continue;
      }
      await this.#failover(run.key);
    }
  }

  async #rates(): Promise<void> {
    const context = this.#context;
    let targets: Running[];
    try {
      targets = await this.#startTargets();
    } catch (error) {
      console.error(`bench: balance: ${(error as Error).message}`);
      return;
    }
    try {
      const forwarders = this.#forwarders(targets.map((t) => t.port));
      for (const name of RATE_FORWARDERS) {
        if (!this.#selected(name)) continue;
        const forwarder = forwarders[name];
        if (forwarder.missing) {
          console.error(`bench: ${name} skipped: ${forwarder.missing}`);
          for (const scenario of SCENARIOS) {
            context.step(`${name} ${scenario.key} skipped`);
          }
          continue;
        }
        let server: Running;
        try {
          server = await context.startServer(name, forwarder, "balance");
        } catch (error) {
          console.error(`bench: ${(error as Error).message}`);
          continue;
        }
        try {
          for (const scenario of SCENARIOS) {
            context.step(`${name} ${scenario.key}`);
            const figure = await context.measure(scenario, server);
            if (figure.error) {
              console.error(`bench: ${name} ${scenario.key}: ${figure.error}`);
              if (name === "bal-ours") this.failed = true;
            }
            ((this.results[scenario.key] ??= {})[name] ??= []).push(figure);
          }
        } finally {
          await server.stop();
        }
      }
    } finally {
      await Promise.all(targets.map((target) => target.stop()));
    }
  }

  /**
   * Short connections, 32 at a time, through forwarder `name` in front of
   * four fresh targets; one target killed a third of the way in. Records
   * how many clients failed and when the last one did, after the kill.
   */
  async #failover(name: string): Promise<void> {
    const context = this.#context;
    context.step(`${name} failover`);
    let targets: Running[];
    try {
      targets = await this.#startTargets();
    } catch (error) {
      console.error(`bench: balance: ${(error as Error).message}`);
      return;
    }
    const forwarder = this.#forwarders(targets.map((t) => t.port))[name];
    let server: Running | undefined;
    try {
      if (forwarder.missing) {
        console.error(`bench: ${name} failover skipped: ${forwarder.missing}`);
        return;
      }
      server = await context.startServer(name, forwarder, "balance");
      const message = new Uint8Array(64).map((_, i) => i);
      const runMs = context.failoverSeconds * 1000;
      const began = performance.now();
      let killedAt = Infinity;
      let before = 0;
      const errorsAfter: number[] = [];
      let completed = 0;
      const killing = (async () => {
        await new Promise((resolve) => setTimeout(resolve, runMs / 3));
        killedAt = performance.now();
        await targets[1].stop();
      })();
      await Promise.all(Array.from({ length: 32 }, async () => {
        while (performance.now() - began < runMs) {
          const started = performance.now();
          try {
            await shortConnection(server!.port, message);
            completed++;
          } catch {
            // A client that began before the kill and failed after it
            // was in flight on the killed target, or was sent there.
            if (started < killedAt && performance.now() < killedAt) before++;
            else errorsAfter.push(performance.now() - killedAt);
          }
        }
      }));
      await killing;
      const figure: Figure = {
        completed,
        errors_before_kill: before,
        errors_after_kill: errorsAfter.length,
        last_error_ms: errorsAfter.length ? Math.max(...errorsAfter) : 0,
      };
      if (before > 0 && name.startsWith("bal-ours")) {
        console.error(
          `bench: ${name} failover: ${before} errors before the kill`,
        );
        this.failed = true;
      }
      ((this.results["bal-failover"] ??= {})[name] ??= []).push(figure);
    } catch (error) {
      console.error(`bench: ${name} failover: ${(error as Error).message}`);
      if (name.startsWith("bal-ours")) this.failed = true;
    } finally {
      await server?.stop();
      await Promise.all(targets.map((target) => target.stop()));
    }
  }

  /** The rates table and the failover table (printed, and returned for the JSON). */
  report(): Record<string, unknown>[] {
    const table: Record<string, unknown>[] = [];
    if (ROWS.some((row) => this.results[row.scenario])) {
      const lines: string[][] = [[
        "balancing over 4 C echo",
        "unit",
        "ours",
        "haproxy",
        "nginx",
        "minimal Deno",
        "ours/haproxy",
        "ours/nginx",
        "ours/minimal",
        "target",
      ]];
      for (const row of ROWS) {
        const figures = this.results[row.scenario] ?? {};
        const value = (name: string) => median(figures[name], row.metric);
        const ours = value("bal-ours");
        const haproxy = value("bal-haproxy");
        const nginx = value("bal-nginx");
        const minimal = value("bal-minimal");
        const ratio = (other: number | null) =>
          ours !== null && other ? ours / other : null;
        const verdicts = [
          verdict(ratio(haproxy), row.targetVsHaproxy, row.higherIsBetter),
          verdict(ratio(nginx), row.targetVsNginx, row.higherIsBetter),
        ].map((v, i) => v && `${["vs haproxy", "vs nginx"][i]} ${v}`)
          .filter(Boolean).join("; ");
        table.push({
          scenario: row.scenario,
          metric: row.metric,
          unit: row.unit,
          ours,
          haproxy,
          nginx,
          minimal_deno: minimal,
          ours_vs_haproxy: ratio(haproxy),
          ours_vs_nginx: ratio(nginx),
          ours_vs_minimal: ratio(minimal),
          target: verdicts,
        });
        lines.push([
          row.scenario,
          row.unit,
          format(ours),
          format(haproxy),
          format(nginx),
          format(minimal),
          ratio(haproxy)?.toFixed(2) ?? "-",
          ratio(nginx)?.toFixed(2) ?? "-",
          ratio(minimal)?.toFixed(2) ?? "-",
          verdicts,
        ]);
      }
      printWordsAndFigures(lines);
    }
    const failover = this.results["bal-failover"];
    if (failover) {
      const lines: string[][] = [[
        "failover (one of 4 killed)",
        "clients",
        "errors at the kill",
        "errors after",
        "last error after kill",
      ]];
      for (const run of FAILOVER_RUNS) {
        const figures = failover[run.key];
        if (!figures) continue;
        const value = (metric: string) => median(figures, metric);
        table.push({
          scenario: "bal-failover",
          forwarder: run.key,
          label: run.label,
          completed: value("completed"),
          errors_before_kill: value("errors_before_kill"),
          errors_after_kill: value("errors_after_kill"),
          last_error_ms: value("last_error_ms"),
        });
        lines.push([
          run.label,
          format(value("completed")),
          format(value("errors_before_kill")),
          format(value("errors_after_kill")),
          `${format(value("last_error_ms"))} ms`,
        ]);
      }
      printWordsAndFigures(lines);
    }
    if (table.length > 0) {
      console.log(
        "Forwarders on CPU 0, the four C echo targets and the load generator on CPU 1. Minimal Deno: bench/minimal_forward.ts taking the four in turn, no limits, logs or health (what the runtime allows). Failover: 32 clients of short connections in the bench process; 'errors after' counts clients that failed after the kill (those in flight on the killed target included).",
      );
    }
    return table;
  }
}

/** Prints `lines` in columns: figures to the right, words (the first and a `target` column) to the left. */
function printWordsAndFigures(lines: string[][]): void {
  console.log("");
  printTable(lines, (i) => i === 0 || lines[0][i] === "target");
}
