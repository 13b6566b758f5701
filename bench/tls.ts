/**
 * The TLS part of `deno task bench`: `servers/echo.ts --tls` against what
 * the runtime's own TLS does (a minimal `Deno.listenTls` echo,
 * `bench/tls_echo_deno.ts`) and Node's `tls` echo
 * (`bench/node_tls_server.mjs`), in the same run, each server pinned to
 * CPU 0 and the TLS load generator (`bench/tls_loadgen.mjs`, Node) to
 * CPU 1. Certificates: a P-256 CA and server certificate made with
 * openssl in `bench/results/tls/`.
 *
 * @module
 */

/** One measurement: what the load generator printed. */
type Figure = Record<string, number | string | boolean>;

interface Target {
  /** Command line; `{PORT}` is replaced. */
  command: string[];
  /** Shown in the table. */
  label: string;
}

interface Scenario {
  key: string;
  kind: "stream" | "pingpong";
  connections: number;
}

/** What bench.ts lends this part. */
export interface TlsBenchContext {
  root: string;
  results: string;
  seconds: number;
  only?: string[];
  run(
    command: string[],
    options?: { cpu?: number },
  ): Promise<{ code: number; stdout: string; stderr: string }>;
  startServer(
    name: string,
    target: Target,
    family: string,
  ): Promise<{ pid: number; port: number; stop(): Promise<void> }>;
  step(what: string): void;
}

const SCENARIOS: Scenario[] = [
  { key: "tls-stream-8", kind: "stream", connections: 8 },
  { key: "tls-pingpong-32", kind: "pingpong", connections: 32 },
];

interface Row {
  scenario: string;
  metric: string;
  unit: string;
  higherIsBetter: boolean;
  /** Ours / minimal Deno.listenTls must be at least this. */
  targetVsMinimal?: number;
  /** Ours / Node must be at least this. */
  targetVsNode?: number;
}

const ROWS: Row[] = [
  {
    scenario: "tls-stream-8",
    metric: "mb_per_s",
    unit: "MB/s",
    higherIsBetter: true,
    targetVsMinimal: 0.85,
    targetVsNode: 1.0,
  },
  {
    scenario: "tls-stream-8",
    metric: "cpu_us",
    unit: "CPU µs/MB",
    higherIsBetter: false,
  },
  {
    scenario: "tls-pingpong-32",
    metric: "per_s",
    unit: "trips/s",
    higherIsBetter: true,
    targetVsMinimal: 0.85,
    targetVsNode: 1.0,
  },
  {
    scenario: "tls-pingpong-32",
    metric: "p50_us",
    unit: "p50 µs",
    higherIsBetter: false,
  },
  {
    scenario: "tls-pingpong-32",
    metric: "cpu_us",
    unit: "CPU µs/trip",
    higherIsBetter: false,
  },
];

/** The TLS servers and scenarios, one round at a time, and their table. */
export class TlsBench {
  readonly #context: TlsBenchContext;
  readonly #servers: Record<string, Target>;
  readonly #dir: string;
  #made = false;
  /** results[scenario][server] = figures of each round. */
  readonly results: Record<string, Record<string, Figure[]>> = {};

