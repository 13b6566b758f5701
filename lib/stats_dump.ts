/**
 * xinetd's dump, on SIGUSR2: a running server writes its figures to the
 * log, a line per service and transport (and per target) and one for the
 * process, the same figures `/metrics` serves, with no endpoint needed.
 * Zero counts are left out, so the lines say what happened.
 *
 * Not SIGUSR1, xinetd's signal: since Deno 2.9.2 SIGUSR1 starts Deno's
 * inspector on 127.0.0.1:9229 (as Node's does), whatever the permissions
 * and whatever listener a program adds (checked with 2.9.6), and anyone
 * on the host may then connect to it and run code in the server. Never
 * send a Deno server SIGUSR1.
 *
 * @module
 */

import type { Log } from "./log.ts";
import {
  type FamilySnapshot,
  type MetricsRegistry,
  processMetrics,
} from "./metrics.ts";
// Registers the process's own figures (memory, descriptors).
import "./server_metrics.ts";

/** Labels that say whose a figure is: they make the line's name. */
const OWNER_LABELS = ["service", "transport", "target"];

/**
 * The lines of a dump: `stats: echo/tcp: connections_accepted 3, ...`,
 * one per owner (service and transport, or target), then
 * `stats: process: ...`. A histogram shows its count and sum.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { MetricsRegistry } from "./metrics.ts";
 * import { statsLines } from "./stats_dump.ts";
 *
 * const registry = new MetricsRegistry();
 * const labels = { service: "echo", transport: "tcp" };
 * registry.counter("sockets_connections_accepted_total", "Accepted.", labels).value = 3;
 * registry.counter("sockets_connections_refused_total", "Refused.", { ...labels, reason: "full" }).value = 2;
 * registry.counter("sockets_log_lines_dropped_total", "Dropped.").value = 0;
 * assertEquals(statsLines(registry.snapshot()), [
 *   "stats: echo/tcp: connections_accepted 3, connections_refused (full) 2",
 * ]);
 * ```
 */
export function statsLines(families: readonly FamilySnapshot[]): string[] {
  const owners = new Map<string, string[]>();
  for (const family of families) {
    const short = family.name.replace(/^sockets_/, "").replace(/_total$/, "");
    for (const series of family.series) {
      const { service, transport, target } = series.labels;
      const owner = [
        [service, transport].filter(Boolean).join("/"),
        target && `target ${target}`,
      ].filter(Boolean).join(" ");
      const detail = Object.entries(series.labels)
        .filter(([name]) => !OWNER_LABELS.includes(name))
        .map(([, value]) => value).join(", ");
      const name = detail ? `${short} (${detail})` : short;
      let figure: string;
      if ("value" in series) {
        if (series.value === 0) continue;
        figure = `${name} ${series.value}`;
      } else {
        if (series.count === 0) continue;
        figure = `${name} count ${series.count} sum ${
          Number(series.sum.toPrecision(6))
        }`;
      }
      const key = owner || "process";
      const figures = owners.get(key) ?? [];
      figures.push(figure);
      owners.set(key, figures);
    }
  }
  const process = owners.get("process");
  owners.delete("process");
  const lines = [...owners].map(([owner, figures]) =>
    `stats: ${owner}: ${figures.join(", ")}`
  );
  if (process) lines.push(`stats: process: ${process.join(", ")}`);
  return lines;
}

/**
 * Writes {@linkcode statsLines} of `registry` (the process's by default)
 * to `log`, as SIGUSR2 does.
 *
 * @example
 * ```ts
 * import { dumpStats } from "./stats_dump.ts";
 *
 * const lines: string[] = [];
 * dumpStats((line) => lines.push(line));
 * if (!lines.at(-1)?.startsWith("stats: process: ")) throw new Error(lines.join("\n"));
 * ```
 */
export function dumpStats(
  log: Log,
  registry: MetricsRegistry = processMetrics,
): void {
  for (const line of statsLines(registry.snapshot())) log(line);
}

/**
 * Writes {@linkcode statsLines} of `registry` to `log` on each SIGUSR2
 * until the returned function is called.
 *
 * @example
 * ```ts ignore
 * import { dumpStatsOnSignal } from "./stats_dump.ts";
 *
 * const stop = dumpStatsOnSignal(console.error);
 * stop();
 * ```
 */
export function dumpStatsOnSignal(
  log: Log,
  registry: MetricsRegistry = processMetrics,
): () => void {
  const dump = () => dumpStats(log, registry);
  try {
    Deno.addSignalListener("SIGUSR2", dump);
  } catch {
    // Not on this system (Windows): no dump.
    return () => {};
  }
  return () => Deno.removeSignalListener("SIGUSR2", dump);
}
