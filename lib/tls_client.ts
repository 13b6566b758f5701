/**
 * The client side of TLS over a connection already made (after Happy
 * Eyeballs has picked the address): `Deno.startTls`, verifying the server's
 * certificate against `--ca` (or Deno's root store) for `--servername` (or
 * the name dialled); with `--insecure`, no verification at all.
 *
 * @module
 */

import { isIP } from "node:net";
import { ConnectError } from "./client.ts";
import { formatAddr } from "./endpoint.ts";
import { NodeTlsConn } from "./tls_node.ts";

/** How {@linkcode startClientTls} verifies the server. */
export interface ClientTlsOptions {
  /** The name the certificate must hold, and the SNI sent (not for IPs). */
  serverName: string;
  /** PEM CA certificates to trust instead of Deno's default roots. */
  caCerts?: string[];
  /** Skip verification entirely (a test server, a self-signed cert...). */
  insecure?: boolean;
  /** Give up the handshake after this long. Default 10000 ms. */
  handshakeTimeoutMs?: number;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Runs the TLS handshake over `conn` and returns the TLS connection; a
 * failure (certificate not trusted, wrong name, not TLS at all, too slow)
 * closes `conn` and throws a `ConnectError` whose message is the line to
 * show (`TLS handshake with 127.0.0.1:443 failed: invalid peer
 * certificate: UnknownIssuer`).
 *
 * @example
 * ```ts
 * import { ConnectError, startClientTls } from "../mod.ts";
 *
 * // A plain TCP server that answers a ClientHello with garbage.
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const serving = listener.accept().then(async (c) => {
 *   await c.write(new TextEncoder().encode("not TLS\r\n"));
 *   c.close();
 * });
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const error = await startClientTls(conn, { serverName: "127.0.0.1" }).catch((e) => e);
 * await serving;
 * if (!(error instanceof ConnectError)) throw error;
 * ```
 */
export async function startClientTls(
  conn: Deno.TcpConn,
  options: ClientTlsOptions,
): Promise<Deno.TlsConn> {
  const target = formatAddr(conn.remoteAddr);
  const name = options.serverName.replace(/^\[|\]$/g, "");
  let tls: Deno.TlsConn;
  if (options.insecure) {
    tls = new NodeTlsConn(conn, {
      client: {
        rejectUnauthorized: false,
        ...(isIP(name) ? {} : { servername: name }),
      },
    });
  } else {
    try {
      tls = await Deno.startTls(conn, {
        hostname: name,
        caCerts: options.caCerts,
      });
    } catch (error) {
      closeQuietly(conn);
      throw handshakeError(target, error);
    }
  }
  const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      tls.handshake(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Deno.errors.TimedOut(
                `no handshake within ${timeoutMs / 1000} s`,
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  } catch (error) {
    closeQuietly(tls);
    throw handshakeError(target, error);
  } finally {
    clearTimeout(timer);
  }
  return tls;
}

function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

function handshakeError(target: string, error: unknown): ConnectError {
  const reason = (error as Error).message.split("\n")[0]
    .replace(/ \(os error \d+\)$/, "");
  return new ConnectError(
    `TLS handshake with ${target} failed: ${reason}`,
    error instanceof Deno.errors.TimedOut ? "timeout" : "other",
    target,
    error,
  );
}
