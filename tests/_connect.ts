/**
 * Running `clients/connect.ts` as a user does, for the tests of it
 * (`connect_test.ts`, and `connect_netns_test.ts` in a network namespace).
 *
 * @module
 */

import { concat } from "@std/bytes";
import { spawn } from "./_helpers.ts";

/** The script under test. */
export const SCRIPT = "clients/connect.ts";
const encoder = new TextEncoder();

/** What a run of connect.ts did. */
export interface ClientRun {
  code: number;
  stdout: Uint8Array;
  stderr: string;
  lines: string[];
  tookMs: number;
}

/**
 * Runs connect.ts with `permissions` (as its header says) and `args`,
 * feeding `input` (in chunks, `pauseMs` apart) on stdin, then closing it.
 */
export async function runClient(
  permissions: string[],
  args: string[],
  input: (string | Uint8Array)[] = [],
  options: { prefix?: string[]; pauseMs?: number } = {},
): Promise<ClientRun> {
  const began = performance.now();
  await using proc = spawn(SCRIPT, {
    permissions,
    args,
    stdin: true,
    prefix: options.prefix,
  });
  // A test must not eat the machine if the client meets the wrong peer:
  // more than 64 MiB of output or a minute of running kills it.
  const watchdog = setInterval(() => {
    const bytes = proc.stdoutChunks.reduce((n, c) => n + c.byteLength, 0);
    if (bytes > 64 * 1024 * 1024 || performance.now() - began > 60_000) {
      proc.kill("SIGKILL");
    }
  }, 100);
  const writer = proc.child.stdin.getWriter();
  try {
    for (const chunk of input) {
      await writer.write(
        typeof chunk === "string" ? encoder.encode(chunk) : chunk,
      );
      if (options.pauseMs) {
        await new Promise((r) => setTimeout(r, options.pauseMs));
      }
    }
    await writer.close();
  } catch {
    // The client exited before reading all its input.
  }
  const { code, stderr } = await proc.finished().finally(() =>
    clearInterval(watchdog)
  );
  return {
    code,
    stdout: concat(proc.stdoutChunks),
    stderr,
    lines: proc.stderrLines,
    tookMs: performance.now() - began,
  };
}

/** Bytes as UTF-8 text. */
export const text = (bytes: Uint8Array): string =>
  new TextDecoder().decode(bytes);
