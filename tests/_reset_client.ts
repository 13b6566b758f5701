/**
 * A client that pushes bytes at a server until the server stops reading
 * them, then resets: socat sending /dev/zero with `linger=0`, killed once
 * its bytes back up (what a crashed or killed client does). Over TCP or
 * TLS. The server is then blocked writing to whatever it feeds (a program
 * that does not read, a target that does not read), the case where nothing
 * reads the client's socket to find the reset.
 *
 * @module
 */

import { type ScriptProcess, spawn } from "./_helpers.ts";

/**
 * The unsent bytes queued on the local TCP socket with port `port` (this
 * network namespace's `/proc/net/tcp`), or `undefined` when there is none.
 */
function sendQueue(port: number): number | undefined {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of Deno.readTextFileSync(table).split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      // sl local rem st tx_queue:rx_queue ...: ESTABLISHED (01), or
      // CLOSE_WAIT (08) once the server has half-closed.
      if (fields[1]?.endsWith(hex) && ["01", "08"].includes(fields[3])) {
        return parseInt(fields[4].split(":")[0], 16);
      }
    }
  }
  return undefined;
}

/**
 * Connects socat to 127.0.0.1:`port` (TLS without verification with
 * `tls`), waits until `server` logs accepting it and its bytes back up
 * (the server has stopped reading them: its receive buffer is full), then
 * kills socat: with `linger=0` its kernel resets the connection. Resolves
 * to the client's port, as the server's lines name it.
 */
export async function pushThenReset(
  server: ScriptProcess,
  port: number,
  options: { tls?: boolean; backedUpBytes?: number } = {},
): Promise<number> {
  const address = options.tls
    ? `OPENSSL:127.0.0.1:${port},verify=0,linger=0`
    : `TCP:127.0.0.1:${port},linger=0`;
  await using socat = spawn("socat", {
    args: ["-u", "OPEN:/dev/zero", address],
  });
  // The server's `accepted` line comes after a TLS handshake too.
  const before = server.stderrLines.length;
  const fresh = () =>
    server.stderrLines.slice(before).map((line) =>
      line.match(/^accepted 127\.0\.0\.1:(\d+)$/)
    ).find((match) => match !== null);
  await server.until(() => fresh() !== undefined, "socat to be accepted");
  const clientPort = Number(fresh()![1]);
  const backedUp = options.backedUpBytes ?? 64 * 1024;
  await socat.until(
    () => (sendQueue(clientPort) ?? 0) >= backedUp,
    `socat's bytes to back up (${backedUp} unsent)`,
  );
  socat.kill("SIGKILL");
  return clientPort;
}
