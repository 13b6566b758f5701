/**
 * The WebSocket part of `deno task bench` (`--family websocket`): bridges
 * from WebSocket clients to the C echo server (`bench/cserver.c echo`),
 * driven by `bench/wsloadgen.c` (a 64-byte binary message back and forth
 * on 100 connections; 64 KiB binary messages streamed on 8, 256 KiB in
 * flight each; every byte verified): ours (`servers/forward.ts ws://`),
 * the runtime's ceiling (`bench/minimal_ws_bridge.ts`: `Deno.serve` and
 * two loops), a minimal bridge with Node's `ws` (`bench/node_ws_bridge.mjs`)
 * and websockify in its default mode (a process per client: its CPU
 * figure is the parent's only). Each bridge on CPU 0, the load generator
 * and the echo on CPU 1, as the forward family.
 *
 * @module
 */

import {
  type Figure,
  formatGrouped,
  hasCommand,
  printTable,
  spread,
  type Target,
} from "./_shared.ts";

/** A measurement of the family (the shape of bench.ts's `Scenario`). */
interface WebSocketScenario {
  key: string;
  kind: "ws-pingpong" | "ws-stream";
  connections: number;
}

/** The family's scenarios. */
export const WEBSOCKET_SCENARIOS: WebSocketScenario[] = [
  { key: "ws-pingpong-100", kind: "ws-pingpong", connections: 100 },
  { key: "ws-stream-8", kind: "ws-stream", connections: 8 },
];

/** The goals for ours: against minimal Deno and Node's `ws`. */
const GOALS = { "ws-minimal": 0.95, "ws-node": 1.0 } as const;

/** The `ws` version the Node bridge runs with. */
const NODE_WS_VERSION = "8.23.1";

/**
 * Installs `ws` for the Node bridge beside a copy of it under `results`
 * (from Deno's npm cache when it has it); the copy's path, or why not.
 */
