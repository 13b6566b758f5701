/**
 * The client side of TLS over a connection already made (after Happy
 * Eyeballs has picked the address): `Deno.startTls`, verifying the server's
 * certificate against `--ca` (or Deno's root store) for `--servername` (or
 * the name dialled); with `--insecure`, no verification at all.
 *
 * @module
 */

import { formatIPv6, parseIPv4, parseIPv6, stripBrackets } from "./address.ts";
import { ConnectError } from "./connect_error.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { formatAddr } from "./endpoint.ts";
import { closeQuietly } from "./io.ts";
import { NodeTlsConn } from "./tls_node.ts";
import { withoutOsError } from "./os_error.ts";
import type { TlsCertificate } from "./tls.ts";

/** How {@linkcode startClientTls} verifies the server. */
export interface ClientTlsOptions {
  /** The name the certificate must hold, and the SNI sent (not for IPs). */
  serverName: string;
  /** PEM CA certificates to trust instead of Deno's default roots. */
  caCerts?: string[];
  /** Skip verification entirely (a test server, a self-signed cert...). */
  insecure?: boolean;
  /**
   * A client certificate and key to present when the server asks
   * (`--cert`/`--key`, e.g. from `readTlsFiles`).
   */
  certificate?: TlsCertificate;
  /** Give up the handshake after this long. Default 10000 ms. */
  handshakeTimeoutMs?: number;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Runs the TLS handshake over `conn` and returns the TLS connection; a
 * failure (certificate not trusted, wrong name, not TLS at all, too slow)
 * closes `conn` and throws a `ConnectError` whose message is the line to
 * show, the problem and its fix (`TLS handshake with 127.0.0.1:443 failed:
 * certificate not trusted (unknown issuer): give --ca FILE with the CA
 * that signed it, or --insecure to skip the check`).
 *
 * @example
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { ConnectError, startClientTls } from "../mod.ts";
 *
 * // A plain TCP server that answers a ClientHello with garbage.
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const serving = listener.accept().then(async (c) => {
 *   await c.write(new TextEncoder().encode("not TLS\r\n"));
 *   c.close();
 * });
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * await assertRejects(
 *   () => startClientTls(conn, { serverName: "127.0.0.1" }),
 *   ConnectError,
 *   "TLS handshake with 127.0.0.1:",
 * );
 * await serving;
 * ```
 */
export async function startClientTls(
  conn: Deno.TcpConn,
  options: ClientTlsOptions,
): Promise<Deno.TlsConn> {
  const target = formatAddr(conn.remoteAddr);
  const name = stripBrackets(options.serverName);
  let tls: Deno.TlsConn;
  if (options.insecure || options.certificate) {
    // `Deno.startTls` can neither skip verification nor present a client
    // certificate: `node:tls` does both (and verifies the same way).
    tls = new NodeTlsConn(conn, {
      client: {
        rejectUnauthorized: !options.insecure,
        host: name,
        ...(options.caCerts && { ca: options.caCerts }),
        ...(options.certificate && {
          cert: options.certificate.cert,
          key: options.certificate.key,
        }),
        // SNI carries names only (RFC 6066 §3).
        ...(parseIPv4(name) || parseIPv6(name) ? {} : { servername: name }),
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

/** IPv6 as usually written (`0::1` -> `::1`); anything else as it is. */
function canonicalIP(text: string): string {
  const groups = parseIPv6(text);
  return groups ? formatIPv6(groups) : text;
}

/**
 * What the TLS library says (rustls's words, some of them Rust debug
 * structs) and the line a user sees for it: the problem, then the fix.
 */
const HANDSHAKE_FAILURES: readonly [
  RegExp,
  (match: RegExpMatchArray) => string,
][] = [
  [
    /UnknownIssuer|UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify the first certificate|unable to get local issuer|self.signed certificate/,
    () =>
      "certificate not trusted (unknown issuer): give --ca FILE with the CA that signed it, or --insecure to skip the check",
  ],
  [
    /certificate not valid for name "([^"]*)"(?:; certificate is only valid for (.*))?/,
    (m) => {
      const names = [
        ...(m[2] ?? "").matchAll(/DnsName\("([^"]*)"\)|IpAddress\(([^)]*)\)/g),
      ].map((n) => n[1] ?? canonicalIP(n[2]));
      return `certificate not valid for name '${m[1]}'` +
        (names.length > 0 ? ` (it is for ${names.join(", ")})` : "") +
        ": give --servername with a name the certificate holds";
    },
  ],
  [
    /Host: ([^ ]*?)\.? is not in the cert's altnames: (.*)/,
    (m) =>
      `certificate not valid for name '${m[1]}' (it is for ${
        m[2].replace(/DNS:|IP Address:/g, "")
      }): give --servername with a name the certificate holds`,
  ],
  [
    /certificate required|CertificateRequired|unknown ca|bad certificate|BadCertificate|UnknownCA/i,
    () =>
      "the server refused the client certificate (or wants one): give --cert and --key with one its CA signed",
  ],
  [
    /CaUsedAsEndEntity/,
    () =>
      "the server presented a CA certificate as its own: it needs a server certificate signed by that CA",
  ],
  [
    /NotValidYet|not valid yet/i,
    () => "certificate not valid yet: check the clocks of both machines",
  ],
  [
    /Expired|expired/,
    () => "certificate expired: the server needs a new one",
  ],
  [
    /Revoked/,
    () => "certificate revoked: the server needs a new one",
  ],
  [
    /BadEncoding|BadDer/,
    () => "the server's certificate does not parse",
  ],
  [
    /InvalidContentType|corrupt message|InvalidMessage|unexpected message/i,
    () =>
      "the server does not speak TLS there (is it a plain TCP port? drop --tls)",
  ],
];

function handshakeError(target: string, error: unknown): ConnectError {
  const said = withoutOsError(
    ((error as Error)?.message ?? String(error)).split("\n")[0],
  );
  const known = HANDSHAKE_FAILURES.map(([pattern, describe]) => {
    const match = pattern.exec(said);
    return match && describe(match);
  }).find((line) => line);
  // Whatever else: without Rust's wrappers (`Other(OtherError(...))`).
  const reason = known ??
    said.replace(/\b(?:Other|OtherError)\(/g, "").replace(/\)+$/, "");
  return new ConnectError(
    // The reason may quote the server's certificate (the names it holds).
    `TLS handshake with ${target} failed: ${escapeControlChars(reason)}`,
    error instanceof Deno.errors.TimedOut ? "timeout" : "other",
    target,
    error,
  );
}
