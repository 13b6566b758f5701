/**
 * Helpers for the tests of `servers/exec.ts`: test programs (small `sh`
 * scripts in a temporary directory), the server started with exactly the
 * permissions its header gives, and its children counted from /proc.
 *
 * @module
 */

import { writeAll } from "../mod.ts";
import {
  eventually,
  readAll,
  repoPath,
  ScriptProcess,
  withTlsEngine,
} from "./_helpers.ts";

/** Re-exported for the exec tests: the one poll helper is `_helpers.ts`'s. */
export { eventually };

/**
 * Digits this test process adds to its programs' `sleep` times (a
 * marker in their command lines), so that
 * {@linkcode processesWith} finds this run's programs, not those of
 * another run of the suite on the same machine.
 */
export const RUN = String(Math.floor(Math.random() * 1e6)).padStart(6, "0");
/** In the command line of `ignore_term.sh`'s `sleep`, while it runs. */
export const IGNORE_TERM_MARKER = `987.654${RUN}`;
/** In the command line of `wait.sh`'s `sleep`, while it runs. */
export const WAIT_MARKER = `986.5${RUN}`;

/** The scripts every exec test may run, by name. */
const PROGRAMS: Record<string, string> = {
  // Reads one line, answers it.
  "answer.sh": `IFS= read -r line; printf 'hello, %s\\n' "$line"`,
  // Says something on stderr, then on stdout.
  "stderr.sh":
    `printf 'first warning\\n\\033[31mred\\r\\nlast' >&2; printf 'out\\n'`,
  // Writes a line, closes its stdout, then reads a line and logs it.
  "close_stdout.sh":
    `echo early; exec >&-; IFS= read -r line; echo "read: $line" >&2`,
  // Ignores SIGTERM (sleep inherits the ignored signal across exec), says
  // so, and waits: only SIGKILL ends it before its time.
  "ignore_term.sh":
    `trap '' TERM; echo ready; exec sleep ${IGNORE_TERM_MARKER}`,
  // Runs until signalled, without reading or writing.
  "wait.sh": `exec sleep ${WAIT_MARKER}`,
  // Closes its stdout (the client gets EOF), then neither reads nor writes.
  "close_stdout_wait.sh": `exec >&-; exec sleep 985.75${RUN}`,
  // Prints its environment, sorted.
  "env.sh": `/usr/bin/env | /usr/bin/sort`,
};

let programsDir: string | undefined;

/** The absolute path of test program `name` (written on first use). */
export function program(name: keyof typeof PROGRAMS | string): string {
  if (!programsDir) {
    programsDir = Deno.makeTempDirSync({ prefix: "sockets-exec-" });
    for (const [file, body] of Object.entries(PROGRAMS)) {
      Deno.writeTextFileSync(`${programsDir}/${file}`, `#!/bin/sh\n${body}\n`, {
        mode: 0o755,
      });
    }
    const dir = programsDir;
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Gone.
      }
    });
  }
  return `${programsDir}/${name}`;
}

/** The permissions exec.ts's header gives for `command` on 127.0.0.1:0. */
export function execPermissions(command: string): string[] {
  return [
    "--allow-net=127.0.0.1:0",
    `--allow-run=${command}`,
    ...(command.includes("/") ? [`--allow-read=${command}`] : []),
  ];
}

/** A running exec.ts. */
export interface ExecServer extends AsyncDisposable {
  proc: ScriptProcess;
  /** The deno process's id. */
  pid: number;
  port: number;
  /** Its address, from its `listening on` line. */
  address: string;
}

/**
 * Starts `servers/exec.ts` on 127.0.0.1 port 0 with `flags`, then `--`
 * and `command`; permissions from its header unless given. `ulimit` runs
 * it under `sh -c 'ulimit -n N; exec deno ...'`; `env` adds to its
 * environment.
 */
export async function startExec(
  command: string[],
  flags: string[] = [],
  options: {
    permissions?: string[];
    ulimit?: number;
    env?: Record<string, string>;
    address?: string[];
  } = {},
): Promise<ExecServer> {
  const deno = [
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-prompt",
    ...(options.permissions ?? execPermissions(command[0])),
    repoPath("servers/exec.ts"),
    ...(options.address ?? ["--hostname", "127.0.0.1", "--port", "0"]),
    // Tests end by SIGTERM: programs still running get a short grace.
    ...(flags.includes("--grace") ? [] : ["--grace", "1"]),
    ...withTlsEngine("servers/exec.ts", flags),
    "--",
    ...command,
  ];
  const [cmd, args] = options.ulimit === undefined
    ? [deno[0], deno.slice(1)]
    : ["sh", ["-c", `ulimit -n ${options.ulimit} && exec "$@"`, "sh", ...deno]];
  const child = new Deno.Command(cmd, {
    args,
    cwd: repoPath(""),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).spawn();
  const proc = new ScriptProcess(child);
  try {
    const match = await proc.waitForStderr(/^listening on (\S+)$/, 30_000);
    return {
      proc,
      pid: child.pid,
      address: match[1],
      port: Number(/:(\d+)$/.exec(match[1])?.[1] ?? 0),
      [Symbol.asyncDispose]: () => proc.terminate(15_000),
    };
  } catch (error) {
    await proc[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * The children of process `pid` (every thread's), zombies included:
 * `/proc/PID/task/TID/children`.
 */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const text = Deno.readTextFileSync(
        `/proc/${pid}/task/${task.name}/children`,
      );
      children.push(...text.split(/\s+/).filter(Boolean).map(Number));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return children;
}

/** Processes anywhere on the machine whose command line contains `marker`. */
export function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      if (cmdline.replaceAll("\0", " ").includes(marker)) {
        found.push(Number(entry.name));
      }
    } catch {
      // Exited meanwhile.
    }
  }
  return found;
}

/** Connects to `port`, sends `input`, half-closes, reads to EOF. */
export async function exchange(
  port: number,
  input: Uint8Array | string | null,
  options: { hostname?: string; halfClose?: boolean } = {},
): Promise<Uint8Array> {
  using conn = await Deno.connect({
    hostname: options.hostname ?? "127.0.0.1",
    port,
  });
  const reading = readAll(conn);
  if (input !== null) {
    await writeAll(
      conn,
      typeof input === "string" ? new TextEncoder().encode(input) : input,
    );
  }
  if (options.halfClose ?? true) await conn.closeWrite();
  return await reading;
}

/** Reads `conn` to EOF, failing if EOF has not come within `timeoutMs`. */
export async function readToEof(
  conn: Deno.Conn,
  timeoutMs = 5000,
): Promise<Uint8Array> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reading = readAll(conn);
  reading.catch(() => {}); // Settles when the caller closes conn.
  try {
    return await Promise.race([
      reading,
      new Promise<never>((_, reject) =>
        timer = setTimeout(
          () => reject(new Error(`no EOF within ${timeoutMs} ms`)),
          timeoutMs,
        )
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
