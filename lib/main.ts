/**
 * A script's life around its body: {@linkcode runMain} runs it and turns
 * its outcome into an exit code and at most one `error:` line
 * ({@linkcode describeError}: a usage error exits 2, any other failure 1,
 * `--help` prints the usage and exits 0); {@linkcode rerunCommand} is the
 * command that runs the script again, for hints a user can paste, and
 * {@linkcode permissionHint} the whole command a missing permission needs:
 * the permissions the run has used so far ({@linkcode notePermission}),
 * with the missing one. A hint that only named the flag could not be
 * followed from `deno task echo --port 15001`: a task takes no Deno flags.
 *
 * @module
 */

import { HelpRequested, UsageError } from "./cli.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { writeAll } from "./io.ts";
import { flushStderrLog } from "./log.ts";

/**
 * Turns an expected failure into the one line a user sees (without the
 * `error: ` prefix): its first line, with what is left of control
 * characters escaped (`escapeControlChars`: a message may quote a file's
 * text, a peer's name or a certificate's).
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { describeError } from "./main.ts";
 *
 * const line = describeError(new Deno.errors.ConnectionRefused("refused"));
 * assertStringIncludes(line, "refused");
 * assertStringIncludes(describeError(new Error("a\u2028b")), "a\\u{2028}b");
 * ```
 */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return escapeControlChars(String(error));
  const first = (error.message || error.name).split("\n")[0];
  return escapeControlChars(first).replace(/^error: /, "").replace(
    // Deno without its unstable net API (no --unstable-net, and no
    // deno.json saying "unstable": ["net"] for this script).
    /\bDeno\.listenDatagram is not a function\b.*/,
    "UDP and Unix datagram sockets need Deno's unstable net API: run with --unstable-net",
  ).replace(
    // Deno's NotCapable: the whole command, with the flag, ready to paste.
    /(requires (\w+) access to "([^"]+)"), run again with the --allow-\2 flag/i,
    (_, requires, name, value) =>
      `${requires}: ${permissionHint(`--allow-${name}`, [value])}`,
  );
}

/**
 * The Deno flags this run has needed so far, by flag (`--allow-net`), each
 * with its values (`0.0.0.0:15000`; `""` for the flag without a value).
 */
const notedPermissions = new Map<string, Set<string>>();

/**
 * Notes that this run needs the Deno flag `flag` (`--allow-net`,
 * `--unstable-net`) with `values` (none: the flag alone), for
 * {@linkcode permissionHint}. The toolkit notes a server's listen address,
 * a client's target, each file it reads and each program it runs.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { notePermission, permissionHint } from "./main.ts";
 *
 * notePermission("--allow-net", "0.0.0.0:8000");
 * // In a doc test, the main module is no script of the toolkit:
 * assertEquals(permissionHint("--allow-run", ["date"]), "run with --allow-run=date");
 * ```
 */
export function notePermission(flag: string, ...values: string[]): void {
  const noted = notedPermissions.get(flag) ?? new Set<string>();
  for (const value of values.length > 0 ? values : [""]) noted.add(value);
  notedPermissions.set(flag, noted);
}

/**
 * A hint for a missing permission: `run again as: deno run FLAGS SCRIPT
 * ARGS`, with every permission noted so far and this one (a task, or an
 * installed command, takes no Deno flags: the user needs the whole line),
 * or `run with --allow-run=date` when the main module is no script of the
 * toolkit.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { permissionHint } from "./main.ts";
 *
 * assertEquals(permissionHint("--allow-read", ["ca.pem"]), "run with --allow-read=ca.pem");
 * ```
 */
export function permissionHint(
  flag: string,
  values: readonly string[],
): string {
  notePermission(flag, ...values);
  const flags = [...notedPermissions].sort(([a], [b]) =>
    Number(b.startsWith("--unstable")) - Number(a.startsWith("--unstable"))
  ).map(([name, noted]) =>
    noted.has("") ? name : `${name}=${[...noted].join(",")}`
  );
  const command = rerunCommand(flags, {});
  if (command !== undefined) return `run again as: ${command}`;
  const wanted = values.length > 0 ? `${flag}=${values.join(",")}` : flag;
  return `run with ${wanted}`;
}

/**
 * The command that runs this script again with `permissions` and the flags
 * in `replace` set (each replacing what the command line gave): a hint a
 * user can paste, e.g. `deno run --allow-net=0.0.0.0:10013
 * servers/daytime.ts --port 10013`. `undefined` when the main module is
 * not one of the toolkit's scripts.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { rerunCommand } from "./main.ts";
 *
 * // Run as `servers/daytime.ts --port 13`, this is `deno run
 * // --allow-net=0.0.0.0:10013 servers/daytime.ts --port 10013`; a doc
 * // test's main module is no script of the toolkit: no hint.
 * assertEquals(rerunCommand(["--allow-net=0.0.0.0:10013"], { port: "10013" }), undefined);
 * ```
 */
export function rerunCommand(
  permissions: readonly string[],
  replace: Readonly<Record<string, string>>,
): string | undefined {
  const script = /\/((?:servers|clients)\/[\w-]+\.ts)$/.exec(
    Deno.mainModule,
  )?.[1];
  if (script === undefined) return undefined;
  const args: string[] = [];
  for (let i = 0; i < Deno.args.length; i++) {
    const arg = Deno.args[i];
    if (arg === "--") {
      args.push(...Deno.args.slice(i));
      break;
    }
    const match = /^--([^=]+)(=.*)?$/s.exec(arg);
    if (match && Object.hasOwn(replace, match[1])) {
      if (match[2] === undefined) i++; // `--port 13`: its value too.
      continue;
    }
    args.push(arg);
  }
  const flags = Object.entries(replace).flatMap(([name, value]) => [
    `--${name}`,
    value,
  ]);
  const at = args.indexOf("--");
  if (at >= 0) args.splice(at, 0, ...flags);
  else args.push(...flags);
  const quote = (word: string) =>
    /^[\w@%+=:,./[\]-]+$/.test(word)
      ? word
      : `'${word.replaceAll("'", `'\\''`)}'`;
  return ["deno", "run", ...permissions, script, ...args].map(quote).join(" ");
}

/**
 * Runs a script's body and turns its outcome into an exit code: the number
 * it returns (default 0); {@linkcode HelpRequested} prints usage and exits
 * 0; {@linkcode UsageError} prints `error: ...` and exits 2; any other
 * failure prints `error: ...` and exits 1.
 *
 * @example
 * ```ts ignore
 * import { runMain } from "./main.ts";
 *
 * await runMain(async () => {
 *   console.log("hello");
 * });
 * ```
 */
export async function runMain(
  body: () => Promise<number | void>,
): Promise<never> {
  let code: number;
  try {
    code = (await body()) ?? 0;
  } catch (error) {
    await flushStderrLog();
    if (error instanceof HelpRequested) {
      await writeAll(
        Deno.stdout,
        new TextEncoder().encode(error.usage.trimEnd() + "\n"),
      );
      Deno.exit(0);
    }
    console.error(`error: ${describeError(error)}`);
    Deno.exit(error instanceof UsageError ? 2 : 1);
  }
  await flushStderrLog();
  Deno.exit(code);
}
