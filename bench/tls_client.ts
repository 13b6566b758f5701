/**
 * The client scenario of the TLS bench (`bench/tls.ts`): one TLS client
 * command pushing a file through an echo and back into a file, timed from
 * outside (bash: `$EPOCHREALTIME` around it, `times` for the CPU of its
 * process), and checked byte for byte.
 *
 * @module
 */

import type { Figure } from "./_shared.ts";

/** How bench.ts runs a command (on a CPU of its choice). */
type Run = (
  command: string[],
  options?: { cpu?: number },
) => Promise<{ code: number; stdout: string; stderr: string }>;

/** `bytes` of a pattern in the file `path`, made once: what the clients send. */
export function makeClientInput(path: string, bytes: number): string {
  try {
    if (Deno.statSync(path).size === bytes) return path;
  } catch {
    // Not made yet.
  }
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7 + 3) % 251;
  using file = Deno.openSync(path, {
    write: true,
    create: true,
    truncate: true,
  });
  for (let left = bytes; left > 0; left -= chunk.length) {
    const part = chunk.subarray(0, Math.min(left, chunk.length));
    for (let at = 0; at < part.length;) {
      at += file.writeSync(part.subarray(at));
    }
  }
  return path;
}

/** Where a client reads, writes, and runs. */
export interface ClientRun {
  /** The file sent (stdin). */
  input: string;
  /** Where what comes back goes (stdout); removed after. */
  output: string;
  /** `input`'s size. */
  bytes: number;
  /** The CPU it runs on. */
  cpu: number;
}

/**
 * Runs `command` twice: with nothing to send (it warms Deno's module cache,
 * and its time, start, handshake and close, is the part of the figure that
 * is not TLS data: `empty_wall_s`, `empty_cpu_ms`), then with `input`:
 * `wall_s`, `cpu_ms`, `mb_per_s` and `cpu_us` (per MB sent).
 */
export async function measureClient(
  run: Run,
  command: string[],
  where: ClientRun,
): Promise<Figure> {
  const empty = await push(run, command, {
    ...where,
    input: "/dev/null",
    bytes: 0,
  });
  if (empty.error) return empty;
  const figure = await push(run, command, where);
  if (figure.error) return figure;
  return {
    ...figure,
    mb_per_s: where.bytes / 1e6 / (figure.wall_s as number),
    cpu_us: (figure.cpu_ms as number) * 1000 / (where.bytes / 1e6),
    empty_wall_s: empty.wall_s,
    empty_cpu_ms: empty.cpu_ms,
  };
}

/**
 * Runs `command` with `input` as stdin and `output` as stdout: its wall
 * time and the CPU time of its process, once `output` is `input` byte for
 * byte.
 */
async function push(
  run: Run,
  command: string[],
  { input, output, bytes, cpu }: ClientRun,
): Promise<Figure> {
  const script =
    'in=$1 out=$2; shift 2; t0=$EPOCHREALTIME; "$@" <"$in" >"$out"' +
    '; code=$?; t1=$EPOCHREALTIME; echo "$t0 $t1"; times; exit $code';
  try {
    const result = await run(
      ["bash", "-c", script, "bash", input, output, ...command],
      { cpu },
    );
    if (result.code !== 0) {
      return { error: result.stderr.trim() || `exit ${result.code}` };
    }
    const received = Deno.statSync(output).size;
    if (received !== bytes) {
      return { error: `${received} bytes came back of ${bytes} sent` };
    }
    const same = await run(["cmp", input, output]);
    if (same.code !== 0) return { error: same.stdout.trim() || same.stderr };
    // "T0 T1", then `times`: the shell's user and system time, its children's.
    const [clock, , children] = result.stdout.trim().split("\n");
    const [t0, t1] = clock.split(" ").map(Number);
    const cpuS = children.split(" ").map(seconds).reduce((a, b) => a + b, 0);
    return { bytes, wall_s: t1 - t0, cpu_ms: cpuS * 1000 };
  } finally {
    try {
      Deno.removeSync(output);
    } catch {
      // Not written.
    }
  }
}

/** `0m1.250s`, as bash's `times` prints it, in seconds. */
function seconds(text: string): number {
  const match = /^(\d+)m([\d.]+)s$/.exec(text);
  if (!match) throw new Error(`unexpected times output: ${text}`);
  return Number(match[1]) * 60 + Number(match[2]);
}