function nodeBridge(root: string, results: string): string | Error {
  const dir = `${results}/node-ws`;
  try {
    Deno.mkdirSync(dir, { recursive: true });
    Deno.writeTextFileSync(
      `${dir}/package.json`,
      JSON.stringify({ dependencies: { ws: NODE_WS_VERSION } }),
    );
    Deno.copyFileSync(`${root}bench/node_ws_bridge.mjs`, `${dir}/bridge.mjs`);
    const install = new Deno.Command(Deno.execPath(), {
      args: ["install", "--quiet", "--node-modules-dir=auto"],
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (!install.success) {
      return new Error(new TextDecoder().decode(install.stderr).trim());
    }
    return `${dir}/bridge.mjs`;
  } catch (error) {
    return error as Error;
  }
}

/** The family's servers in front of the echo on `echoPort`, by `--only` name. */
export function webSocketServers(
  root: string,
  results: string,
  echoPort: number,
): Record<string, Target> {
  const echo = `127.0.0.1:${echoPort}`;
  let node: string | Error | undefined;
  const nodeScript = () => node ??= nodeBridge(root, results);
  return {
    "ws-ours": {
      label: "ours (forward.ts ws://)",
      command: [
        Deno.execPath(),
        "run",
        "--quiet",
        `--allow-net=127.0.0.1:{PORT},${echo}`,
        "servers/forward.ts",
        // The load generator is one host.
        "--per-source",
        "0",
        "ws://127.0.0.1:{PORT}/",
        `tcp://${echo}`,
      ],
    },
    "ws-minimal": {
      label: "minimal Deno.serve bridge",
      command: [
        Deno.execPath(),
        "run",
        "--quiet",
        `--allow-net=127.0.0.1:{PORT},${echo}`,
        "bench/minimal_ws_bridge.ts",
        "{PORT}",
        String(echoPort),
      ],
    },
    "ws-node": {
      label: "minimal Node ws bridge",
      // Installed by `missing`, which runs first.
      command: [
        "node",
        `${results}/node-ws/bridge.mjs`,
        "{PORT}",
        String(echoPort),
      ],
      missing: () => {
        if (!hasCommand("node")) return "node not installed";
        const script = nodeScript();
        return script instanceof Error
          ? `ws not installed: ${script.message}`
          : undefined;
      },
      peer: true,
    },
    "ws-websockify": {
      label: "websockify (a process a client)",
      command: ["websockify", "127.0.0.1:{PORT}", echo],
      ready: "connect",
      missing: () =>
        hasCommand("websockify") ? undefined : "websockify not installed",
      peer: true,
    },
  };
}

/**
 * Prints the family's table (messages a second and MB/s: median and
 * min-max over rounds; ours against minimal Deno and Node's `ws`, and the
 * goals; the server's CPU time a unit) and returns it for the JSON.
 */
export function reportWebSocket(
  results: Record<string, Record<string, Figure[]>>,
  servers: Record<string, Target>,
): Record<string, unknown>[] {
  if (!WEBSOCKET_SCENARIOS.some((s) => results[s.key])) return [];
  const metricOf = (s: WebSocketScenario) =>
    s.kind === "ws-pingpong" ? "per_s" : "mb_per_s";
  const table: Record<string, unknown>[] = [];
  const lines: string[][] = [[
    "WebSocket bridge to C echo",
    "64 B ping-pong x100 trips/s (min-max)",
    "CPU µs/trip",
    "64 KiB stream x8 MB/s (min-max)",
    "CPU µs/MB",
  ]];
  for (const [name, server] of Object.entries(servers)) {
    const entry: Record<string, unknown> = {
      server: name,
      label: server.label,
    };
    const cells = [server.label];
    let any = false;
    for (const scenario of WEBSOCKET_SCENARIOS) {
      const figures = results[scenario.key]?.[name];
      const rate = spread(figures, metricOf(scenario));
      const cpu = spread(figures, "cpu_us");
      any ||= rate !== null;
      entry[scenario.key] = {
        median: rate?.median ?? null,
        min: rate?.min ?? null,
        max: rate?.max ?? null,
        cpu_us: cpu?.median ?? null,
        errors: figures?.filter((f) => f.error).map((f) => f.error) ?? [],
      };
      cells.push(
        rate
          ? `${formatGrouped(rate.median)} (${formatGrouped(rate.min)}-${
            formatGrouped(rate.max)
          })`
          : figures?.some((f) => f.error)
          ? "failed"
          : "-",
        cpu ? cpu.median.toFixed(1) : "-",
      );
    }
    if (!any && !results[WEBSOCKET_SCENARIOS[0].key]?.[name]) continue;
    table.push(entry);
    lines.push(cells);
  }
  console.log("");
  printTable(lines, (i) => i === 0);
  const median = (key: string, name: string, metric: string) =>
    spread(results[key]?.[name], metric)?.median ?? null;
  const verdicts: string[] = [];
  for (const scenario of WEBSOCKET_SCENARIOS) {
    const ours = median(scenario.key, "ws-ours", metricOf(scenario));
    for (const [other, goal] of Object.entries(GOALS)) {
      const theirs = median(scenario.key, other, metricOf(scenario));
      if (ours === null || !theirs) continue;
      const ratio = ours / theirs;
      verdicts.push(
        `${scenario.key} vs ${other} ${ratio.toFixed(2)}x (goal >=${goal}: ${
          ratio >= goal ? "met" : "MISSED"
        })`,
      );
    }
    const websockify = median(
      scenario.key,
      "ws-websockify",
      metricOf(scenario),
    );
    if (ours !== null && websockify) {
      verdicts.push(
        `${scenario.key} vs websockify ${(ours / websockify).toFixed(1)}x`,
      );
    }
  }
  if (verdicts.length > 0) console.log(`ours: ${verdicts.join("; ")}.`);
  console.log(
    "WebSocket: each bridge on CPU 0, the load generator (bench/wsloadgen.c) and the C echo on CPU 1; every byte verified; CPU µs is the bridge's CPU time a trip or a MB (websockify's: its parent process only, each client has a process of its own).",
  );
  return table;
}