  constructor(context: TlsBenchContext) {
    this.#context = context;
    const dir = this.#dir = `${context.results}/tls`;
    const cert = `${dir}/cert.pem`;
    const key = `${dir}/key.pem`;
    const deno = (script: string, args: string[]) => [
      Deno.execPath(),
      "run",
      "--quiet",
      "--allow-net=127.0.0.1:{PORT}",
      `--allow-read=${cert},${key}`,
      script,
      ...args,
    ];
    // Named apart from the plain servers: `--only tls-ours,tls-minimal,tls-node`
    // runs this part alone.
    const servers: Record<string, Target> = {
      "tls-ours": {
        label: "ours (servers/echo.ts --tls)",
        command: deno("servers/echo.ts", [
          "--hostname",
          "127.0.0.1",
          "--port",
          "{PORT}",
          "--tls",
          "--cert",
          cert,
          "--key",
          key,
        ]),
      },
      "tls-minimal": {
        label: "minimal Deno.listenTls",
        command: deno("bench/tls_echo_deno.ts", ["{PORT}", cert, key]),
      },
      "tls-node": {
        label: "Node tls",
        command: [
          "node",
          `${context.root}bench/node_tls_server.mjs`,
          "{PORT}",
          cert,
          key,
        ],
      },
    };
    this.#servers = Object.fromEntries(
      Object.entries(servers).filter(([name]) =>
        !context.only || context.only.includes(name)
      ),
    );
  }

  /** Measurements a round takes. */
  get measurements(): number {
    return Object.keys(this.#servers).length * SCENARIOS.length;
  }

  /** A P-256 CA and a certificate it signed for 127.0.0.1 and localhost. */
  async #makeCertificates(): Promise<void> {
    if (this.#made) return;
    const dir = this.#dir;
    Deno.mkdirSync(dir, { recursive: true });
    Deno.writeTextFileSync(
      `${dir}/server.ext`,
      "subjectAltName=DNS:localhost,IP:127.0.0.1\n" +
        "basicConstraints=critical,CA:FALSE\n" +
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    for (
      const args of [
        ["req", "-x509", ...ec, "-nodes", "-days", "2", "-keyout"]
          .concat([`${dir}/ca.key`, "-out", `${dir}/ca.pem`])
          .concat(["-subj", "/CN=sockets bench CA"]),
        ["req", ...ec, "-nodes", "-keyout", `${dir}/key.pem`, "-out"]
          .concat([`${dir}/server.csr`, "-subj", "/CN=localhost"]),
        ["x509", "-req", "-in", `${dir}/server.csr`, "-days", "2", "-CA"]
          .concat([`${dir}/ca.pem`, "-CAkey", `${dir}/ca.key`])
          .concat(["-CAcreateserial", "-extfile", `${dir}/server.ext`])
          .concat(["-out", `${dir}/cert.pem`]),
      ]
    ) {
      const result = await this.#context.run(["openssl", ...args]);
      if (result.code !== 0) {
        throw new Error(`openssl ${args[0]} failed:\n${result.stderr}`);
      }
    }
    this.#made = true;
  }

  /** Every server once, each through every scenario. */
  async round(): Promise<void> {
    const context = this.#context;
    if (Object.keys(this.#servers).length === 0) return;
    await this.#makeCertificates();
    for (const [name, target] of Object.entries(this.#servers)) {
      let server;
      try {
        server = await context.startServer(name, target, "tls");
      } catch (error) {
        console.error(`bench: ${(error as Error).message}`);
        continue;
      }
      try {
        for (const scenario of SCENARIOS) {
          context.step(`${name} ${scenario.key}`);
          const figure = await this.#measure(scenario, server);
          if (figure.error) {
            console.error(`bench: ${name} ${scenario.key}: ${figure.error}`);
          }
          ((this.results[scenario.key] ??= {})[name] ??= []).push(figure);
        }
      } finally {
        await server.stop();
      }
    }
  }

  async #measure(
    scenario: Scenario,
    server: { pid: number; port: number },
  ): Promise<Figure> {
    const result = await this.#context.run([
      "node",
      `${this.#context.root}bench/tls_loadgen.mjs`,
      scenario.kind,
      String(server.port),
      String(scenario.connections),
      String(this.#context.seconds),
      `${this.#dir}/ca.pem`,
      String(server.pid),
    ], { cpu: 1 });
    if (result.code !== 0) {
      return { error: result.stderr.trim() || `exit ${result.code}` };
    }
    const figure: Figure = JSON.parse(result.stdout);
    const cpuMs = figure.server_cpu_ms as number | undefined;
    const work = (figure.round_trips ??
      (figure.bytes as number) / 1e6) as number | undefined;
    if (cpuMs !== undefined && work) figure.cpu_us = cpuMs * 1000 / work;
    return figure;
  }

  /** Whether a measurement failed (a wrong byte, a refused connection). */
  get failed(): boolean {
    return Object.values(this.results).some((servers) =>
      Object.values(servers).some((figures) => figures.some((f) => f.error))
    );
  }

  /** Prints the table of medians and ratios; returns it for the JSON. */
  report(): Record<string, unknown>[] {
    const table: Record<string, unknown>[] = [];
    const lines: string[][] = [[
      "TLS scenario",
      "unit",
      "ours",
      "Deno.listenTls",
      "Node tls",
      "ours/Deno",
      "ours/Node",
      "target vs Deno",
      "target vs Node",
    ]];
    for (const row of ROWS) {
      const figures = this.results[row.scenario] ?? {};
      const value = (name: string) => median(figures[name], row.metric);
      const ours = value("tls-ours");
      const minimal = value("tls-minimal");
      const node = value("tls-node");
      const vsMinimal = ours !== null && minimal ? ours / minimal : null;
      const vsNode = ours !== null && node ? ours / node : null;
      const entry = {
        scenario: row.scenario,
        metric: row.metric,
        unit: row.unit,
        ours,
        minimal_deno_listen_tls: minimal,
        node_tls: node,
        ours_vs_minimal: vsMinimal,
        ours_vs_node: vsNode,
        target_vs_minimal: verdict(vsMinimal, row.targetVsMinimal),
        target_vs_node: verdict(vsNode, row.targetVsNode),
      };
      table.push(entry);
      lines.push([
        row.scenario,
        row.unit,
        format(ours),
        format(minimal),
        format(node),
        vsMinimal === null ? "-" : vsMinimal.toFixed(2),
        vsNode === null ? "-" : vsNode.toFixed(2),
        entry.target_vs_minimal,
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
        ).join("  ").trimEnd(),
      );
    }
    console.log(
      "TLS rows: P-256 certificate, Node's TLS client as load generator; ours/Deno compares with a bare Deno.listenTls echo loop.",
    );
    return table;
  }
}

function median(figures: Figure[] | undefined, metric: string): number | null {
  const values = (figures ?? [])
    .map((f) => f[metric])
    .filter((v): v is number => typeof v === "number")
    .sort((a, b) => a - b);
  if (values.length === 0) return null;
  return values[Math.floor(values.length / 2)];
}

function verdict(ratio: number | null, target: number | undefined): string {
  if (ratio === null || target === undefined) return "";
  return `${ratio >= target ? "met" : "MISSED"} (>=${target})`;
}

function format(value: number | null): string {
  if (value === null) return "-";
  if (value >= 100) return Math.round(value).toString();
  return value.toFixed(1);
}
