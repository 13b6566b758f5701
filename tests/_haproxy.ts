/**
 * haproxy for interop tests: started in the foreground on one thread with
 * a config of the test's own, ready once it listens.
 *
 * @module
 */

import { type ScriptProcess, spawn } from "./_helpers.ts";

/** Whether a TCP socket listens on 127.0.0.1:`port` (from /proc/net/tcp). */
export function isListening(port: number): boolean {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  return Deno.readTextFileSync("/proc/net/tcp").split("\n").some((line) => {
    const fields = line.trim().split(/\s+/);
    return fields[1] === local && fields[3] === "0A";
  });
}

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
    // as listening (a probe connection would reach the target).
    await proc.until(() => isListening(port), "haproxy to listen");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return proc;
}
