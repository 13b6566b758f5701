/**
 * The alert a TLS 1.2 client owes its refusal to. The TLS engine (rustls
 * under `node:tls`) lets any client certificate finish the handshake and
 * only says afterwards that it does not chain (`verifyError`), and answers
 * a missing one with TLS 1.3's certificate_required even on TLS 1.2. An
 * OpenSSL server (stunnel, socat, haproxy) refuses both in the handshake:
 * handshake_failure for none, unknown_ca for a certificate that does not
 * chain. On TLS 1.2 the client's Certificate message travels in the clear,
 * so {@linkcode Tls12ClientCertGate} reads it before the engine does and
 * answers the same. (On TLS 1.3 it is encrypted: the server refuses right
 * after the handshake instead, see `tls_server.ts`.)
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import { offeredVersions } from "./tls_hello.ts";
import { certificateNames, formatDn } from "./tls_peer.ts";

/** What a server asks of its clients' certificates. */
export interface ClientCertRequest {
  /** `required`: a client without one is refused; `optional`: let in. */
  mode: "required" | "optional";
  /** The CAs a certificate must chain to. */
  ca: readonly X509Certificate[];
}

/** A client refused: the alert record to send, and why, for the log. */
export interface ClientCertRefusal {
  /** A fatal alert record (TLS 1.2). */
  alert: Uint8Array;
  /** `no client certificate`, `client certificate CN=x: not signed by a client CA`... */
  reason: string;
}

/** What the engine may have now, or the refusal (then nothing more). */
export interface GateVerdict {
  forward: Uint8Array;
  refusal?: ClientCertRefusal;
}

/** TLS alert descriptions (RFC 5246, section 7.2). */
const ALERT = {
  handshakeFailure: 40,
  badCertificate: 42,
  certificateExpired: 45,
  unknownCa: 48,
} as const;

const TLS12 = 0x0303;
const TLS13 = 0x0304;
const HANDSHAKE = 22;
const CERTIFICATE = 11;
/** Most certificates followed from a client's up to a CA. */
const MAX_CHAIN = 10;

