/**
 * The TLS part of `deno task bench`: `servers/echo.ts --tls` against what
 * the runtime's own TLS does (a minimal `Deno.listenTls` echo,
 * `bench/tls_echo_deno.ts`) and Node's `tls` echo
 * (`bench/node_tls_server.mjs`), in the same run, each server pinned to
 * CPU 0 and the TLS load generator (`bench/tls_loadgen.mjs`, Node) to
 * CPU 1. Certificates: a P-256 CA and server certificate made with
 * openssl in `bench/results/tls/`.
 *
 * The client scenario (`tls-client-100mb`, `--only tls-client`;
 * `bench/tls_client.ts`) pushes 100 MB (10 with `--quick`) from a file
 * through the minimal TLS echo on CPU 0 and back into a file, with the
 * client on CPU 1: ours, `clients/connect.ts --tls` (its TLS is the
 * forwarder's `--to-tls` too), against `socat - OPENSSL:...` with its
 * default 8 KiB buffer and with `-b 65536`. Its figures are the client's:
 * wall time of the whole command (Deno's start included) and the CPU time
 * of the client process (`times`), per MB sent. A reply that is not the
 * input byte for byte is an error, not a figure.
 *
 * The forwarder's TLS termination (`tls-fwd-*`, `--only
 * tls-fwd-ours,tls-fwd-haproxy`): `servers/forward.ts --tls` against
 * haproxy (one thread, `bind ... ssl crt`) on CPU 0, in front of the C
 * echo server on CPU 1 with the load generator, through the same
 * scenarios as the echo servers.
 *
 * @module
 */

import { makeClientInput, measureClient } from "./tls_client.ts";
import {
  type FamilyContext,
  type Figure,
  format,
  loadgenFigure,
  median,
  printTable,
  type Target,
  verdict,
} from "./_shared.ts";

interface Scenario {
  key: string;
  kind: "stream" | "pingpong";
  connections: number;
}

/** What bench.ts lends this part. */
export interface TlsBenchContext extends FamilyContext {
  /** Smaller counts (the client scenario sends 10 MB, not 100). */
  quick: boolean;
}

const SCENARIOS: Scenario[] = [
  { key: "tls-stream-8", kind: "stream", connections: 8 },
  { key: "tls-pingpong-32", kind: "pingpong", connections: 32 },
];

/** The forwarders' scenarios: the echo servers', through a forwarder. */
const FORWARD_SCENARIOS: Scenario[] = SCENARIOS.map((scenario) => ({
  ...scenario,
  key: scenario.key.replace("tls-", "tls-fwd-"),
}));

/** A TLS client of the client scenario; `{PORT}` and `{CA}` are replaced. */
interface Client {
  command: string[];
  /** Needs this program (a peer that may be missing). */
  needs?: string;
}

/** The client scenario's key and rows: by its size. */
function clientScenario(quick: boolean): string {
  return `tls-client-${quick ? 10 : 100}mb`;
}

interface Row {
  scenario: string;
  /** Shown instead of `scenario` (it names the peer). */
  label?: string;
  /** Whose figures the ours column shows. Default `tls-ours`. */
  ours?: string;
  /** Whose figures the peer column shows, if any. */
  peer?: string;
  metric: string;
  unit: string;
  higherIsBetter: boolean;
  /** Ours / minimal Deno.listenTls must be at least this. */
  targetVsMinimal?: number;
  /** Ours / Node must be at least this. */
  targetVsNode?: number;
}

function tlsRows(client: string): Row[] {
  const forward = (row: Row): Row => {
    const scenario = row.scenario.replace("tls-", "tls-fwd-");
    return {
      scenario,
      label: `${scenario} vs haproxy`,
      ours: "tls-fwd-ours",
      peer: "tls-fwd-haproxy",
      metric: row.metric,
      unit: row.unit,
      higherIsBetter: row.higherIsBetter,
    };
  };
  const clientRows = ([peer, label]: string[]): Row[] =>
    [["mb_per_s", "MB/s"], ["cpu_us", "CPU µs/MB"]].map(([metric, unit]) => ({
      scenario: client,
      label: `${client} vs ${label}`,
      peer,
      metric,
      unit,
      higherIsBetter: metric === "mb_per_s",
    }));
  return [
    ...SERVER_ROWS,
    ...SERVER_ROWS.filter((row) => row.metric !== "p50_us").map(forward),
    ...[["tls-socat", "socat"], ["tls-socat-64k", "socat -b 65536"]]
      .flatMap(clientRows),
  ];
}

