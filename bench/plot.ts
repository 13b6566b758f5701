/**
 * The bench's figures as a picture: `plotSvg()` turns `latest.json` (what
 * `deno task bench` writes) into a small SVG of grouped bars, one group per
 * scenario and one bar per server (ours, minimal Deno, C, Node, and the
 * peers of the forward, exec and TLS families), each group scaled to its
 * best figure so that scenarios of different units sit side by side.
 * `bench.ts` writes `bench/results/latest.svg` after every run; to redraw
 * one from a saved run:
 *
 *     deno run --allow-read=bench --allow-write=bench bench/plot.ts \
 *       bench/results/latest.json bench/results/latest.svg
 *
 * @module
 */

/** One row of a bench table: a scenario, a metric, and a figure per server. */
type TableRow = Record<string, unknown>;

/** The parts of `latest.json` the plot reads. */
export interface BenchResults {
  started?: string;
  rounds?: number;
  cpus?: number;
  deno?: string;
  table?: TableRow[];
  forwardTable?: TableRow[];
  execTable?: TableRow[];
  tls?: { table?: TableRow[] };
}

/** Metrics where more is better and that a reader compares first. */
const PLOTTED_METRICS = new Set(["mb_per_s", "per_s"]);
/** Keys of a row that are not a server's figure. */
const NOT_A_SERVER = /^(scenario|metric|unit|reference|target_.*|.*_vs_.*)$/;

const COLORS: Record<string, string> = {
  ours: "#2f6fd0",
  minimal: "#8fb4e8",
  c: "#555555",
  node: "#5b9e4d",
};
const PEER_COLORS = ["#b07a2a", "#a04e8c", "#7a6a55", "#c9a227", "#888888"];

interface Bar {
  server: string;
  value: number;
}

interface Group {
  title: string;
  unit: string;
  bars: Bar[];
}

/** A server column's colour: ours, the runtime's floor, C and Node fixed. */
function colorOf(server: string, peers: string[]): string {
  if (server === "ours") return COLORS.ours;
  if (server.startsWith("minimal")) return COLORS.minimal;
  if (server.startsWith("c_")) return COLORS.c;
  if (server.startsWith("node")) return COLORS.node;
  if (!peers.includes(server)) peers.push(server);
  return PEER_COLORS[peers.indexOf(server) % PEER_COLORS.length];
}

function groupsOf(rows: TableRow[] | undefined): Group[] {
  const groups: Group[] = [];
  for (const row of rows ?? []) {
    if (!PLOTTED_METRICS.has(String(row.metric))) continue;
    const bars: Bar[] = [];
    for (const [key, value] of Object.entries(row)) {
      if (NOT_A_SERVER.test(key) || key === "ours_2_workers") continue;
      if (typeof value === "number" && value > 0) {
        // The TLS family names its peer in `peer`, its figure in `peer_value`.
        const server = key === "peer_value" ? String(row.peer) : key;
        bars.push({ server, value });
      }
    }
    if (bars.some((bar) => bar.server === "ours") && bars.length > 1) {
      groups.push({
        title: String(row.scenario),
        unit: String(row.unit),
        bars,
      });
    }
  }
  return groups;
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

function formatFigure(value: number): string {
  return value >= 100
    ? Math.round(value).toLocaleString("en-US")
    : value.toFixed(1);
}

/**
 * Draws `results` as an SVG document: a group of horizontal bars per
 * scenario whose main figure is a rate (MB/s, round trips, connections a
 * second), each bar labelled with its server and figure and scaled to the
 * group's best; ours in blue, minimal Deno in light blue, C in grey, Node in
 * green, other peers in their own colours.
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { plotSvg } from "./plot.ts";
 *
 * const svg = plotSvg({
 *   table: [{
 *     scenario: "pingpong-100",
 *     metric: "per_s",
 *     unit: "trips/s",
 *     ours: 206000,
 *     minimal_deno: 202000,
 *     c_epoll: 252000,
 *     node: 150000,
 *     ours_vs_c: 0.82,
 *   }],
 * });
 * assertStringIncludes(svg, "<svg");
 * assertStringIncludes(svg, "pingpong-100 (trips/s)");
 * assertStringIncludes(svg, "206,000");
 * ```
 */
export function plotSvg(results: BenchResults): string {
  const groups = [
    ...groupsOf(results.table),
    ...groupsOf(results.forwardTable),
    ...groupsOf(results.execTable),
    ...groupsOf(results.tls?.table),
  ];
  const width = 760;
  const labelWidth = 190;
  const barArea = width - labelWidth - 90;
  const barHeight = 13;
  const peers: string[] = [];
  const parts: string[] = [];
  let y = 46;
  for (const group of groups) {
    parts.push(
      `<text x="8" y="${y}" font-weight="bold">${
        escapeXml(`${group.title} (${group.unit})`)
      }</text>`,
    );
    y += 6;
    const best = Math.max(...group.bars.map((bar) => bar.value));
    for (const bar of group.bars) {
      const length = Math.max(1, Math.round(barArea * bar.value / best));
      parts.push(
        `<text x="${labelWidth - 6}" y="${
          y + barHeight - 3
        }" text-anchor="end">${escapeXml(bar.server)}</text>`,
        `<rect x="${labelWidth}" y="${y}" width="${length}" height="${barHeight}" fill="${
          colorOf(bar.server, peers)
        }"/>`,
        `<text x="${labelWidth + length + 4}" y="${y + barHeight - 3}">${
          formatFigure(bar.value)
        }</text>`,
      );
      y += barHeight + 3;
    }
    y += 14;
  }
  const title = `deno task bench${
    results.rounds ? ` --rounds ${results.rounds}` : ""
  }: ${results.started ?? ""}, Deno ${results.deno ?? "?"}, ${
    results.cpus ?? "?"
  } CPUs; each group scaled to its best`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="8" y="20" font-size="13" font-weight="bold">${
      escapeXml(title)
    }</text>`,
    ...parts,
    `</svg>`,
    "",
  ].join("\n");
}

if (import.meta.main) {
  const [input = "bench/results/latest.json", output] = Deno.args;
  const svg = plotSvg(JSON.parse(Deno.readTextFileSync(input)));
  if (output) Deno.writeTextFileSync(output, svg);
  else console.log(svg);
}
