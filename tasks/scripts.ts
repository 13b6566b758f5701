/**
 * The scripts of this repository, as the build tooling sees them: every
 * `servers/*.ts` and `clients/*.ts`, its command name and the least-privilege
 * `deno run` command its header comment gives. The header is the one source:
 * `deno task compile` bakes these permissions into `dist/NAME`, and
 * `tests/packaging_test.ts` checks that each script's `deno.json` task and
 * its README lines (`deno run ...`, `deno install -g ...`) say the same.
 *
 * Names: `servers/NAME.ts` is `NAME`; `clients/NAME.ts` is `NAME-client`
 * when a server of that name exists (`daytime-client`), else `NAME`
 * (`connect`). That name is the deno.json task and the `dist/` binary; the
 * command `deno install -g` puts on PATH is `sock-NAME` (`sock-echo`), since
 * a bare `echo` or `time` would be shadowed by the shell's builtins and
 * would hijack every `xargs echo`.
 *
 *     deno run --allow-read=. tasks/scripts.ts            # the table
 *     deno run --allow-read=. tasks/scripts.ts --install  # install lines
 *
 * @module
 */

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
  /** The arguments after the script in that command (e.g. `["127.0.0.1"]`). */
  args: string[];
  /** `deno run FLAGS PATH`, without the arguments. */
  command: string;
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
 * `\` continuations joined and a trailing `# comment` dropped.
 */
export function headerCommand(
  path: string,
  source: string,
): { permissions: string[]; args: string[] } {
  const header = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source);
  if (!header) throw new HeaderError(path, "no header comment (/** ... */)");
  const lines = header[1].split("\n").map((line) =>
    line.replace(/^\s*\*?/, "").trim()
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
    const tokens = line.replace(/\s+#.*$/, "").split(/\s+/);
    if (tokens[0] !== "deno" || tokens[1] !== "run") continue;
    const scriptAt = tokens.findIndex((t, i) => i >= 2 && !t.startsWith("-"));
    if (scriptAt < 0 || tokens[scriptAt] !== path) continue;
    return {
      permissions: tokens.slice(2, scriptAt),
      args: tokens.slice(scriptAt + 1),
    };
  }
  throw new HeaderError(
    path,
    `no \`deno run FLAGS ${path}\` line in the header comment`,
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
      const { permissions, args } = headerCommand(path, source);
      const name = kind === "client" && files.server.includes(stem)
        ? `${stem}-client`
        : stem;
      scripts.push({
        path,
        kind,
        name,
        permissions,
        args,
        command: ["deno", "run", ...permissions, path].join(" "),
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

/** The `deno install -g` line that installs `script` as a command. */
export function installLine(script: ScriptInfo): string {
  return [
    "deno install -g -n",
    commandName(script),
    // An installed command reads no deno.json, but the scripts' bare
    // `@std/...` imports need its import map.
    "--import-map=deno.json",
    ...script.permissions,
    script.path,
  ].join(" ");
}

if (import.meta.main) {
  const scripts = await listScripts(new URL("../", import.meta.url));
  for (const script of scripts) {
    console.log(
      Deno.args.includes("--install")
        ? installLine(script)
        : `${script.name}\t${script.command}${
          script.args.length ? ` ${script.args.join(" ")}` : ""
        }`,
    );
  }
}
