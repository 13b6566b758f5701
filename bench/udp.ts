/**
 * The UDP part of `deno task bench` (`--family udp`): a 64-byte ping-pong
 * (`bench/loadgen.c udp`: one datagram in flight a socket, each datagram
 * different, verified) from 1 and 32 client sockets against
 * `servers/echo.ts --udp`, with `--udp-rate 0` and with its defaults,
 * against what the runtime allows (a minimal `Deno.listenDatagram` echo,
 * `bench/minimal_udp_echo.ts`), a C `recvfrom`/`sendto` echo
 * (`bench/cserver.c udp-echo`) and Node's `dgram`
 * (`bench/node_udp_echo.mjs`), in the same run: each server on CPU 0, the
 * load generator on CPU 1, as the other families.
 *
 * The load generator is one address: with the defaults, ours answers it
 * at most `--udp-rate` (100) times a second after a burst of as many, as
 * it would any one host, and counts the rest as lost after 20 ms. That
 * row shows what the rate limit does to a load test, not the server's
 * speed.
 *
 * @module
 */

import {
  type Figure,
  formatGrouped,
  printTable,
  spread,
  type Target,
  verdict,
} from "./_shared.ts";

/** A ping-pong from this many sockets (the shape of bench.ts's `Scenario`). */
interface UdpScenario {
  key: string;
  kind: "udp";
  connections: number;
}

/** The family's scenarios: 1 and 32 client sockets. */
export const UDP_SCENARIOS: UdpScenario[] = [
  { key: "udp-1", kind: "udp", connections: 1 },
  { key: "udp-32", kind: "udp", connections: 32 },
];

/** Ours / minimal Deno must be at least this, at 1 and 32 sockets. */
const TARGET_VS_MINIMAL = 0.95;

/** The family's servers, by the name `--only` takes. */
export function udpServers(
  root: string,
  bin: string,
): Record<string, Target> {
  const deno = (script: string, args: string[]) => [
    Deno.execPath(),
    "run",
    "--quiet",
    "--unstable-net",
    // Replies go to whichever port each client socket has.
    "--allow-net=127.0.0.1",
    script,
    ...args,
  ];
  const echo = (args: string[]) =>
    deno("servers/echo.ts", [
      "--udp",
      "--hostname",
      "127.0.0.1",
      "--port",
      "{PORT}",
      ...args,
    ]);
  return {
    "udp-ours": {
      label: "ours (echo.ts --udp --udp-rate 0)",
      command: echo(["--udp-rate", "0"]),
    },
    "udp-ours-defaults": {
      label: "ours, defaults (--udp-rate 100)",
      command: echo([]),
    },
    "udp-minimal": {
      label: "minimal Deno.listenDatagram",
      command: deno("bench/minimal_udp_echo.ts", ["{PORT}"]),
    },
    "udp-c": {
      label: "C recvfrom/sendto",
      command: [`${bin}/cserver`, "udp-echo", "{PORT}"],
    },
    "udp-node": {
      label: "Node dgram",
      command: ["node", `${root}bench/node_udp_echo.mjs`, "{PORT}"],
    },
  };
}

/**
 * Prints the family's table (round trips a second at 1 and 32 sockets:
 * median, and min–max over rounds; ratios to minimal Deno; the server's
 * CPU time a round trip; datagrams lost a second) and returns it for the
 * JSON.
 */
export function reportUdp(
  results: Record<string, Record<string, Figure[]>>,
  servers: Record<string, Target>,
): Record<string, unknown>[] {
  if (!UDP_SCENARIOS.some((scenario) => results[scenario.key])) return [];
  const table: Record<string, unknown>[] = [];
  const lines: string[][] = [[
    "UDP echo, 64 B ping-pong",
    ...UDP_SCENARIOS.flatMap((s) => [
      `${s.connections} socket${
        s.connections > 1 ? "s" : ""
      } trips/s (min-max)`,
      "vs minimal",
      "CPU µs/trip",
      "lost/s",
    ]),
  ]];
  const minimal = (key: string) =>
    spread(results[key]?.["udp-minimal"], "per_s")?.median ?? null;
  for (const [name, server] of Object.entries(servers)) {
    const entry: Record<string, unknown> = {
      server: name,
      label: server.label,
    };
    const cells = [server.label];
    let any = false;
    for (const scenario of UDP_SCENARIOS) {
      const figures = results[scenario.key]?.[name];
      const trips = spread(figures, "per_s");
      const lost = spread(
        figures?.map((f) => ({
          lost_per_s: (f.lost as number) / (f.seconds as number),
        })),
        "lost_per_s",
      );
      const cpu = spread(figures, "cpu_us");
      const least = minimal(scenario.key);
      const ratio = trips && least ? trips.median / least : null;
      any ||= trips !== null;
      entry[scenario.key] = {
        median: trips?.median ?? null,
        min: trips?.min ?? null,
        max: trips?.max ?? null,
        vs_minimal: ratio,
        cpu_us_per_trip: cpu?.median ?? null,
        lost_per_s: lost?.median ?? null,
        target_vs_minimal: name === "udp-ours"
          ? verdict(ratio, TARGET_VS_MINIMAL)
          : "",
      };
      cells.push(
        trips
          ? `${formatGrouped(trips.median)} (${formatGrouped(trips.min)}-${
            formatGrouped(trips.max)
          })`
          : "-",
        ratio === null ? "-" : ratio.toFixed(2),
        cpu ? cpu.median.toFixed(1) : "-",
        lost ? formatGrouped(lost.median) : "-",
      );
    }
    if (!any) continue;
    table.push(entry);
    lines.push(cells);
  }
  console.log("");
  printTable(lines, (i) => i === 0);
  const ours = table.find((row) => row.server === "udp-ours");
  if (ours) {
    console.log(
      `target: ours (--udp-rate 0) >= ${TARGET_VS_MINIMAL}x minimal Deno: ${
        UDP_SCENARIOS.map((s) =>
          `${s.key} ${
            (ours[s.key] as { target_vs_minimal: string }).target_vs_minimal ||
            "-"
          }`
        ).join(", ")
      }.`,
    );
  }
  console.log(
    "UDP: servers on CPU 0, the load generator (one address, every datagram different) on CPU 1; a datagram not answered within 20 ms is lost and replaced; CPU µs/trip is the server's CPU time a round trip (median over rounds), which a loaded machine disturbs least. With its defaults ours answers one address 100 times a second after a burst of 100 (--udp-rate): a load test from one host measures the rate limit, not the server.",
  );
  return table;
}
