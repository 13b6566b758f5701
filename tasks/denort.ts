/**
 * Checks that a file is a `denort` (Deno's runtime without its tooling, the
 * base `deno compile` joins a program to) of this Deno's version, before
 * `deno task compile` builds 100 MB binaries on it: `/usr/bin/true` would
 * give a `dist/echo` that does nothing, the full `deno` binary one that
 * prints Deno's help. `tasks/compile.ts` runs it as a subprocess allowed
 * to read and run that one file.
 *
 * ```sh
 * $ deno run --allow-read=/usr/bin/true --allow-run=/usr/bin/true tasks/denort.ts /usr/bin/true
 * error: DENORT_BIN=/usr/bin/true is not a Deno runtime (denort): run alone, it exits 0 and prints nothing
 * ```
 *
 * @module
 */

/**
 * What denort says when run alone, with no program joined to it (Deno 2's
 * `cli/rt`); the full `deno` binary does not hold the sentence.
 */
const DENORT_MARK = "Could not find standalone binary section";

/**
 * Why `path` is not a denort of Deno `version` (what follows
 * `DENORT_BIN=PATH ` in the error), or `undefined` when it is: it must
 * exist, hold denort's own message and `version`, and, run alone, fail
 * with that message.
 *
 * @example
 * ```ts ignore
 * import { runtimeProblem } from "./denort.ts";
 *
 * console.log(await runtimeProblem("/usr/bin/true"));
 * // is not a Deno runtime (denort): run alone, it exits 0 and prints nothing
 * ```
 */
export async function runtimeProblem(
  path: string,
  version: string = Deno.version.deno,
): Promise<string | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    return error instanceof Deno.errors.NotFound
      ? "does not exist"
      : `cannot be read: ${(error as Error).message}`;
  }
  const text = new TextDecoder("latin1").decode(bytes);
  let run: Deno.CommandOutput;
  try {
    run = await new Deno.Command(path, {
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
      signal: AbortSignal.timeout(10_000),
    }).output();
  } catch (error) {
    return `cannot be run: ${(error as Error).message}`;
  }
  const said = new TextDecoder().decode(run.stderr).trim() ||
    new TextDecoder().decode(run.stdout).trim();
  if (!text.includes(DENORT_MARK) || !said.includes(DENORT_MARK)) {
    const first = said.split("\n")[0];
    return `is not a Deno runtime (denort): run alone, it exits ${run.code} and ${
      first ? `prints '${first.slice(0, 60)}'` : "prints nothing"
    }`;
  }
  if (!text.includes(version)) {
    return `is a denort, but not of Deno ${version} (download the one of this version)`;
  }
  return undefined;
}

if (import.meta.main) {
  const [path] = Deno.args;
  const problem = await runtimeProblem(path);
  if (problem) {
    console.error(`error: DENORT_BIN=${path} ${problem}`);
    Deno.exit(1);
  }
}
