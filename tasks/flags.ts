/**
 * The README's table of the flags servers share, made from what each
 * server's `--help` prints, which comes from the one flag table
 * (`serverFlags` in `lib/server_cli.ts`) with each script's own defaults:
 * a default that differs between servers is shown per server, and a flag
 * only some servers take names them. `tests/docs_test.ts` checks that the
 * README holds this table as printed.
 *
 * ```sh
 * $ deno run --allow-read=. --allow-run=deno tasks/flags.ts
 * | server flag | default | meaning | servers |
 * ...
 * ```
 *
 * @module
 */

import { flagsHelp, parseCommandLine } from "../lib/cli.ts";
import { runMain } from "../lib/main.ts";
import { serverFlags } from "../lib/server_cli.ts";

/** One flag as a server's `--help` shows it. */
export interface HelpFlag {
  /** `--port P`. */
  usage: string;
  /** The help text, lines joined, without its `(default ...)`. */
  text: string;
  /** What `(default X)` says, if it says. */
  default?: string;
}

/**
 * The flags of a `--help` text: each `  --name ARG  text` line and the
 * lines continuing it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { helpFlags } from "./flags.ts";
 *
 * const help = "usage: x\n\n  --port P               port (default 7;\n                         0 picks one)\n";
 * assertEquals(helpFlags(help).get("port"), {
 *   usage: "--port P",
 *   text: "port",
 *   default: "7; 0 picks one",
 * });
 * ```
 */
export function helpFlags(help: string): Map<string, HelpFlag> {
  const flags = new Map<string, HelpFlag & { raw: string }>();
  let last: (HelpFlag & { raw: string }) | undefined;
  for (const line of help.split("\n")) {
    const head = /^ {2}(--([a-z0-9-]+)(?: [A-Z][A-Z|,.=]*)?)(?: {2,}(.*))?$/
      .exec(line);
    if (head) {
      last = { usage: head[1], text: "", raw: head[3] ?? "" };
      flags.set(head[2], last);
    } else if (last && /^ {10,}\S/.test(line)) {
      last.raw += ` ${line.trim()}`;
    } else {
      last = undefined;
    }
  }
  const result = new Map<string, HelpFlag>();
  for (const [name, { usage, raw }] of flags) {
    const shown = /\(default ([^()]*)\)/.exec(raw);
    const text = raw.replace(/ ?\(default [^()]*\)/, "").trim();
    result.set(name, {
      usage,
      text,
      ...(shown ? { default: shown[1] } : {}),
    });
  }
  return result;
}

/** A help text's first clause: up to its first `; ` outside parentheses. */
function firstClause(text: string): string {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "(") depth++;
    else if (text[i] === ")") depth--;
    else if (depth === 0 && text.startsWith("; ", i)) return text.slice(0, i);
  }
  return text.replace(/[,;]$/, "");
}

/**
 * The default column: one value; or the value most servers have, then the
 * others by server; or each server's, when no value is most servers'. A
 * note all values end with (`; 0 picks a free one`) is said once.
 */
function defaultsCell(groups: [string, string[]][], takers: number): string {
  if (groups.length === 1) return groups[0][0];
  const values = groups.map(([shown]) => shown);
  const note = /; .*$/.exec(values[0])?.[0];
  const suffix = note && values.every((v) => v.endsWith(note)) ? note : "";
  const bare = (shown: string) => shown.slice(0, shown.length - suffix.length);
  const [common, commonScripts] = groups[0];
  if (commonScripts.length * 2 > takers) {
    const others = groups.slice(1).map(([shown, names]) =>
      `${listed(names)}: ${bare(shown)}`
    );
    return `${bare(common)} (${others.join(", ")})${suffix}`;
  }
  const each = groups.flatMap(([shown, names]) =>
    names.map((name) => [name, bare(shown)])
  ).sort(([a], [b]) => a < b ? -1 : 1);
  return `${
    each.map(([name, shown]) => `${name}: ${shown}`).join(", ")
  }${suffix}`;
}

/** `a, b and c`. */
function listed(names: string[]): string {
  return names.length < 2
    ? names.join("")
    : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

/**
 * The Markdown table of the server flags `serverFlags` defines, from the
 * `--help` of each server (`helps`: script name, e.g. `echo.ts`, to its
 * help text): one row a flag, its default (per server where they differ),
 * the first clause of its help, and the servers that take it.
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { commonFlagsTable } from "./flags.ts";
 *
 * const table = commonFlagsTable(new Map([
 *   ["a.ts", "  --port P               port (default 7)\n"],
 *   ["b.ts", "  --port P               port (default 9)\n"],
 * ]));
 * assertStringIncludes(table, "| `--port P` | a.ts: 7, b.ts: 9 | port | all |");
 * ```
 */
export function commonFlagsTable(helps: Map<string, string>): string {
  const scripts = [...helps.keys()];
  const parsed = new Map(
    scripts.map((script) => [script, helpFlags(helps.get(script)!)]),
  );
  const rows = [
    "| server flag | default | meaning | servers |",
    "| --- | --- | --- | --- |",
  ];
  for (const name of Object.keys(serverFlags({ port: 0 }))) {
    const takers = scripts.filter((script) => parsed.get(script)!.has(name));
    if (takers.length === 0) continue;
    const byDefault = new Map<string, string[]>();
    for (const script of takers) {
      const help = parsed.get(script)!.get(name)!;
      const shown = help.default ?? (/ [A-Z]/.test(help.usage) ? "—" : "off");
      byDefault.set(shown, [...(byDefault.get(shown) ?? []), script]);
    }
    const groups = [...byDefault].sort((a, b) => b[1].length - a[1].length);
    const defaults = defaultsCell(groups, takers.length);
    const commonScripts = groups[0][1];
    const flag = parsed.get(commonScripts[0])!.get(name)!;
    const others = scripts.filter((script) => !takers.includes(script));
    const servers = others.length === 0
      ? "all"
      : takers.length <= others.length
      ? listed(takers)
      : `all but ${listed(others)}`;
    const cell = (text: string) => text.replaceAll("|", "\\|");
    rows.push(
      `| \`${flag.usage}\` | ${cell(defaults)} | ${
        cell(firstClause(flag.text))
      } | ${servers} |`,
    );
  }
  return rows.join("\n");
}

/**
 * The `--help` of every server in `servers/` that takes server flags (all
 * but keepalive.ts, which serves only the client it starts), by name.
 */
export async function serverHelps(
  root: URL = new URL("../", import.meta.url),
): Promise<Map<string, string>> {
  const names = [...Deno.readDirSync(new URL("servers/", root))]
    .map((entry) => entry.name)
    .filter((name) => name.endsWith(".ts") && name !== "keepalive.ts")
    .sort();
  const helps = new Map<string, string>();
  for (const name of names) {
    const output = await new Deno.Command("deno", {
      args: ["run", `servers/${name}`, "--help"],
      cwd: root,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    if (!output.success) {
      throw new Error(`servers/${name} --help failed`);
    }
    helps.set(name, new TextDecoder().decode(output.stdout));
  }
  return helps;
}

const USAGE = `usage: flags.ts

Prints the README's table of the server flags (Markdown), made from the
--help of every server in servers/.

${flagsHelp({})}`;

if (import.meta.main) {
  await runMain(async () => {
    parseCommandLine(Deno.args, { usage: USAGE, flags: {} });
    console.log(commonFlagsTable(await serverHelps()));
  });
}
