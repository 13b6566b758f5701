/**
 * What a TLS server learns about a connection once its handshake is done
 * ({@linkcode TlsSession}: protocol, cipher, the client's certificate) and
 * how a program is told it ({@linkcode tlsSessionEnv}: the `SSL_*`
 * variables of Apache's mod_ssl and ucspi-ssl's `sslserver`). A
 * distinguished name is written as stunnel writes it, in its log and in
 * the `SSL_CLIENT_DN` it gives an `exec` program ({@linkcode formatDn}:
 * OpenSSL's `X509_NAME_print_ex` with `XN_FLAG_ONELINE` less
 * `ASN1_STRFLGS_ESC_MSB` and `XN_FLAG_SPC_EQ`, that is
 * `C=DE, O="Example, Inc.", CN=alice`), so a program moved from stunnel
 * or `sslserver` compares the same strings.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";

/** A client certificate, as a program and the log lines see it. */
export interface PeerCertificate {
  /** Its subject, as {@linkcode formatDn} writes it. */
  subject: string;
  /** Its issuer, likewise. */
  issuer: string;
  /** Its serial number, upper-case hex in whole bytes (as mod_ssl's `SSL_CLIENT_M_SERIAL`). */
  serial: string;
  /** When it expires, as OpenSSL prints it (`Dec  9 18:12:54 2026 GMT`). */
  validTo: string;
  /** The certificate, PEM. */
  pem: string;
}

/** A TLS connection, once its handshake is done. */
export interface TlsSession {
  /** `TLSv1.3` or `TLSv1.2`. */
  protocol: string;
  /** The cipher suite, by OpenSSL's name (`TLS_AES_256_GCM_SHA384`). */
  cipher: string;
  /** The client's certificate, verified against the client CAs; absent when none was asked or sent. */
  client?: PeerCertificate;
  /** The server certificate's subject, as {@linkcode formatDn} writes it. */
  serverSubject: string;
}

/** What a TLS engine tells of a finished handshake (see `TlsConnInfo`). */
export interface TlsHandshakeFacts {
  protocol: string;
  cipher: string;
  /** The client certificate's DER, when it sent one. */
  peerCertificate?: Uint8Array;
  /** Why that certificate does not chain to the client CAs (OpenSSL's code), if it does not. */
  verifyError?: string;
}

/**
 * A TLS connection that can say what its handshake settled (both engines,
 * `tls_native.ts` and `tls_node.ts`).
 */
export interface TlsConnInfo {
  /** Protocol, cipher and the peer's certificate; after the handshake. */
  handshakeFacts(): TlsHandshakeFacts;
  /**
   * Closes at once, without close_notify: a client refused after its
   * handshake must see the connection cut, not a clean (empty) end.
   * `alert`, if given, is written to the socket as it is first (see
   * `certificateRefusedAlert` in `tls_hello.ts`).
   */
  abort(alert?: Uint8Array): void;
}

/** Whether `conn` is a {@linkcode TlsConnInfo}. */
export function hasHandshakeFacts(conn: unknown): conn is TlsConnInfo {
  return typeof (conn as TlsConnInfo)?.handshakeFacts === "function";
}

/**
 * The certificate's fields for a program and the log, from its DER.
 *
 * @example
 * ```ts ignore
 * const peer = peerCertificate(der);
 * console.log(peer.subject); // C=DE, O="Example, Inc.", CN=alice
 * ```
 */
export function peerCertificate(der: Uint8Array): PeerCertificate {
  const x509 = new X509Certificate(der);
  const names = certificateNames(der);
  return {
    subject: formatDn(names.subject),
    issuer: formatDn(names.issuer),
    // Whole bytes, as OpenSSL's i2a_ASN1_INTEGER (mod_ssl, `openssl x509
    // -serial`) writes it: `0BB9...`, not `BB9...`.
    serial: x509.serialNumber.toUpperCase().padStart(
      Math.ceil(x509.serialNumber.length / 2) * 2,
      "0",
    ),
    validTo: x509.validTo,
    pem: x509.toString(),
  };
}

