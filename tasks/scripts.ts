/**
 * The scripts of this repository, as the build tooling sees them: every
 * `servers/*.ts` and `clients/*.ts`, its command name and the least-privilege
 * `deno run` command its header comment gives. The header is the one source:
 * the script's `deno.json` task, its `deno install` line and the permissions
 * `deno task compile` bakes into `dist/NAME` all come from it, and
 * `tests/packaging_test.ts` checks that they agree.
 *
 * The header command is the first `$ deno run FLAGS PATH [ARGS]` line of
 * the script's module doc (in a session block; a pipe into it, a
 * trailing `&` or a `# comment` is dropped). Its arguments that start with `--` (written
 * `--name=value` when they take a value, so they cannot be mistaken for a
 * positional) are part of the command: the task, the installed command and
 * the binary pass them on every run (`--port=10013`, so that a user who is
 * not root runs the simple services where inetd puts them). The others are
 * the example's positionals (`127.0.0.1`), which the user gives:
 * `deno task daytime-client 127.0.0.1`.
 *
 * Names: `servers/NAME.ts` is `NAME`; `clients/NAME.ts` is `NAME-client`
 * when a server of that name exists (`daytime-client`), else `NAME`
 * (`connect`). That name is the deno.json task and the `dist/` binary; the
 * command `deno install -g` puts on PATH is `sock-NAME` (`sock-echo`), since
 * a bare `echo` or `time` would be shadowed by the shell's builtins and
 * would hijack every `xargs echo`.
 *
 * ```sh
 * $ deno run --allow-read=. tasks/scripts.ts            # the tasks
 * accept	deno run --allow-net=[::]:12345,0.0.0.0:12345 servers/accept.ts
 * ...
 * $ deno run --allow-read=. tasks/scripts.ts --install  # install lines
 * deno install -g -f -n sock-accept --config=deno.json --allow-net=[::]:12345,0.0.0.0:12345 servers/accept.ts
 * ...
 * $ deno run --allow-read=. tasks/scripts.ts --help
 * usage: scripts.ts [--install]
 * ...
 * ```
 *
 * @module
 */

import { flag, flagsHelp, parseCommandLine } from "../lib/cli.ts";
import { runMain } from "../lib/main.ts";

const FLAGS = {
  install: flag.boolean("print the deno install lines instead of the tasks"),
};

/** One script and the command its header gives for it. */
export interface ScriptInfo {
  /** Path relative to the repository, e.g. `servers/echo.ts`. */
  path: string;
  /** `server` for `servers/`, `client` for `clients/`. */
  kind: "server" | "client";
  /** Task, binary and command name, e.g. `echo`, `daytime-client`. */
  name: string;
  /** The `deno run` flags before the script, e.g. `["--allow-net=0.0.0.0:15000"]`. */
  permissions: string[];
  /**
   * The script's own flags every run gets (the task, the installed command
   * and the binary pass them), e.g. `["--port=10013"]`; mostly none.
   */
  args: string[];
  /** The header example's positionals, which the user gives (`["127.0.0.1"]`). */
  example: string[];
  /** `deno run FLAGS PATH`, without arguments. */
  command: string;
  /** The deno.json task: `deno run FLAGS PATH ARGS`. */
  task: string;
}

/** A script whose header has no `deno run ... PATH` line for itself. */
export class HeaderError extends Error {
  /**
   * @param path The script, relative to the repository.
   * @param message What is wrong with its header.
   */
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "HeaderError";
  }
}

/**
 * The first `deno run` command in the header comment of the script at
 * `path` (relative to the repository) that runs that script itself, with
 * `\` continuations joined, a leading `$ ` prompt and a trailing `&` or
 * `# comment` dropped; its arguments split into the script's flags (`--`)
 * and the example's positionals.
 */
