/**
 * haproxy for interop tests: started in the foreground on one thread with
 * a config of the test's own, ready once it listens.
 *
 * @module
 */

import { type ScriptProcess, spawn, waitListening } from "./_helpers.ts";

/**
 * haproxy on one thread, in the foreground, with `config` after the
 * defaults; resolves once it listens on `port`.
 */
export async function startHaproxy(
  port: number,
  config: string,
): Promise<ScriptProcess & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "sockets-haproxy-" });
  const file = `${dir}/haproxy.cfg`;
  await Deno.writeTextFile(
    file,
    `global
  nbthread 1
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
${config}`,
  );
  const proc = spawn("haproxy", { args: ["-db", "-V", "-f", file] });
  try {
    // haproxy prints no address: wait until the kernel lists its socket
    // as listening, its own (a probe connection would reach the target;
    // another test's server on that port must fail here, not later).
    await waitListening(proc.child.pid, { port });
  } catch (error) {
    await proc[Symbol.asyncDispose]();
    throw error;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return proc;
}
