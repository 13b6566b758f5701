/**
 * A registry of metrics, in the Prometheus data model: counters, gauges
 * and histograms, each a family of series keyed by labels. A series is a
 * plain object with a number field (`cell.value += n`): what the byte path
 * pays is one field write, at a connection's close, never a map lookup or
 * an allocation. Gauges that are read rather than kept (targets' state,
 * the process's memory) come from collectors, run at each read.
 * {@linkcode toPrometheusText} writes a snapshot in the text exposition
 * format (version 0.0.4) Prometheus scrapes; `server_metrics.ts` names
 * what the servers count; `stats_server.ts` serves it.
 *
 * @module
 */

/** What a family is, in Prometheus's words. */
export type MetricType = "counter" | "gauge" | "histogram";

/** Label names to values: `{ service: "echo", transport: "tcp" }`. */
export type Labels = Readonly<Record<string, string>>;

/** One series of a counter or gauge: add to `value` (gauges: set it). */
export interface Cell {
  /** The count, or the gauge's level. */
  value: number;
}

/**
 * One series of a histogram: counts per upper bound, their sum and count.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { HistogramCell } from "./metrics.ts";
 *
 * const cell = new HistogramCell([0.1, 1]);
 * cell.observe(0.05);
 * cell.observe(5);
 * assertEquals([cell.counts, cell.count, cell.sum], [[1, 0, 1], 2, 5.05]);
 * ```
 */
export class HistogramCell {
  /** Observations at or under each bound (not cumulative), then over all. */
  readonly counts: number[];
  /** The sum of all observations. */
  sum = 0;
  /** How many observations. */
  count = 0;

  /** A histogram with `bounds`, upper bounds in increasing order. */
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length + 1).fill(0);
  }

  /** Records one observation. */
  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }
}

/** A series in a snapshot: a counter's or gauge's value, or a histogram. */
export type SeriesSnapshot =
  | { labels: Labels; value: number }
  | {
    labels: Labels;
    /** Cumulative counts: observations at or under `le` (`+Inf` last). */
    buckets: { le: string; count: number }[];
    sum: number;
    count: number;
  };

/** A family in a snapshot, as `/stats.json` serves it. */
export interface FamilySnapshot {
  /** `sockets_connections_accepted_total` */
  name: string;
  /** What it counts, one line. */
  help: string;
  /** Counter, gauge or histogram. */
  type: MetricType;
  /** Its series, one per set of labels. */
  series: SeriesSnapshot[];
}

/** A value a collector reads at snapshot time. */
export interface Sample {
  /** The family's name. */
  name: string;
  /** The family's help line. */
  help: string;
  /** A counter (never goes down) or a gauge. */
  type: "counter" | "gauge";
  /** The series' labels. */
  labels: Labels;
  /** Its value now. */
  value: number;
}

interface Family {
  name: string;
  help: string;
  type: MetricType;
  series: Map<string, { labels: Labels; cell: Cell | HistogramCell }>;
}

/**
 * Thrown for a metric name or label name Prometheus would refuse, or a
 * name asked for as two types.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { MetricDefinitionError, MetricsRegistry } from "./metrics.ts";
 *
 * const registry = new MetricsRegistry();
 * registry.counter("demo_total", "Demo.");
 * assertThrows(() => registry.gauge("demo_total", "Demo."), MetricDefinitionError);
 * ```
 */