function refusal(description: number, reason: string): ClientCertRefusal {
  return {
    alert: new Uint8Array([21, TLS12 >> 8, TLS12 & 0xff, 0, 2, 2, description]),
    reason,
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b.slice();
  const joined = new Uint8Array(a.byteLength + b.byteLength);
  joined.set(a);
  joined.set(b, a.byteLength);
  return joined;
}

/**
 * Judges a TLS 1.2 client's certificate from its bytes before the engine
 * sees them: {@linkcode Tls12ClientCertGate.feed} each chunk the client
 * sends, in order, and hand `forward` to the engine; with `alert`, send it
 * and close instead. The ClientHello goes through at once; a client that
 * offers TLS 1.3 is the engine's alone; otherwise its next flight is held
 * until its Certificate message is whole.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { Tls12ClientCertGate } from "./tls12_client_cert.ts";
 *
 * const gate = new Tls12ClientCertGate({ mode: "required", ca: [] });
 * // Not a ClientHello: the engine's to refuse.
 * const bytes = new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n");
 * assertEquals(gate.feed(bytes).forward, bytes);
 * ```
 */
export class Tls12ClientCertGate {
  readonly #request: ClientCertRequest;
  readonly #now: () => Date;
  /** What is kept of the client's bytes while undecided. */
  #held: Uint8Array = new Uint8Array(0);
  #phase: "hello" | "flight" | "done" | "refused" = "hello";

  /** A gate for one connection; `now` is the clock validity is judged by. */
  constructor(request: ClientCertRequest, now: () => Date = () => new Date()) {
    this.#request = request;
    this.#now = now;
  }

  /** Whether the client passed: from here on every byte goes as it is. */
  get decided(): boolean {
    return this.#phase === "done";
  }

  /**
   * Takes the client's next bytes: what the engine may have now, or the
   * alert to send (then close; nothing more is forwarded).
   */
  feed(bytes: Uint8Array): GateVerdict {
    if (this.#phase === "done") return { forward: bytes };
    if (this.#phase === "refused") return { forward: new Uint8Array(0) };
    if (this.#phase === "hello") return this.#hello(bytes);
    this.#held = concat(this.#held, bytes);
    const verdict = this.#judgeFlight();
    if (verdict === "wait") return { forward: new Uint8Array(0) };
    const held = this.#held;
    this.#held = new Uint8Array(0);
    if (verdict === "pass") {
      this.#phase = "done";
      return { forward: held };
    }
    this.#phase = "refused";
    return { forward: new Uint8Array(0), refusal: verdict };
  }

  /** The ClientHello passes at once; kept until its record is whole. */
  #hello(bytes: Uint8Array): GateVerdict {
    const seen = concat(this.#held, bytes);
    if (seen[0] !== HANDSHAKE) {
      this.#phase = "done";
      this.#held = new Uint8Array(0);
      return { forward: bytes };
    }
    if (seen.byteLength < 5) {
      this.#held = seen;
      return { forward: bytes };
    }
    const end = 5 + ((seen[3] << 8) | seen[4]);
    if (seen.byteLength < end) {
      this.#held = seen;
      return { forward: bytes };
    }
    const offered = offeredVersions(seen);
    // A hello longer than its record, or one offering TLS 1.3 (which the
    // engine picks): nothing here to read.
    const helloLength = (seen[6] << 16) | (seen[7] << 8) | seen[8];
    if (!offered || offered.max >= TLS13 || 9 + helloLength > end) {
      this.#phase = "done";
      this.#held = new Uint8Array(0);
      return { forward: bytes };
    }
    this.#phase = "flight";
    // What came after the hello record is the next flight's: held.
    const after = seen.subarray(end);
    this.#held = new Uint8Array(0);
    const forward = bytes.subarray(0, bytes.byteLength - after.byteLength);
    if (after.byteLength === 0) return { forward };
    const next = this.feed(after);
    return { ...next, forward: concat(forward, next.forward) };
  }

  /**
   * The held flight: `wait` until its first handshake message is whole,
   * then `pass`, or the alert for a Certificate message that is empty
   * (when required) or does not chain.
   */
  #judgeFlight(): "wait" | "pass" | ClientCertRefusal {
    const bytes = this.#held;
    let message: Uint8Array = new Uint8Array(0);
    for (let at = 0;;) {
      if (bytes.byteLength < at + 5) return "wait";
      if (bytes[at] !== HANDSHAKE) return "pass";
      const end = at + 5 + ((bytes[at + 3] << 8) | bytes[at + 4]);
      if (bytes.byteLength < end) return "wait";
      message = concat(message, bytes.subarray(at + 5, end));
      at = end;
      if (message.byteLength < 4) continue;
      const length = (message[1] << 16) | (message[2] << 8) | message[3];
      if (message.byteLength < 4 + length) continue;
      if (message[0] !== CERTIFICATE) return "pass";
      return this.#judgeCertificates(message.subarray(4, 4 + length));
    }
  }

  #judgeCertificates(body: Uint8Array): "pass" | ClientCertRefusal {
    const ders: Uint8Array[] = [];
    for (let at = 3; at + 3 <= body.byteLength;) {
      const length = (body[at] << 16) | (body[at + 1] << 8) | body[at + 2];
      ders.push(body.subarray(at + 3, at + 3 + length));
      at += 3 + length;
    }
    if (ders.length === 0) {
      return this.#request.mode === "required"
        ? refusal(ALERT.handshakeFailure, "no client certificate")
        : "pass";
    }
    let chain: X509Certificate[];
    try {
      chain = ders.map((der) => new X509Certificate(der));
    } catch {
      return refusal(
        ALERT.badCertificate,
        "client certificate does not parse",
      );
    }
    const verdict = chainsTo(chain, this.#request.ca, this.#now());
    if (verdict === "ok") return "pass";
    const subject = formatDn(certificateNames(ders[0]).subject);
    return verdict === "expired"
      ? refusal(
        ALERT.certificateExpired,
        `client certificate ${subject} refused: expired or not valid yet`,
      )
      : refusal(
        ALERT.unknownCa,
        `client certificate ${subject} refused: not signed by a client CA`,
      );
  }
}

/**
 * Whether `chain[0]` leads, through the others, to one of `roots`, each
 * certificate signed by the next and valid at `now`.
 */
function chainsTo(
  chain: readonly X509Certificate[],
  roots: readonly X509Certificate[],
  now: Date,
): "ok" | "expired" | "unknown" {
  const signs = (issuer: X509Certificate, subject: X509Certificate) =>
    subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  let current = chain[0];
  for (let depth = 0; depth < MAX_CHAIN; depth++) {
    if (
      now < new Date(current.validFrom) || now > new Date(current.validTo)
    ) {
      return "expired";
    }
    if (roots.some((root) => root.fingerprint256 === current.fingerprint256)) {
      return "ok";
    }
    if (roots.some((root) => signs(root, current))) return "ok";
    const issuer = chain.find((next) =>
      next !== current && next.ca && signs(next, current)
    );
    if (!issuer) return "unknown";
    current = issuer;
  }
  return "unknown";
}
