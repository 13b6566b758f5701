/**
 * What a TLS server reads of a client's first bytes (its ClientHello) to
 * answer a refused handshake with the alert `Deno.listenTls` (rustls) or
 * an OpenSSL server would send, in a record the client can read.
 *
 * @module
 */

/** TLS alert descriptions (RFC 8446, section 6). */
const ALERT = {
  handshakeFailure: 40,
  badCertificate: 42,
  illegalParameter: 47,
  decodeError: 50,
  protocolVersion: 70,
} as const;

/** TLS 1.2's version number: anything lower is refused. */
const TLS12 = 0x0303;
/** The largest record payload TLS allows (RFC 8446, section 5.1). */
const MAX_RECORD = 16 * 1024;

/** A fatal alert record with `description`, of record version `version`. */
function alertRecord(description: number, version: number): Uint8Array {
  return new Uint8Array([
    21,
    version >> 8,
    version & 0xff,
    0,
    2,
    2,
    description,
  ]);
}

/**
 * The fatal alert record for a handshake that failed with `error`, as
 * `Deno.listenTls` (rustls) sends it, or `undefined` when none is owed (the
 * client sent an alert itself, or went away). A client that offers nothing
 * newer than TLS 1.1 gets protocol_version, as OpenSSL servers say, in a
 * record of its own version so that it can read it.
 */
export function handshakeAlert(
  error: Error,
  hello: Uint8Array,
): Uint8Array | undefined {
  const offered = offeredVersions(hello);
  let description: number;
  if (/^peer is incompatible/.test(error.message)) {
    description = offered && offered.max < TLS12
      ? ALERT.protocolVersion
      : ALERT.handshakeFailure;
  } else if (/^peer misbehaved/.test(error.message)) {
    description = ALERT.illegalParameter;
  } else if (/^received corrupt message/.test(error.message)) {
    description = ALERT.decodeError;
  } else {
    return undefined;
  }
  return alertRecord(description, Math.min(offered?.max ?? TLS12, TLS12));
}

/**
 * Whether the first bytes of a connection, `hello`, settle what the
 * client offers: `"wait"` while its first record is incomplete (up to a
 * record's largest size), `"tls12"` when it is not a ClientHello or offers
 * TLS 1.2 or newer (the TLS library takes it from there), else the
 * protocol_version alert owed to a client that offers only older versions
 * (which rustls would answer with handshake_failure), in a record of the
 * client's own version so that it can read it.
 */
export function legacyHelloAlert(
  hello: Uint8Array,
): "wait" | "tls12" | Uint8Array {
  if (hello.byteLength > 0 && hello[0] !== 22) return "tls12";
  if (hello.byteLength < 5) return "wait";
  const length = (hello[3] << 8) | hello[4];
  if (length > MAX_RECORD) return "tls12";
  if (hello.byteLength < 5 + length) return "wait";
  const offered = offeredVersions(hello);
  if (!offered || offered.max >= TLS12) return "tls12";
  return alertRecord(ALERT.protocolVersion, offered.max);
}

/**
 * The highest TLS version a ClientHello offers (its `supported_versions`
 * extension, else its `client_version`), or `undefined` when `bytes` do
 * not start with a whole ClientHello record.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { offeredVersions } from "./tls_hello.ts";
 *
 * assertEquals(offeredVersions(new Uint8Array([23, 3, 3, 0, 0])), undefined);
 * ```
 */
export function offeredVersions(
  bytes: Uint8Array,
): { max: number } | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Record header: handshake (22), version, length; then ClientHello (1).
  if (bytes.byteLength < 5 + 4 + 2 || bytes[0] !== 22 || bytes[5] !== 1) {
    return undefined;
  }
  const end = Math.min(bytes.byteLength, 5 + view.getUint16(3));
  let max = view.getUint16(9);
  let at = 11 + 32; // client_version, random
  const skip = (lengthBytes: 1 | 2) => {
    if (at + lengthBytes > end) return false;
    at += lengthBytes +
      (lengthBytes === 1 ? bytes[at] : view.getUint16(at));
    return at <= end;
  };
  // session_id, cipher_suites, compression_methods.
  if (!skip(1) || !skip(2) || !skip(1)) return { max };
  if (at + 2 > end) return { max };
  const extensionsEnd = Math.min(end, at + 2 + view.getUint16(at));
  at += 2;
  while (at + 4 <= extensionsEnd) {
    const type = view.getUint16(at);
    const length = view.getUint16(at + 2);
    at += 4;
    if (type === 0x002b && at + 1 <= extensionsEnd) {
      // supported_versions: a length byte, then two bytes per version.
      max = 0;
      for (
        let i = at + 1;
        i + 2 <= Math.min(at + 1 + bytes[at], extensionsEnd);
        i += 2
      ) {
        const version = view.getUint16(i);
        // GREASE values (0x?a?a) are not versions.
        if ((version & 0x0f0f) !== 0x0a0a) max = Math.max(max, version);
      }
      return { max };
    }
    at += length;
  }
  return { max };
}

/**
 * What a server sends a client it refuses for its certificate after a TLS
 * 1.3 handshake, when the engine can no longer send an encrypted alert: a
 * plaintext bad_certificate alert. The client cannot read it as a record
 * of the session (it fails, with a decryption or alert error), so it can
 * never take the refusal for a clean, empty end, whether or not its own
 * first bytes have reached the server (closing over those would reset the
 * connection; closing before them only ends it).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { certificateRefusedAlert } from "./tls_hello.ts";
 *
 * assertEquals(certificateRefusedAlert()[0], 21); // an alert record
 * ```
 */
export function certificateRefusedAlert(): Uint8Array {
  return alertRecord(ALERT.badCertificate, TLS12);
}