/** The subject of the first certificate of a PEM chain, by {@linkcode formatDn}. */
export function pemSubject(pem: string): string {
  return formatDn(certificateNames(new X509Certificate(pem).raw).subject);
}

/**
 * The `SSL_*` variables of mod_ssl and ucspi-ssl's `sslserver` for a
 * session: `SSL_PROTOCOL`, `SSL_CIPHER`, `SSL_SERVER_S_DN`,
 * `SSL_CLIENT_VERIFY` (`SUCCESS` with a verified certificate, else
 * `NONE`: a refused one never reaches a program) and, with a certificate,
 * `SSL_CLIENT_S_DN`, `SSL_CLIENT_I_DN`, `SSL_CLIENT_M_SERIAL`,
 * `SSL_CLIENT_V_END` and `SSL_CLIENT_CERT` (PEM).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { tlsSessionEnv } from "./tls_peer.ts";
 *
 * assertEquals(
 *   tlsSessionEnv({ protocol: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverSubject: "CN=localhost" }),
 *   {
 *     SSL_PROTOCOL: "TLSv1.3",
 *     SSL_CIPHER: "TLS_AES_128_GCM_SHA256",
 *     SSL_SERVER_S_DN: "CN=localhost",
 *     SSL_CLIENT_VERIFY: "NONE",
 *   },
 * );
 * ```
 */
export function tlsSessionEnv(session: TlsSession): Record<string, string> {
  const env: Record<string, string> = {
    SSL_PROTOCOL: session.protocol,
    SSL_CIPHER: session.cipher,
    SSL_SERVER_S_DN: session.serverSubject,
    SSL_CLIENT_VERIFY: session.client ? "SUCCESS" : "NONE",
  };
  const client = session.client;
  if (client) {
    env.SSL_CLIENT_S_DN = client.subject;
    env.SSL_CLIENT_I_DN = client.issuer;
    env.SSL_CLIENT_M_SERIAL = client.serial;
    env.SSL_CLIENT_V_END = client.validTo;
    env.SSL_CLIENT_CERT = client.pem;
  }
  return env;
}

/** One attribute of a distinguished name: its type (an OID) and value. */
export interface DnAttribute {
  /** Dotted OID (`2.5.4.3`). */
  oid: string;
  /** ASN.1 tag of the value (12 UTF8String, 19 PrintableString...). */
  tag: number;
  /** The value's content bytes. */
  value: Uint8Array;
}

/** A distinguished name: its RDNs in order, each one or more attributes. */
export type DistinguishedName = DnAttribute[][];

/** The short names OpenSSL prints (`XN_FLAG_FN_SN`). */
const SHORT_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.4": "SN",
  "2.5.4.5": "serialNumber",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.9": "street",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.12": "title",
  "2.5.4.13": "description",
  "2.5.4.15": "businessCategory",
  "2.5.4.17": "postalCode",
  "2.5.4.41": "name",
  "2.5.4.42": "GN",
  "2.5.4.43": "initials",
  "2.5.4.44": "generationQualifier",
  "2.5.4.46": "dnQualifier",
  "2.5.4.65": "pseudonym",
  "1.2.840.113549.1.9.1": "emailAddress",
  "0.9.2342.19200300.100.1.1": "UID",
  "0.9.2342.19200300.100.1.25": "DC",
};

/**
 * A distinguished name as stunnel writes it (OpenSSL's one-line form:
 * RDNs in certificate order joined by `, `, the attributes of one RDN by
 * ` + `, short names, `=` without spaces; a value holding `, + ; < >` or
 * starting with `#` or a space or ending with a space in double quotes;
 * `\` and `"` escaped with `\`, control characters as `\XX`; other bytes
 * as UTF-8).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { formatDn } from "./tls_peer.ts";
 *
 * const utf8 = (oid: string, text: string) => ({ oid, tag: 12, value: new TextEncoder().encode(text) });
 * assertEquals(
 *   formatDn([[utf8("2.5.4.6", "DE")], [utf8("2.5.4.10", "Example, Inc.")], [utf8("2.5.4.3", "alice")]]),
 *   'C=DE, O="Example, Inc.", CN=alice',
 * );
 * ```
 */
