/**
 * `deno task compile`: builds every script in `servers/` and `clients/` into
 * a self-contained executable `dist/NAME` with `deno compile`, baking in
 * exactly the permissions and flags of the script's header command (see
 * `tasks/scripts.ts` for names and where they come from).
 *
 * ```sh
 * $ deno task compile                    # all, into dist/
 * ...
 * $ deno task compile echo connect       # some
 * dist/echo  --allow-net=0.0.0.0:15000  servers/echo.ts
 * dist/connect  --allow-net=127.0.0.1:15000  clients/connect.ts
 * $ DENORT_BIN=/usr/bin/true deno task compile echo
 * error: DENORT_BIN=/usr/bin/true is not a Deno runtime (denort): run alone, it exits 0 and prints nothing
 * ```
 *
 * `deno compile` joins the program to `denort`, Deno's runtime without its
 * tooling, which it downloads once for its own version. Where that download
 * is impossible (offline, a firewall) this says so in one `error:` line and
 * exits 1, having built nothing; set `DENORT_BIN` to a `denort` of the same
 * Deno version (from the release page, next to `deno` itself) and
 * `deno compile` uses it instead. A `DENORT_BIN` that is not such a runtime
 * is refused before anything is built (`tasks/denort.ts`), and a build that
 * fails leaves no binary and no empty output directory behind.
 *
 * The binaries are built with this repository's `deno.json` (its import map
 * resolves `@std/...`; it turns on the unstable `net` API that UDP needs)
 * and the header's permission flags: deno.json grants no permission.
 *
 * @module
 */

import { flag, flagsHelp, parseCommandLine, UsageError } from "../lib/cli.ts";
import { runMain } from "../lib/main.ts";
import { listScripts, type ScriptInfo } from "./scripts.ts";

const FLAGS = {
  out: flag.string("DIR", "where to put the executables", { default: "dist" }),
};

const USAGE = `usage: deno task compile [--out DIR] [NAME...]

Builds each script (all of them, or those NAMEd) into DIR/NAME (default
dist/) with deno compile and the permissions of its header command.
NAME is the script's deno.json task name: echo, daytime-client, connect...

${flagsHelp(FLAGS)}

Environment: DENORT_BIN=/path/to/denort uses that runtime (same Deno
version) instead of downloading it.`;

/** `deno compile` could not get its runtime: nothing can be built. */
export class RuntimeUnavailableError extends Error {
  /** @param detail Where it tried, as deno compile said. */
  constructor(detail: string) {
    super(
      `deno compile could not download its runtime (denort ${Deno.version.deno}${
        detail ? `, ${detail}` : ""
      }); nothing built. Set DENORT_BIN=/path/to/denort (Deno ${Deno.version.deno}) to use a local one.`,
    );
    this.name = "RuntimeUnavailableError";
  }
}

/**
 * The `deno compile` arguments that build `script` into `output`: its
 * header's permissions, and its own flags (`--port=10013`) after the path,
 * which the binary then passes on every run (no `--` there: deno compile
 * would bake that in too).
 */
export function compileArgs(script: ScriptInfo, output: string): string[] {
  return [
    "compile",
    "--quiet",
    "--config=deno.json",
    ...script.permissions,
    "--output",
    output,
    script.path,
    ...script.args,
  ];
}

/**
 * Throws unless `denort` is a Deno runtime of this version
 * (`tasks/denort.ts`, run by `deno` with read and run permission for that
 * one file): `deno compile` takes any file, and would build a `dist/echo`
 * that does nothing from `/usr/bin/true`.
 */
async function checkRuntime(denort: string, root: URL): Promise<void> {
  const result = await new Deno.Command("deno", {
    args: [
      "run",
      "--quiet",
      "--no-config",
      `--allow-read=${denort}`,
      `--allow-run=${denort}`,
      "tasks/denort.ts",
      denort,
    ],
    cwd: root,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!result.success) {
    throw new Error(oneLine(new TextDecoder().decode(result.stderr)));
  }
}

/** Builds `script` into `output`; throws on failure. */
async function compile(
  script: ScriptInfo,
  output: string,
  root: URL,
): Promise<void> {
  const result = await new Deno.Command("deno", {
    args: compileArgs(script, output),
    cwd: root,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (result.success) return;
  const stderr = new TextDecoder().decode(result.stderr);
  const denort = Deno.env.get("DENORT_BIN");
  // Deno 2.9 says: "Setting up base binary. / error sending request for url
  // (https://.../denort-x86_64-unknown-linux-gnu.zip): ... dns error".
  if (!denort && /base binary|denort/i.test(stderr)) {
    const url = /\((https?:\/\/[^)\s]*denort[^)\s]*)\)/.exec(stderr)?.[1];
    const cause = /(dns error|connection refused|timed out|certificate)/i
      .exec(stderr)?.[1];
    throw new RuntimeUnavailableError(
      [url ? `from ${url}` : "", cause ?? ""].filter(Boolean).join(": "),
    );
  }
  throw new Error(
    `deno compile ${script.path}${denort ? ` (DENORT_BIN=${denort})` : ""}: ${
      oneLine(stderr)
    }`,
  );
}

/**
 * Whether `url` exists; `true` where this task may not look (an `--out`
 * outside the repository), so that it is never removed.
 */
async function exists(url: URL): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch (error) {
    return !(error instanceof Deno.errors.NotFound);
  }
}

/**
 * Deno's error report in one line: its `error:` line, or with a
 * "Caused by" list, the causes joined (`Could not find denort at '/x':
 * No such file or directory (os error 2)`).
 */
function oneLine(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter(Boolean);
  const causes = lines
    .map((l) => /^\d+: (.*)$/.exec(l)?.[1])
    .filter((c): c is string => c !== undefined && c !== "<unknown>");
  if (causes.length > 0) return causes.join(": ");
  const error = lines.find((l) => l.startsWith("error: "));
  return (error ?? lines[0] ?? "failed").replace(/^error: /, "");
}

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
      positionals: ["NAME"],
      min: 0,
      max: Infinity,
    });
    const root = new URL("../", import.meta.url);
    const all = await listScripts(root);
    const unknown = positionals.filter((n) => !all.some((s) => s.name === n));
    if (unknown.length > 0) {
      throw new UsageError(
        `no script named '${unknown[0]}' (names: ${
          all.map((s) => s.name).join(", ")
        })`,
      );
    }
    const chosen = positionals.length > 0
      ? all.filter((s) => positionals.includes(s.name))
      : all;
    const out = values.out.replace(/\/+$/, "") || ".";
    const denort = Deno.env.get("DENORT_BIN");
    if (denort) await checkRuntime(denort, root);
    const outDir = new URL(`${out}/`, root);
    const existed = await exists(outDir);
    for (const script of chosen) {
      const output = `${out}/${script.name}`;
      try {
        await compile(script, output, root);
      } catch (error) {
        // Nothing half-made: not the binary, nor a dist/ left empty.
        await Deno.remove(new URL(output, root)).catch(() => {});
        if (!existed) await Deno.remove(outDir).catch(() => {});
        throw error;
      }
      console.log(
        `${output}  ${script.permissions.join(" ")}  ${
          [script.path, ...script.args].join(" ")
        }`,
      );
    }
  });
}