export class MetricDefinitionError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "MetricDefinitionError";
  }
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * Counters, gauges and histograms by name and labels, and the collectors
 * that add read-at-snapshot values. Asking twice for a name and labels
 * gives the same cell: fetch it once (at a server's start), then count.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { MetricsRegistry, toPrometheusText } from "./metrics.ts";
 *
 * const registry = new MetricsRegistry();
 * const accepted = registry.counter("demo_accepted_total", "Connections accepted.", { service: "echo" });
 * accepted.value += 2;
 * assertEquals(
 *   toPrometheusText(registry.snapshot()),
 *   '# HELP demo_accepted_total Connections accepted.\n# TYPE demo_accepted_total counter\ndemo_accepted_total{service="echo"} 2\n',
 * );
 * ```
 */
export class MetricsRegistry {
  readonly #families = new Map<string, Family>();
  readonly #collectors = new Set<() => Sample[]>();

  /** The counter `name` with `labels` (made at 0 the first time). */
  counter(name: string, help: string, labels: Labels = {}): Cell {
    return this.#cell(name, help, "counter", labels, () => ({ value: 0 }));
  }

  /** The gauge `name` with `labels` (made at 0 the first time). */
  gauge(name: string, help: string, labels: Labels = {}): Cell {
    return this.#cell(name, help, "gauge", labels, () => ({ value: 0 }));
  }

  /** The histogram `name` with `labels` and upper `bounds`. */
  histogram(
    name: string,
    help: string,
    labels: Labels,
    bounds: readonly number[],
  ): HistogramCell {
    return this.#cell(
      name,
      help,
      "histogram",
      labels,
      () => new HistogramCell(bounds),
    );
  }

  /**
   * Adds a collector, run at each snapshot for values read then (a
   * target's state, memory in use); returns the function that removes it.
   */
  collect(collector: () => Sample[]): () => void {
    this.#collectors.add(collector);
    return () => this.#collectors.delete(collector);
  }

  /** Every family with at least one series, sorted by name. */
  snapshot(): FamilySnapshot[] {
    const families = new Map<string, FamilySnapshot>();
    for (const family of this.#families.values()) {
      const series: SeriesSnapshot[] = [];
      for (const { labels, cell } of family.series.values()) {
        series.push(
          cell instanceof HistogramCell
            ? histogramSnapshot(labels, cell)
            : { labels, value: cell.value },
        );
      }
      families.set(family.name, {
        name: family.name,
        help: family.help,
        type: family.type,
        series,
      });
    }
    for (const collector of this.#collectors) {
      for (const sample of collector()) {
        let family = families.get(sample.name);
        if (!family) {
          family = { ...sample, series: [] };
          families.set(sample.name, family);
        }
        family.series.push({ labels: sample.labels, value: sample.value });
      }
    }
    return [...families.values()]
      .filter((family) => family.series.length > 0)
      .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  #cell<C extends Cell | HistogramCell>(
    name: string,
    help: string,
    type: MetricType,
    labels: Labels,
    make: () => C,
  ): C {
    let family = this.#families.get(name);
    if (!family) {
      if (!NAME.test(name)) {
        throw new MetricDefinitionError(`invalid metric name '${name}'`);
      }
      family = { name, help, type, series: new Map() };
      this.#families.set(name, family);
    } else if (family.type !== type) {
      throw new MetricDefinitionError(
        `${name} is a ${family.type}, not a ${type}`,
      );
    }
    const key = labelKey(labels);
    let series = family.series.get(key);
    if (!series) {
      for (const label of Object.keys(labels)) {
        if (!LABEL_NAME.test(label) || label === "le") {
          throw new MetricDefinitionError(`invalid label name '${label}'`);
        }
      }
      series = { labels: { ...labels }, cell: make() };
      family.series.set(key, series);
    }
    return series.cell as C;
  }
}

function labelKey(labels: Labels): string {
  return Object.keys(labels).sort().map((name) =>
    `${name}=${JSON.stringify(labels[name])}`
  ).join(",");
}

function histogramSnapshot(
  labels: Labels,
  cell: HistogramCell,
): SeriesSnapshot {
  let total = 0;
  const buckets = cell.bounds.map((bound, i) => ({
    le: formatNumber(bound),
    count: total += cell.counts[i],
  }));
  buckets.push({ le: "+Inf", count: cell.count });
  return { labels, buckets, sum: cell.sum, count: cell.count };
}

/** A number as the exposition format writes it (`+Inf`, `NaN`). */
function formatNumber(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** `\`, `"` and newlines escaped, as label values need. */
function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(
    /\n/g,
    "\\n",
  );
}

function formatLabels(labels: Labels, extra?: [string, string]): string {
  const pairs = Object.entries(labels);
  if (extra) pairs.push(extra);
  if (pairs.length === 0) return "";
  return `{${
    pairs.map(([name, value]) => `${name}="${escapeLabelValue(value)}"`)
      .join(",")
  }}`;
}

/**
 * A snapshot in Prometheus's text exposition format, version 0.0.4
 * (`# HELP`, `# TYPE`, then one line a series; a histogram's cumulative
 * `_bucket` lines, its `_sum` and `_count`).
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { MetricsRegistry, toPrometheusText } from "./metrics.ts";
 *
 * const registry = new MetricsRegistry();
 * registry.histogram("demo_seconds", "How long.", {}, [0.1, 1]).observe(0.5);
 * assertStringIncludes(toPrometheusText(registry.snapshot()), 'demo_seconds_bucket{le="1"} 1\n');
 * ```
 */
export function toPrometheusText(families: readonly FamilySnapshot[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(
      `# HELP ${family.name} ${
        family.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
      }`,
      `# TYPE ${family.name} ${family.type}`,
    );
    for (const series of family.series) {
      if ("value" in series) {
        lines.push(
          `${family.name}${formatLabels(series.labels)} ${
            formatNumber(series.value)
          }`,
        );
        continue;
      }
      for (const bucket of series.buckets) {
        lines.push(
          `${family.name}_bucket${
            formatLabels(series.labels, ["le", bucket.le])
          } ${bucket.count}`,
        );
      }
      lines.push(
        `${family.name}_sum${formatLabels(series.labels)} ${
          formatNumber(series.sum)
        }`,
        `${family.name}_count${formatLabels(series.labels)} ${series.count}`,
      );
    }
  }
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}

/**
 * The process's registry: every server in the process counts into it, and
 * `--stats` and SIGUSR2 show it.
 *
 * @example
 * ```ts
 * import { processMetrics } from "./metrics.ts";
 *
 * processMetrics.counter("demo_events_total", "Events seen.").value++;
 * ```
 */
export const processMetrics: MetricsRegistry = new MetricsRegistry();
