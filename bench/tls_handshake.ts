/**
 * The TLS handshake family of `deno task bench` (`--family handshake`):
 * full handshakes a second, each connection a new client doing connect,
 * a full handshake (no session resumption: no cache, no tickets), one
 * byte each way and close, 1 and 8 at a time, with and without a client
 * certificate. The load generator is C with OpenSSL
 * (`bench/tls_handshake_loadgen.c`, needs libssl-dev), pinned to CPU 1;
 * each server to CPU 0:
 *
 * - ours, `servers/echo.ts --tls` (and `--client-ca` for the rows with a
 *   client certificate, once the server has that flag), and
 *   `servers/forward.ts --tls` in front of the C echo server on CPU 1, as
 *   haproxy and stunnel run;
 * - a minimal `Deno.listenTls` echo (`bench/tls_echo_deno.ts`; it cannot
 *   ask for client certificates);
 * - Node's `tls` echo (`bench/node_tls_server.mjs`; `requestCert`);
 * - haproxy on one thread (`nbthread 1`, `bind ssl crt`; `ca-file ...
 *   verify required`) and stunnel (`TCP_NODELAY` both ways; `verifyChain`,
 *   `requireCert`), each terminating TLS in front of the C echo server on
 *   CPU 1 (neither echoes by itself: their figures include a connection
 *   to it each, which costs them some).
 *
 * Certificates: P-256, a CA that signed the server's (for localhost) and
 * the client's, in `bench/results/handshake/`. Figures: handshakes a
 * second (the median of the rounds, min–max beside it) and the server's
 * CPU time per handshake (all its threads, from /proc/PID/stat).
 *
 * @module
 */

import {
  denoRun,
  makeBenchCertificates,
  oursTlsEcho,
  oursTlsForward,
} from "./tls.ts";
import {
  type FamilyContext,
  type Figure,
  format,
  loadgenFigure,
  printTable,
  type Spread,
  spread,
  type Target,
  verdict,
} from "./_shared.ts";

/** What bench.ts lends this family. */
export interface HandshakeBenchContext extends FamilyContext {
  /** The load generator, or why it could not be built. */
  loadgen: { path: string } | { missing: string };
}

interface Scenario {
  key: string;
  /** Clients at a time. */
  connections: number;
  /** Each client presents a certificate the server must verify. */
  clientCertificate: boolean;
}

const SCENARIOS: Scenario[] = [
  { key: "hs-1", connections: 1, clientCertificate: false },
  { key: "hs-8", connections: 8, clientCertificate: false },
  { key: "hs-mtls-1", connections: 1, clientCertificate: true },
  { key: "hs-mtls-8", connections: 8, clientCertificate: true },
];

/** A server of the family, with and without client certificates. */
interface Server {
  /** The server without client certificates. */
  plain: Target;
  /** The server verifying client certificates; absent when it cannot. */
  verifying?: Target;
  /** Not ours: its failures are reported, never fail the run. */
  peer?: boolean;
  /** A program it needs (a peer that may be missing). */
  needs?: string;
  /** Needs the C echo server behind it. */
  echo?: boolean;
}

/** The servers' names, in the table's order. */
const NAMES = [
  "hs-ours",
  "hs-fwd-ours",
  "hs-minimal",
  "hs-node",
  "hs-haproxy",
  "hs-stunnel",
];

interface Row {
  scenario: string;
  metric: string;
  unit: string;
  /** Ours / Node must be at least this. */
  targetVsNode?: number;
  /** Ours / haproxy must be at least this. */
  targetVsHaproxy?: number;
}

const ROWS: Row[] = SCENARIOS.flatMap(({ key, clientCertificate }) => [
  {
    scenario: key,
    metric: "per_s",
    unit: "handshakes/s",
    ...(!clientCertificate && { targetVsNode: 1.0, targetVsHaproxy: 0.8 }),
  },
  { scenario: key, metric: "cpu_us", unit: "server CPU µs/hs" },
]);