export function headerCommand(
  path: string,
  source: string,
): { permissions: string[]; args: string[]; example: string[] } {
  const header = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source);
  if (!header) throw new HeaderError(path, "no header comment (/** ... */)");
  const lines = header[1].split("\n").map((line) =>
    line.replace(/^\s*\*?/, "").trim().replace(/^\$ /, "")
  );
  const joined: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    while (line.endsWith("\\") && i + 1 < lines.length) {
      line = `${line.slice(0, -1).trimEnd()} ${lines[++i]}`;
    }
    joined.push(line);
  }
  for (const line of joined) {
    const tokens = line.replace(/\s+#.*$/, "").replace(/\s*&$/, "")
      .replace(/^.*\|\s*(?=deno run )/, "") // `echo ping | deno run ...`
      .split(/\s+/);
    if (tokens[0] !== "deno" || tokens[1] !== "run") continue;
    const scriptAt = tokens.findIndex((t, i) => i >= 2 && !t.startsWith("-"));
    if (scriptAt < 0 || tokens[scriptAt] !== path) continue;
    const rest = tokens.slice(scriptAt + 1);
    // After `--`, all is the example's (a program and its arguments): a
    // user names their own, so it is never baked into a task or install.
    const end = rest.indexOf("--");
    const flags = end < 0 ? rest : rest.slice(0, end);
    const tail = end < 0 ? [] : rest.slice(end);
    flags.forEach((token, i) => {
      const next = flags[i + 1];
      if (
        token.startsWith("--") && !token.includes("=") &&
        next !== undefined && !next.startsWith("-")
      ) {
        throw new HeaderError(
          path,
          `write '${token}=${next}' in the header command: '${token} ${next}' reads as a switch and a positional`,
        );
      }
    });
    return {
      permissions: tokens.slice(2, scriptAt),
      args: flags.filter((t) => t.startsWith("--")),
      example: [...flags.filter((t) => !t.startsWith("--")), ...tail],
    };
  }
  throw new HeaderError(
    path,
    `no \`$ deno run FLAGS ${path}\` line in the header comment`,
  );
}

/**
 * Every script in `servers/` and `clients/` under `root` (a directory
 * path or URL ending in `/`), servers first, each sorted by name.
 */
export async function listScripts(root: string | URL): Promise<ScriptInfo[]> {
  const base = new URL(root, import.meta.url);
  const files: Record<"server" | "client", string[]> = {
    server: [],
    client: [],
  };
  for (const kind of ["server", "client"] as const) {
    try {
      for await (const entry of Deno.readDir(new URL(`${kind}s/`, base))) {
        if (entry.isFile && entry.name.endsWith(".ts")) {
          files[kind].push(entry.name.slice(0, -3));
        }
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    files[kind].sort();
  }
  const scripts: ScriptInfo[] = [];
  for (const kind of ["server", "client"] as const) {
    for (const stem of files[kind]) {
      const path = `${kind}s/${stem}.ts`;
      const source = await Deno.readTextFile(new URL(path, base));
      const { permissions, args, example } = headerCommand(path, source);
      const name = kind === "client" && files.server.includes(stem)
        ? `${stem}-client`
        : stem;
      const command = ["deno", "run", ...permissions, path].join(" ");
      scripts.push({
        path,
        kind,
        name,
        permissions,
        args,
        example,
        command,
        task: [command, ...args].join(" "),
      });
    }
  }
  return scripts;
}

/** The prefix of installed commands: `sock-echo`, `sock-connect`. */
export const COMMAND_PREFIX = "sock-";

/** The command name `deno install -g` gives `script`, e.g. `sock-echo`. */
export function commandName(script: ScriptInfo): string {
  return COMMAND_PREFIX + script.name;
}

/**
 * The `deno install -g` line that installs `script` as a command; it names
 * this repository's `deno.json`, whose import map resolves `@std/...` and
 * which turns on the unstable `net` API for UDP (an installed command reads
 * no config file it is not given). `-f` replaces an earlier install; the
 * script's own flags follow `--` (without it, `deno install` takes them
 * for its own).
 */
export function installLine(script: ScriptInfo): string {
  return [
    "deno install -g -f -n",
    commandName(script),
    "--config=deno.json",
    ...script.permissions,
    script.path,
    ...(script.args.length > 0 ? ["--", ...script.args] : []),
  ].join(" ");
}

const USAGE = `usage: scripts.ts [--install]

Prints each script's deno.json task (NAME, a tab, the command), the
least-privilege command of its header comment; with --install, the
deno install line of each, which installs it as sock-NAME:

  deno run --allow-read=. tasks/scripts.ts --install | sh

${flagsHelp(FLAGS)}`;

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
    });
    const scripts = await listScripts(new URL("../", import.meta.url));
    for (const script of scripts) {
      console.log(
        values.install ? installLine(script) : `${script.name}\t${script.task}`,
      );
    }
  });
}
