/**
 * What the bench's families share: the shape of a measurement and of a
 * server as `bench.ts` starts it, and the helpers that turn the rounds'
 * figures into a table's cells.
 *
 * @module
 */

/** One measurement: what the load generator printed (or `{ error }`). */
export type Figure = Record<string, number | string | boolean>;

/** A server as `bench.ts` starts it. */
export interface Target {
  /** Command line; `{PORT}` is replaced. */
  command: string[];
  /** Shown in the table. */
  label: string;
  /** CPUs the server may use (`taskset -c`). Default `0`. */
  cpus?: string;
  /** Ready once its log matches this, or once it accepts. Default `/listening on/`. */
  ready?: RegExp | "connect";
  /** Runs before it starts (writes a config file for `port`). */
  before?: (port: number) => void;
  /** Why it cannot run here, if it cannot (a missing peer, not root). */
  missing?: () => string | undefined;
  /** Not ours: its failures are reported, never fail the run. */
  peer?: boolean;
  /**
   * Start it with an environment of `PATH` alone, so that every server's
   * programs start alike (xinetd passes none of its own; a program that
   * finds LANG set loads locale files: printf here started 30% slower).
   */
  cleanEnv?: boolean;
  /** Only these scenarios (by key). Default: all of the family's. */
  scenarios?: string[];
}

/** A server `bench.ts` started, until `stop()`. */
export interface Running {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

/** What a command run by `bench.ts` left: its exit code and output. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** What bench.ts lends a family that lives in a module of its own. */
export interface FamilyContext {
  root: string;
  results: string;
  seconds: number;
  only?: string[];
  /** haproxy's `mode tcp` configuration in front of the echo on `echoPort`. */
  haproxyConfig(echoPort: number, bind: string): string;
  /** Runs `command` (on CPU `cpu`, if given). */
  run(command: string[], options?: { cpu?: number }): Promise<RunResult>;
  startServer(name: string, target: Target, family: string): Promise<Running>;
  /** Counts one measurement done (the progress bar). */
  step(what: string): void;
}

/**
 * The figure a load generator printed (its JSON on stdout), with `cpu_us`:
 * the server's CPU time (`server_cpu_ms`) per unit of `work`, the figure a
 * loaded machine disturbs least; `{ error }` when it failed.
 */
export function loadgenFigure(
  result: RunResult,
  work: (figure: Figure) => Figure[string] | undefined,
): Figure {
  if (result.code !== 0) {
    return { error: result.stderr.trim() || `exit ${result.code}` };
  }
  const figure: Figure = JSON.parse(result.stdout);
  const cpuMs = figure.server_cpu_ms as number | undefined;
  const units = work(figure) as number | undefined;
  if (cpuMs !== undefined && units) figure.cpu_us = cpuMs * 1000 / units;
  return figure;
}

/** Whether `command` is on the PATH (`sh -c 'command -v …'`). */
export function hasCommand(command: string): boolean {
  try {
    return new Deno.Command("sh", {
      args: ["-c", `command -v ${command}`],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/** The median and range of a metric over the rounds' figures. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

/**
 * Median, least and most of `metric` over rounds; `null` when no round has
 * it as a finite number (a failed round has only `error`).
 */
export function spread(
  figures: Record<string, unknown>[] | undefined,
  metric: string,
): Spread | null {
  const values = (figures ?? [])
    .map((f) => f[metric])
    .filter((v): v is number => typeof v === "number" && Number.isFinite(v))
    .sort((a, b) => a - b);
  if (values.length === 0) return null;
  return {
    median: values[Math.floor(values.length / 2)],
    min: values[0],
    max: values[values.length - 1],
  };
}

/** The median of `metric` over rounds; `null` when none has it. */
export function median(
  figures: Record<string, unknown>[] | undefined,
  metric: string,
): number | null {
  return spread(figures, metric)?.median ?? null;
}

/** A figure for a cell: whole from 100 up, one decimal below; `-` for none. */
export function format(value: number | null): string {
  if (value === null) return "-";
  if (value >= 100) return Math.round(value).toString();
  return value.toFixed(1);
}

/** As {@linkcode format}, with thousands separated by commas. */
export function formatGrouped(value: number): string {
  if (value >= 100) return Math.round(value).toLocaleString("en-US");
  return value.toFixed(1);
}

/** `met (>=0.95)` or `MISSED (<=1.2)`; empty without a ratio or a target. */
export function verdict(
  ratio: number | null,
  target: number | undefined,
  higherIsBetter = true,
): string {
  if (ratio === null || target === undefined) return "";
  const met = higherIsBetter ? ratio >= target : ratio <= target;
  return `${met ? "met" : "MISSED"} (${higherIsBetter ? ">=" : "<="}${target})`;
}

/**
 * Prints `lines` in columns two spaces apart: the columns `left` names
 * (by index) to the left, the others (figures) to the right.
 */
export function printTable(
  lines: string[][],
  left: (column: number) => boolean,
): void {
  const widths = lines[0].map((_, i) =>
    Math.max(...lines.map((line) => line[i].length))
  );
  for (const line of lines) {
    console.log(
      line.map((cell, i) =>
        left(i) ? cell.padEnd(widths[i]) : cell.padStart(widths[i])
      ).join("  ").trimEnd(),
    );
  }
}