/** The handshake family, one round at a time, and its table. */
export class HandshakeBench {
  readonly #context: HandshakeBenchContext;
  readonly #dir: string;
  readonly #servers: Record<string, Server>;
  /** The C echo server's port while one runs (haproxy and stunnel forward to it). */
  #echoPort = 0;
  #made = false;
  /** results[scenario][server] = figures of each round. */
  readonly results: Record<string, Record<string, Figure[]>> = {};

  constructor(context: HandshakeBenchContext) {
    this.#context = context;
    const dir = this.#dir = `${context.results}/handshake`;
    const servers = this.#define(dir);
    this.#servers = Object.fromEntries(
      Object.entries(servers).filter(([name]) =>
        !context.only || context.only.includes(name)
      ),
    );
  }

  #define(dir: string): Record<string, Server> {
    const context = this.#context;
    const cert = `${dir}/cert.pem`;
    const key = `${dir}/key.pem`;
    const ca = `${dir}/ca.pem`;
    const ours = (clientCa: boolean): Target =>
      oursTlsEcho(cert, key, clientCa ? ca : undefined);
    const forward = (clientCa: boolean): Target =>
      oursTlsForward(cert, key, "127.0.0.1:{ECHO}", clientCa ? ca : undefined);
    const node = (verify: boolean): Target => ({
      label: "Node tls",
      command: [
        "node",
        `${context.root}bench/node_tls_server.mjs`,
        "{PORT}",
        cert,
        key,
        ...(verify ? [ca] : []),
      ],
    });
    const haproxy = (verify: boolean): Target => {
      const config = `${dir}/haproxy${verify ? "-verify" : ""}.cfg`;
      return {
        label: "haproxy (nbthread 1)",
        command: ["env", "FWD_PORT={PORT}", "haproxy", "-db", "-f", config],
        ready: "connect",
        before: () =>
          Deno.writeTextFileSync(
            config,
            context.haproxyConfig(
              this.#echoPort,
              `ssl crt ${dir}/cert+key.pem${
                verify ? ` ca-file ${ca} verify required` : ""
              }`,
            ),
          ),
      };
    };
    const stunnel = (verify: boolean): Target => {
      const config = `${dir}/stunnel${verify ? "-verify" : ""}.conf`;
      return {
        label: "stunnel",
        command: ["stunnel", config],
        ready: "connect",
        before: (port) =>
          Deno.writeTextFileSync(
            config,
            [
              "foreground = yes",
              "pid =",
              "socket = l:TCP_NODELAY=1",
              "socket = r:TCP_NODELAY=1",
              "[echo]",
              `accept = 127.0.0.1:${port}`,
              `connect = 127.0.0.1:${this.#echoPort}`,
              `cert = ${cert}`,
              `key = ${key}`,
              ...(verify
                ? [`CAfile = ${ca}`, "verifyChain = yes", "requireCert = yes"]
                : []),
              "",
            ].join("\n"),
          ),
      };
    };
    return {
      "hs-ours": {
        plain: ours(false),
        // With client certificates once the server takes --client-ca.
        verifying: oursTakesClientCa(context.root) ? ours(true) : undefined,
      },
      "hs-fwd-ours": {
        plain: forward(false),
        verifying: oursTakesClientCa(context.root) ? forward(true) : undefined,
        echo: true,
      },
      "hs-minimal": {
        plain: {
          label: "minimal Deno.listenTls",
          command: denoRun(
            "bench/tls_echo_deno.ts",
            "127.0.0.1:{PORT}",
            `${cert},${key}`,
            ["{PORT}", cert, key],
          ),
        },
      },
      "hs-node": { plain: node(false), verifying: node(true), peer: true },
      "hs-haproxy": {
        plain: haproxy(false),
        verifying: haproxy(true),
        peer: true,
        needs: "haproxy",
        echo: true,
      },
      "hs-stunnel": {
        plain: stunnel(false),
        verifying: stunnel(true),
        peer: true,
        needs: "stunnel",
        echo: true,
      },
    };
  }

  /** Measurements a round takes. */
  get measurements(): number {
    return Object.values(this.#servers).reduce(
      (n, server) =>
        n + SCENARIOS.filter((s) => !s.clientCertificate || server.verifying)
          .length,
      0,
    );
  }

  /** Every server once, through each scenario it can run. */
  async round(): Promise<void> {
    const context = this.#context;
    if (Object.keys(this.#servers).length === 0) return;
    if ("missing" in context.loadgen) {
      console.error(
        `bench: handshake family skipped: ${context.loadgen.missing}`,
      );
      for (let i = 0; i < this.measurements; i++) context.step("skipped");
      return;
    }
    if (!this.#made) {
      await makeBenchCertificates(context.run, this.#dir, true);
      this.#made = true;
    }
    let echo;
    if (Object.values(this.#servers).some((server) => server.echo)) {
      try {
        echo = await context.startServer("hs-echo", {
          label: "C epoll echo (behind haproxy and stunnel)",
          command: [`${context.results}/bin/cserver`, "echo", "{PORT}"],
          cpus: "1",
        }, "handshake");
        this.#echoPort = echo.port;
      } catch (error) {
        console.error(`bench: ${(error as Error).message}`);
      }
    }
    try {
      for (const [name, server] of Object.entries(this.#servers)) {
        await this.#serverRound(name, server, echo !== undefined);
      }
    } finally {
      await echo?.stop();
    }
  }

  async #serverRound(
    name: string,
    server: Server,
    echoRuns: boolean,
  ): Promise<void> {
    const context = this.#context;
    for (const verify of [false, true]) {
      const target = verify ? server.verifying : server.plain;
      const scenarios = SCENARIOS.filter((s) => s.clientCertificate === verify);
      if (!target) continue;
      const skip = (why: string) => {
        console.error(`bench: ${name} skipped: ${why}`);
        for (const scenario of scenarios) {
          context.step(`${name} ${scenario.key} skipped`);
        }
      };
      if (server.needs && !await this.#has(server.needs)) {
        skip(`${server.needs} is not installed`);
        continue;
      }
      if (server.echo && !echoRuns) {
        skip("the C echo server behind it did not start");
        continue;
      }
      let running;
      try {
        running = await context.startServer(
          verify ? `${name}-verify` : name,
          {
            ...target,
            command: target.command.map((part) =>
              part.replaceAll("{ECHO}", String(this.#echoPort))
            ),
          },
          "handshake",
        );
      } catch (error) {
        const figure = { error: (error as Error).message };
        console.error(`bench: ${figure.error}`);
        for (const scenario of scenarios) {
          context.step(`${name} ${scenario.key}`);
          this.#record(scenario.key, name, figure);
        }
        continue;
      }
      try {
        for (const scenario of scenarios) {
          context.step(`${name} ${scenario.key}`);
          const figure = await this.#measure(scenario, running);
          if (figure.error) {
            console.error(`bench: ${name} ${scenario.key}: ${figure.error}`);
          }
          this.#record(scenario.key, name, figure);
        }
      } finally {
        await running.stop();
      }
    }
  }

  #record(scenario: string, name: string, figure: Figure): void {
    if (figure.error && this.#servers[name]?.peer) figure.peer = true;
    ((this.results[scenario] ??= {})[name] ??= []).push(figure);
  }

  async #measure(
    scenario: Scenario,
    server: { pid: number; port: number },
  ): Promise<Figure> {
    const dir = this.#dir;
    const loadgen = this.#context.loadgen as { path: string };
    const result = await this.#context.run([
      loadgen.path,
      String(server.port),
      String(scenario.connections),
      String(this.#context.seconds),
      `${dir}/ca.pem`,
      String(server.pid),
      ...(scenario.clientCertificate
        ? [`${dir}/client.pem`, `${dir}/client.key`]
        : []),
    ], { cpu: 1 });
    return loadgenFigure(result, (figure) => figure.handshakes);
  }

  async #has(program: string): Promise<boolean> {
    try {
      return (await this.#context.run(["sh", "-c", `command -v ${program}`]))
        .code === 0;
    } catch {
      return false;
    }
  }

  /** Whether one of ours failed (a peer's failure is reported, not fatal). */
  get failed(): boolean {
    return Object.values(this.results).some((servers) =>
      Object.values(servers).some((figures) =>
        figures.some((f) => f.error && !f.peer)
      )
    );
  }

  /** Prints the table (median, min–max); returns it for the JSON. */
  report(): Record<string, unknown>[] {
    if (Object.keys(this.results).length === 0) return [];
    const table: Record<string, unknown>[] = [];
    const lines: string[][] = [[
      "TLS handshakes",
      "unit",
      "ours",
      "ours fwd",
      "Deno.listenTls",
      "Node tls",
      "haproxy",
      "stunnel",
      "ours/Node",
      "ours/haproxy",
      "fwd/haproxy",
      "target vs Node",
      "target vs haproxy",
    ]];
    for (const row of ROWS) {
      const figures = this.results[row.scenario] ?? {};
      const spreads = Object.fromEntries(
        NAMES.map((name) => [name, spread(figures[name], row.metric)]),
      );
      const ours = spreads["hs-ours"]?.median ?? null;
      const ratio = (name: string, of = ours) => {
        const other = spreads[name]?.median;
        return of !== null && other ? of / other : null;
      };
      const forwardVsHaproxy = ratio(
        "hs-haproxy",
        spreads["hs-fwd-ours"]?.median ?? null,
      );
      const entry = {
        scenario: row.scenario,
        metric: row.metric,
        unit: row.unit,
        ...Object.fromEntries(NAMES.map((name) => [name, spreads[name]])),
        ours_vs_node: ratio("hs-node"),
        ours_vs_haproxy: ratio("hs-haproxy"),
        forward_vs_haproxy: forwardVsHaproxy,
        target_vs_node: verdict(ratio("hs-node"), row.targetVsNode),
        target_vs_haproxy: verdict(ratio("hs-haproxy"), row.targetVsHaproxy),
      };
      table.push(entry);
      lines.push([
        row.scenario,
        row.unit,
        ...NAMES.map((name) => formatSpread(spreads[name])),
        ratio("hs-node")?.toFixed(2) ?? "-",
        ratio("hs-haproxy")?.toFixed(2) ?? "-",
        forwardVsHaproxy?.toFixed(2) ?? "-",
        entry.target_vs_node,
        entry.target_vs_haproxy,
      ]);
    }
    printTable(lines, (i) => i < 2);
    console.log(
      "hs rows: full TLS handshakes (connect, handshake, 1 byte each way, close; no resumption), 1 and 8 at a time, by a C OpenSSL client on CPU 1; servers on CPU 0; median (min-max) of the rounds. hs-mtls: the client presents a certificate the server verifies (Deno.listenTls cannot ask for one). ours fwd (servers/forward.ts --tls), haproxy and stunnel forward each connection to the C echo on CPU 1.",
    );
    if (!this.#servers["hs-ours"]?.verifying) {
      console.log(
        "ours has no --client-ca here: the hs-mtls rows are the peers' only.",
      );
    }
    return table;
  }
}

/** Whether `servers/echo.ts` takes `--client-ca` (mutual TLS) in this tree. */
function oursTakesClientCa(root: string): boolean {
  try {
    return Deno.readTextFileSync(`${root}lib/server_cli.ts`).includes(
      '"client-ca"',
    );
  } catch {
    return false;
  }
}

function formatSpread(value: Spread | null): string {
  if (value === null) return "-";
  if (value.min === value.max) return format(value.median);
  return `${format(value.median)} (${format(value.min)}-${format(value.max)})`;
}