const SERVER_ROWS: Row[] = [
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
  /** The forwarders `--only` keeps (their targets need the echo's port). */
  readonly #forwarders: string[];
  readonly #dir: string;
  /** The echo the client scenario's clients talk to. */
  readonly #clientEcho: Target;
  /** The client scenario's clients, unless `--only` leaves it out. */
  readonly #clients: Record<string, Client>;
  readonly #clientScenario: string;
  #made = false;
  /** results[scenario][server or client] = figures of each round. */
  readonly results: Record<string, Record<string, Figure[]>> = {};

  constructor(context: TlsBenchContext) {
    this.#context = context;
    const dir = this.#dir = `${context.results}/tls`;
    const cert = `${dir}/cert.pem`;
    const key = `${dir}/key.pem`;
    const deno = (script: string, args: string[]) =>
      denoRun(script, "127.0.0.1:{PORT}", `${cert},${key}`, args);
    // Named apart from the plain servers: `--only tls-ours,tls-minimal,tls-node`
    // runs this part alone.
    const servers: Record<string, Target> = {
      "tls-ours": oursTlsEcho(cert, key),
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
    this.#forwarders = ["tls-fwd-ours", "tls-fwd-haproxy"].filter((name) =>
      !context.only || context.only.includes(name)
    );
    this.#clientEcho = servers["tls-minimal"];
    this.#clientScenario = clientScenario(context.quick);
    const socat = (buffer: string[]): Client => ({
      // -t: after stdin's end, wait for the echo's last bytes (socat's
      // default 0.5 s is a guess, the echo's close is what ends it).
      command: ["socat", ...buffer, "-t", "30", "-"].concat(
        "OPENSSL:127.0.0.1:{PORT},cafile={CA},commonname=localhost",
      ),
      needs: "socat",
    });
    // `--only tls-client` runs the client scenario alone.
    this.#clients = context.only && !context.only.includes("tls-client")
      ? {}
      : {
        "tls-ours": {
          command: denoRun("clients/connect.ts", "127.0.0.1:{PORT}", "{CA}", [
            "--tls",
            "--ca",
            "{CA}",
            "--servername",
            "localhost",
            "127.0.0.1",
            "{PORT}",
          ]),
        },
        "tls-socat": socat([]),
        "tls-socat-64k": socat(["-b", "65536"]),
      };
  }

  /** Measurements a round takes. */
  get measurements(): number {
    return Object.keys(this.#servers).length * SCENARIOS.length +
      this.#forwarders.length * FORWARD_SCENARIOS.length +
      Object.keys(this.#clients).length;
  }

  /** A P-256 CA and a certificate it signed for 127.0.0.1 and localhost. */
  async #makeCertificates(): Promise<void> {
    if (this.#made) return;
    await makeBenchCertificates(this.#context.run, this.#dir);
    this.#made = true;
  }

  /**
   * Every server once, each through every scenario; then each forwarder;
   * then each client.
   */
  async round(): Promise<void> {
    if (
      Object.keys(this.#servers).length + this.#forwarders.length +
          Object.keys(this.#clients).length === 0
    ) return;
    await this.#makeCertificates();
    await this.#serverRound(this.#servers, SCENARIOS);
    await this.#forwardRound();
    await this.#clientRound();
  }

  async #serverRound(
    servers: Record<string, Target>,
    scenarios: Scenario[],
  ): Promise<void> {
    const context = this.#context;
    for (const [name, target] of Object.entries(servers)) {
      let server;
      try {
        server = await context.startServer(name, target, "tls");
      } catch (error) {
        console.error(`bench: ${(error as Error).message}`);
        continue;
      }
      try {
        for (const scenario of scenarios) {
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

  /** The forwarders in front of the C echo server, which runs on CPU 1. */
  async #forwardRound(): Promise<void> {
    const context = this.#context;
    if (this.#forwarders.length === 0) return;
    let echo;
    try {
      echo = await context.startServer("tls-fwd-echo", {
        label: "C epoll echo (the target)",
        command: [`${context.results}/bin/cserver`, "echo", "{PORT}"],
        cpus: "1",
      }, "tls");
    } catch (error) {
      console.error(`bench: ${(error as Error).message}`);
      return;
    }
    try {
      const dir = this.#dir;
      const target = `127.0.0.1:${echo.port}`;
      const config = `${dir}/haproxy-tls.cfg`;
      Deno.writeTextFileSync(
        config,
        context.haproxyConfig(echo.port, `ssl crt ${dir}/cert+key.pem`),
      );
      const forwarders: Record<string, Target> = {
        "tls-fwd-ours": oursTlsForward(
          `${dir}/cert.pem`,
          `${dir}/key.pem`,
          target,
        ),
        "tls-fwd-haproxy": {
          label: "haproxy (nbthread 1, bind ssl)",
          command: ["env", "FWD_PORT={PORT}", "haproxy", "-db", "-f", config],
          ready: "connect",
        },
      };
      for (const name of this.#forwarders) {
        if (name === "tls-fwd-haproxy" && !await this.#has("haproxy")) {
          console.error(`bench: ${name} skipped: haproxy is not installed`);
          for (const scenario of FORWARD_SCENARIOS) {
            context.step(`${name} ${scenario.key} skipped`);
          }
          continue;
        }
        await this.#serverRound(
          { [name]: forwarders[name] },
          FORWARD_SCENARIOS,
        );
      }
    } finally {
      await echo.stop();
    }
  }

  /** The client scenario: each client through one echo on CPU 0. */
  async #clientRound(): Promise<void> {
    const context = this.#context;
    const key = this.#clientScenario;
    if (Object.keys(this.#clients).length === 0) return;
    const bytes = (this.#context.quick ? 10 : 100) * 1e6;
    const input = makeClientInput(`${this.#dir}/client-input.bin`, bytes);
    let echo;
    try {
      echo = await context.startServer(
        "tls-client-echo",
        this.#clientEcho,
        "tls",
      );
    } catch (error) {
      console.error(`bench: ${(error as Error).message}`);
      return;
    }
    try {
      for (const [name, client] of Object.entries(this.#clients)) {
        context.step(`${name} ${key}`);
        if (client.needs && !await this.#has(client.needs)) {
          console.error(
            `bench: ${name} skipped: ${client.needs} is not installed`,
          );
          continue;
        }
        const command = client.command.map((part) =>
          part.replaceAll("{PORT}", String(echo.port))
            .replaceAll("{CA}", `${this.#dir}/ca.pem`)
        );
        const figure = await measureClient(context.run, command, {
          input,
          output: `${this.#dir}/client-output.bin`,
          bytes,
          cpu: 1,
        });
        if (figure.error) {
          console.error(`bench: ${name} ${key}: ${figure.error}`);
        }
        ((this.results[key] ??= {})[name] ??= []).push(figure);
      }
    } finally {
      await echo.stop();
    }
  }

  async #has(program: string): Promise<boolean> {
    try {
      return (await this.#context.run(["sh", "-c", `command -v ${program}`]))
        .code === 0;
    } catch {
      return false;
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
    return loadgenFigure(
      result,
      (figure) => figure.round_trips ?? (figure.bytes as number) / 1e6,
    );
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
      "peer",
      "ours/Deno",
      "ours/Node",
      "ours/peer",
      "target vs Deno",
      "target vs Node",
    ]];
    for (const row of tlsRows(this.#clientScenario)) {
      const figures = this.results[row.scenario] ?? {};
      const value = (name: string) => median(figures[name], row.metric);
      const ours = value(row.ours ?? "tls-ours");
      const minimal = value("tls-minimal");
      const node = value("tls-node");
      const peer = row.peer ? value(row.peer) : null;
      const ratio = (other: number | null) =>
        ours !== null && other ? ours / other : null;
      const entry = {
        scenario: row.label ?? row.scenario,
        metric: row.metric,
        unit: row.unit,
        ours,
        minimal_deno_listen_tls: minimal,
        node_tls: node,
        peer: row.peer,
        peer_value: peer,
        ours_vs_minimal: ratio(minimal),
        ours_vs_node: ratio(node),
        ours_vs_peer: ratio(peer),
        target_vs_minimal: verdict(ratio(minimal), row.targetVsMinimal),
        target_vs_node: verdict(ratio(node), row.targetVsNode),
      };
      table.push(entry);
      lines.push([
        entry.scenario,
        row.unit,
        format(ours),
        format(minimal),
        format(node),
        format(peer),
        ratio(minimal)?.toFixed(2) ?? "-",
        ratio(node)?.toFixed(2) ?? "-",
        ratio(peer)?.toFixed(2) ?? "-",
        entry.target_vs_minimal,
        entry.target_vs_node,
      ]);
    }
    printTable(lines, (i) => i < 2);
    console.log(
      "TLS rows: P-256 certificate, Node's TLS client as load generator; ours/Deno compares with a bare Deno.listenTls echo loop.",
    );
    console.log(
      "tls-fwd rows: servers/forward.ts --tls against haproxy's bind ssl (one thread), on CPU 0, in front of the C echo on CPU 1 with the load generator.",
    );
    console.log(
      `${this.#clientScenario}: clients/connect.ts --tls against socat OPENSSL (its default 8 KiB buffer; -b 65536), both through the minimal Deno.listenTls echo; the client's wall time (Deno's start included) and CPU.`,
    );
    const empty = this.results[this.#clientScenario] ?? {};
    const start = Object.keys(empty).map((name) => {
      const wall = median(empty[name], "empty_wall_s");
      const cpu = median(empty[name], "empty_cpu_ms");
      return wall === null || cpu === null
        ? ""
        : `${name} ${wall.toFixed(3)} s, ${cpu.toFixed(0)} ms CPU`;
    }).filter(Boolean);
    if (start.length > 0) {
      console.log(
        `Of that, start, handshake and close (the same with nothing sent): ${
          start.join("; ")
        }.`,
      );
    }
    return table;
  }
}

/**
 * Makes in `dir` a P-256 CA (`ca.pem`, `ca.key`), a server certificate it
 * signed for 127.0.0.1 and localhost (`cert.pem`, `key.pem`, and both in
 * `cert+key.pem` for haproxy's `crt`), and with `client`, a client
 * certificate it signed too (`client.pem`, `client.key`, CN bench client).
 */
export async function makeBenchCertificates(
  run: TlsBenchContext["run"],
  dir: string,
  client = false,
): Promise<void> {
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(
    `${dir}/server.ext`,
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n" +
      "basicConstraints=critical,CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  Deno.writeTextFileSync(
    `${dir}/client.ext`,
    "basicConstraints=critical,CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
  const signed = (name: string, cn: string, ext: string) => [
    ["req", ...ec, "-nodes", "-keyout", `${dir}/${name}.key`, "-out"]
      .concat([`${dir}/${name}.csr`, "-subj", `/CN=${cn}`]),
    ["x509", "-req", "-in", `${dir}/${name}.csr`, "-days", "2", "-CA"]
      .concat([`${dir}/ca.pem`, "-CAkey", `${dir}/ca.key`])
      .concat(["-CAcreateserial", "-extfile", `${dir}/${ext}`])
      .concat(["-out", `${dir}/${name}.pem`]),
  ];
  for (
    const args of [
      ["req", "-x509", ...ec, "-nodes", "-days", "2", "-keyout"]
        .concat([`${dir}/ca.key`, "-out", `${dir}/ca.pem`])
        .concat(["-subj", "/CN=sockets bench CA"]),
      ...signed("server", "localhost", "server.ext"),
      ...(client ? signed("client", "bench client", "client.ext") : []),
    ]
  ) {
    const result = await run(["openssl", ...args]);
    if (result.code !== 0) {
      throw new Error(`openssl ${args[0]} failed:\n${result.stderr}`);
    }
  }
  // The names the TLS family has always used for the server's pair.
  Deno.renameSync(`${dir}/server.pem`, `${dir}/cert.pem`);
  Deno.renameSync(`${dir}/server.key`, `${dir}/key.pem`);
  // haproxy's `crt`: the certificate and its key in one file.
  Deno.writeTextFileSync(
    `${dir}/cert+key.pem`,
    Deno.readTextFileSync(`${dir}/cert.pem`) +
      Deno.readTextFileSync(`${dir}/key.pem`),
  );
}

/**
 * `servers/echo.ts --tls` on 127.0.0.1 with `cert` and `key`, and with a
 * `clientCa`, verifying client certificates (`--client-ca`).
 */
export function oursTlsEcho(
  cert: string,
  key: string,
  clientCa?: string,
): Target {
  return {
    label: "ours (servers/echo.ts --tls)",
    command: denoRun(
      "servers/echo.ts",
      "127.0.0.1:{PORT}",
      [cert, key, ...(clientCa ? [clientCa] : [])].join(","),
      [
        "--hostname",
        "127.0.0.1",
        "--port",
        "{PORT}",
        "--tls",
        "--cert",
        cert,
        "--key",
        key,
        ...(clientCa ? ["--client-ca", clientCa] : []),
      ],
    ),
  };
}

/**
 * `servers/forward.ts --tls` from 127.0.0.1 to `target` (`host:port`), as
 * {@linkcode oursTlsEcho} takes its certificate.
 */
export function oursTlsForward(
  cert: string,
  key: string,
  target: string,
  clientCa?: string,
): Target {
  return {
    label: "ours (servers/forward.ts --tls)",
    command: denoRun(
      "servers/forward.ts",
      `127.0.0.1:{PORT},${target}`,
      [cert, key, ...(clientCa ? [clientCa] : [])].join(","),
      [
        "--tls",
        "--cert",
        cert,
        "--key",
        key,
        ...(clientCa ? ["--client-ca", clientCa] : []),
        "tcp://127.0.0.1:{PORT}",
        `tcp://${target}`,
      ],
    ),
  };
}

/** `deno run` of one of our scripts with exactly these permissions. */
export function denoRun(
  script: string,
  net: string,
  read: string,
  args: string[],
): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    `--allow-net=${net}`,
    `--allow-read=${read}`,
    script,
    ...args,
  ];
}