export function formatDn(name: DistinguishedName): string {
  return name.map((rdn) =>
    rdn.map((attribute) =>
      `${SHORT_NAMES[attribute.oid] ?? attribute.oid}=${formatValue(attribute)}`
    ).join(" + ")
  ).join(", ");
}

const STRING_TAGS = new Set([12, 19, 20, 22, 26, 30, 28]);

function formatValue({ tag, value }: DnAttribute): string {
  if (!STRING_TAGS.has(tag)) {
    // XN_FLAG_DUMP_UNKNOWN_FIELDS: the whole DER, in hex.
    const der = [tag, ...derLength(value.byteLength), ...value];
    return "#" + der.map((b) => b.toString(16).padStart(2, "0").toUpperCase())
      .join("");
  }
  const text = tag === 30
    ? utf16be(value)
    : tag === 28
    ? utf32be(value)
    : tag === 20
    ? String.fromCharCode(...value) // T61: read as Latin-1, as OpenSSL does
    : new TextDecoder().decode(value);
  let quote = false;
  let out = "";
  const chars = [...text];
  chars.forEach((char, i) => {
    const code = char.codePointAt(0)!;
    if (",+;<>".includes(char)) quote = true;
    else if (
      (i === 0 && (char === "#" || char === " ")) ||
      (i === chars.length - 1 && char === " ")
    ) quote = true;
    if (char === "\\" || char === '"') out += "\\" + char;
    else if (code < 0x20 || code === 0x7f) {
      out += "\\" + code.toString(16).padStart(2, "0").toUpperCase();
    } else out += char;
  });
  return quote ? `"${out}"` : out;
}

function utf16be(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    text += String.fromCharCode((bytes[i] << 8) | bytes[i + 1]);
  }
  return text;
}

function utf32be(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i + 3 < bytes.length; i += 4) {
    text += String.fromCodePoint(
      ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) |
        bytes[i + 3]) >>> 0,
    );
  }
  return text;
}

function derLength(n: number): number[] {
  if (n < 0x80) return [n];
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return [0x80 | bytes.length, ...bytes];
}

/** One DER element: its tag, its content, and where the next one starts. */
interface Element {
  tag: number;
  content: Uint8Array;
  next: number;
}

function element(bytes: Uint8Array, at: number): Element {
  const tag = bytes[at];
  let length = bytes[at + 1];
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[start + i];
    start += count;
  }
  if (tag === undefined || start + length > bytes.length) {
    throw new RangeError("truncated DER");
  }
  return {
    tag,
    content: bytes.subarray(start, start + length),
    next: start + length,
  };
}

function children(bytes: Uint8Array): Element[] {
  const list: Element[] = [];
  for (let at = 0; at < bytes.length;) {
    const child = element(bytes, at);
    list.push(child);
    at = child.next;
  }
  return list;
}

function oidText(bytes: Uint8Array): string {
  const parts: number[] = [];
  let value = 0;
  for (const byte of bytes) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      if (parts.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        parts.push(first, value - first * 40);
      } else parts.push(value);
      value = 0;
    }
  }
  return parts.join(".");
}

function parseName(bytes: Uint8Array): DistinguishedName {
  return children(bytes).map((set) =>
    children(set.content).map((pair) => {
      const [type, value] = children(pair.content);
      return {
        oid: oidText(type.content),
        tag: value.tag,
        value: value.content,
      };
    })
  );
}

/**
 * The subject and issuer names of a DER certificate.
 *
 * @example
 * ```ts ignore
 * const { subject } = certificateNames(new X509Certificate(pem).raw);
 * ```
 */
export function certificateNames(
  der: Uint8Array,
): { subject: DistinguishedName; issuer: DistinguishedName } {
  const certificate = element(der, 0);
  const tbs = children(element(certificate.content, 0).content);
  // version [0] is optional: serial, signature, issuer, validity, subject.
  const fields = tbs[0].tag === 0xa0 ? tbs.slice(1) : tbs;
  return {
    issuer: parseName(fields[2].content),
    subject: parseName(fields[4].content),
  };
}
