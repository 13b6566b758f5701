/**
 * Helpers for the stress tests: the server subprocess's memory and
 * descriptors from /proc, the rude C client, figures printed in the output.
 *
 * @module
 */

import { hasCommand, repoPath, ScriptProcess } from "../_helpers.ts";

/** VmRSS and VmHWM of a process, in KiB. */
export function memoryKiB(pid: number): { rss: number; hwm: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

/** How many descriptors a process holds open. */
export function fdCount(pid: number): number {
  let count = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) count++;
  return count;
}

/** KiB as MiB with one decimal. */
export function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

/** Prints one figures line, `FIGURES name: key=value ...`, to the test output. */
export function figures(
  name: string,
  values: Record<string, string | number>,
): void {
  console.log(
    `FIGURES ${name}: ${
      Object.entries(values).map(([k, v]) => `${k}=${v}`).join(" ")
    }`,
  );
}

/** Samples a process's VmRSS every `everyMs` and keeps the peak. */
export class RssSampler implements Disposable {
  peakKiB = 0;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(pid: number, everyMs = 50) {
    const sample = () => {
      try {
        this.peakKiB = Math.max(this.peakKiB, memoryKiB(pid).rss);
      } catch {
        // Exited.
      }
    };
    sample();
    this.#timer = setInterval(sample, everyMs);
  }

  [Symbol.dispose](): void {
    clearInterval(this.#timer);
  }
}

/** The echo server as a user starts it: TCP on a free loopback port. */
export interface EchoProcess extends AsyncDisposable {
  proc: ScriptProcess;
  pid: number;
  port: number;
}

/**
 * Starts `servers/echo.ts` on 127.0.0.1, port 0, with its header's
 * permissions (or `permissions`); `ulimit` runs it under `sh -c 'ulimit -n N; exec deno ...'`.
 */
export function startEcho(
  args: string[] = [],
  options: { ulimit?: number; permissions?: string[] } = {},
): Promise<EchoProcess> {
  return startServerScript("servers/echo.ts", args, options);
}

/** Like {@linkcode startEcho}, for any server script in the repository. */
export async function startServerScript(
  script: string,
  args: string[] = [],
  options: { ulimit?: number; permissions?: string[] } = {},
): Promise<EchoProcess> {
  const deno = [
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-prompt",
    ...(options.permissions ?? ["--allow-net=127.0.0.1:0"]),
    repoPath(script),
    "--hostname",
    "127.0.0.1",
    "--port",
    "0",
    ...args,
  ];
  const [command, commandArgs] = options.ulimit === undefined
    ? [deno[0], deno.slice(1)]
    : ["sh", ["-c", `ulimit -n ${options.ulimit} && exec "$@"`, "sh", ...deno]];
  const child = new Deno.Command(command, {
    args: commandArgs,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const proc = new ScriptProcess(child);
  try {
    const match = await proc.waitForStderr(/^listening on \S+:(\d+)$/, 30_000);
    return {
      proc,
      pid: child.pid,
      port: Number(match[1]),
      [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose](),
    };
  } catch (error) {
    await proc[Symbol.asyncDispose]();
    throw error;
  }
}

let rudeClient: string | undefined;

/**
 * Compiles `tests/stress/rude_client.c` once (gcc) and returns the binary's
 * path; see that file for what it does.
 */
export function compileRudeClient(): string {
  if (rudeClient) return rudeClient;
  const dir = Deno.makeTempDirSync({ prefix: "rel6-rude-" });
  const out = `${dir}/rude_client`;
  const { success, stderr } = new Deno.Command("gcc", {
    args: ["-O2", "-o", out, repoPath("tests/stress/rude_client.c")],
    stderr: "piped",
  }).outputSync();
  if (!success) {
    throw new Error(`gcc failed: ${new TextDecoder().decode(stderr)}`);
  }
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Gone.
    }
  });
  return rudeClient = out;
}

/** `true` (skip) when gcc is missing, after printing why. */
export function missingGcc(): boolean {
  if (hasCommand("gcc")) return false;
  console.error("SKIP: gcc not installed (.ci/run installs it)");
  return true;
}

/** Compares `actual` with `expected` byte by byte. */
export function sameBytes(actual: Uint8Array, expected: Uint8Array): boolean {
  if (actual.byteLength !== expected.byteLength) return false;
  for (let i = 0; i < actual.byteLength; i++) {
    if (actual[i] !== expected[i]) return false;
  }
  return true;
}

/**
 * Sends `data` on `conn`, half-closes, and reads the echo while sending,
 * comparing as it goes (nothing is kept); resolves with the bytes that came
 * back and whether all matched.
 */
export async function echoExchange(
  conn: Deno.Conn,
  data: Uint8Array,
  writeChunk = 65536,
): Promise<{ received: number; exact: boolean }> {
  const writing = (async () => {
    for (let offset = 0; offset < data.byteLength;) {
      offset += await conn.write(
        data.subarray(offset, Math.min(offset + writeChunk, data.byteLength)),
      );
    }
    await conn.closeWrite();
  })();
  const buffer = new Uint8Array(65536);
  let received = 0;
  let exact = true;
  for (let n; (n = await conn.read(buffer)) !== null;) {
    if (
      exact &&
      !sameBytes(buffer.subarray(0, n), data.subarray(received, received + n))
    ) {
      exact = false;
    }
    received += n;
  }
  await writing;
  return { received, exact: exact && received === data.byteLength };
}

/** Counts stderr lines matching `pattern`. */
export function countLines(proc: ScriptProcess, pattern: RegExp): number {
  return proc.stderrLines.filter((line) => pattern.test(line)).length;
}
