/**
 * The PROXY protocol (haproxy's `doc/proxy-protocol.txt`, versions 1 and 2):
 * a header a proxy puts in front of a connection it relays, carrying the
 * client's address, so the server behind it can log, allow or deny the real
 * client rather than the proxy. Version 1 is one text line
 * (`PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n`, at most 107 bytes);
 * version 2 starts with a 12-byte signature, then binary addresses and
 * optional type-length-value fields.
 *
 * - {@linkcode encodeProxyHeader}: the header a sender writes first.
 * - {@linkcode readProxyHeader}: reads one off an accepted connection, with
 *   a deadline and a size limit, and never a byte past it: what follows is
 *   left in the socket for the server, TLS or not.
 * - {@linkcode parseProxyHeader}: the parser underneath, for bytes at hand.
 *
 * Accept headers only from proxies you trust: anyone who can send one
 * chooses the address a server believes (the spec: a receiver must not
 * guess whether a header is there, and should let only its proxies in).
 *
 * By hand, the line haproxy's `send-proxy` writes (`send-proxy-v2` writes
 * version 2), to `servers/echo.ts --accept-proxy`:
 *
 *     $ deno run --allow-net=127.0.0.1:15000 servers/echo.ts --hostname 127.0.0.1 --accept-proxy &
 *     listening on 127.0.0.1:15000
 *     $ printf 'PROXY TCP4 192.0.2.1 192.0.2.80 51234 7\r\nhi\n' | socat - TCP:127.0.0.1:15000
 *     hi
 *     accepted 127.0.0.1:40000 for 192.0.2.1:51234 (PROXY v1)
 *     closed 127.0.0.1:40000 (3 bytes in, 3 bytes out) for 192.0.2.1:51234 (PROXY v1)
 *
 * @module
 */

import { parseIPv4, parseIPv6, unmapIPv4 } from "./address.ts";
import { formatSeconds } from "./units.ts";
import { crc32c } from "./crc32c.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { type ByteReader, readExactInto, UnexpectedEofError } from "./io.ts";

// For users of this module (the `./proxy` export): the types its
// functions take, and the checksum of v2 headers.
export type { ByteReader } from "./io.ts";
export { crc32c } from "./crc32c.ts";

/** The 12 bytes every version 2 header starts with. */
const V2_SIGNATURE = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);
/** Signature, version and command, family, length. */
const V2_FIXED = 16;
/** Version 1: the longest line the spec allows, CRLF included. */
export const MAX_V1_HEADER_BYTES = 107;
/** Version 1: `PROXY UNKNOWN\r\n`, the shortest line. */
const MIN_V1_HEADER_BYTES = 15;
const V1_PREFIX = "PROXY ";
/** The TLV holding a CRC32C of the whole header (spec section 2.2.3). */
const PP2_TYPE_CRC32C = 0x03;
/** Bytes of an address block: IPv4, IPv6, Unix (two addresses, two ports). */
const V2_ADDRESS_BYTES = { 1: 12, 2: 36, 3: 216 } as const;
const UNIX_PATH_BYTES = 108;

/**
 * How long {@linkcode readProxyHeader} waits for a whole header unless told
 * otherwise: the spec asks for at least 3 s (a TCP retransmission).
 */
export const DEFAULT_PROXY_HEADER_TIMEOUT_MS = 5000;

/**
 * The largest header {@linkcode readProxyHeader} takes unless told
 * otherwise: a version 2 header's addresses and TLVs (an AWS or Google load
 * balancer adds tens of bytes; haproxy's SSL TLVs a few hundred).
 */
export const DEFAULT_MAX_PROXY_HEADER_BYTES = 4096;

/** One version 2 type-length-value field, e.g. `0x02` (authority, the SNI). */
export interface ProxyTlv {
  /** Its type (`PP2_TYPE_*`: 0x01 ALPN, 0x02 authority, 0x05 unique ID...). */
  type: number;
  /** Its value, as sent. */
  value: Uint8Array;
}

/** A PROXY protocol header, as read or to be written. */
export interface ProxyHeader {
  /** 1 (text) or 2 (binary). */
  version: 1 | 2;
  /**
   * `proxy`: the connection is relayed for `source`. `local`: the proxy
   * speaks for itself (a health check, v2 `LOCAL`) or did not know the
   * addresses (v1 `UNKNOWN`, v2 `UNSPEC`): use the connection's own
   * addresses, and `source` is absent.
   */
  command: "proxy" | "local";
  /** The client the proxy accepted. */
  source?: Deno.NetAddr | Deno.UnixAddr;
  /** The address that client connected to, on the proxy. */
  destination?: Deno.NetAddr | Deno.UnixAddr;
  /** Version 2: its TLVs in order (unknown ones too); none for version 1. */
  tlvs: ProxyTlv[];
  /** The header's length on the wire, in bytes. */
  byteLength: number;
}

/**
 * A connection did not start with a valid PROXY protocol header: garbage,
 * a header over the limit, too slow, or closed early. The message is the
 * one line a server logs; the connection should be closed (the spec: a
 * receiver must not try to guess).
 *
 * @example
 * ```ts
 * import { parseProxyHeader, ProxyHeaderError } from "./proxy_protocol.ts";
 *
 * try {
 *   parseProxyHeader(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
 *   throw new Error("took an HTTP request");
 * } catch (error) {
 *   if (!(error instanceof ProxyHeaderError)) throw error;
 * }
 * ```
 */
export class ProxyHeaderError extends Error {
  /** Builds the error; `message` says what was expected and what came. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProxyHeaderError";
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/**
 * Up to 24 bytes as a log line can hold them (`GET / HTTP/1.1\r\n...`):
 * bytes, not text (a TLS hello, binary garbage), so every byte that is
 * not printable ASCII is `\xHH`, stricter than `escapeControlChars`,
 * which the header's text fields go through.
 */
function quote(bytes: Uint8Array): string {
  const shown = Array.from(
    bytes.subarray(0, 24),
    (b) =>
      b === 0x0d
        ? "\\r"
        : b === 0x0a
        ? "\\n"
        : b >= 0x20 && b < 0x7f
        ? String.fromCharCode(b)
        : `\\x${b.toString(16).padStart(2, "0")}`,
  ).join("");
  return `'${shown}${bytes.byteLength > 24 ? "..." : ""}'`;
}

function notAHeader(bytes: Uint8Array): ProxyHeaderError {
  return new ProxyHeaderError(
    `not a PROXY protocol header: got ${quote(bytes)}`,
  );
}

/** Whether `bytes` starts like `prefix` (as far as both go). */
function startsLike(bytes: Uint8Array, prefix: Uint8Array): boolean {
  const n = Math.min(bytes.byteLength, prefix.byteLength);
  for (let i = 0; i < n; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

const V1_PREFIX_BYTES = encoder.encode(V1_PREFIX);

/**
 * How many more bytes a header that starts with `bytes` needs at least:
 * 0 when it is complete. Reading exactly that many never reads past the
 * header, whatever follows it. Throws {@linkcode ProxyHeaderError} as soon
 * as `bytes` cannot start a valid header.
 */
function bytesStillNeeded(bytes: Uint8Array, maxBytes: number): number {
  if (bytes.byteLength === 0) return MIN_V1_HEADER_BYTES;
  if (startsLike(bytes, V2_SIGNATURE)) {
    if (bytes.byteLength < V2_FIXED) return V2_FIXED - bytes.byteLength;
    const total = V2_FIXED + ((bytes[14] << 8) | bytes[15]);
    if (total > maxBytes) {
      throw new ProxyHeaderError(
        `PROXY v2 header of ${total} bytes is over the limit of ${maxBytes}`,
      );
    }
    return total - bytes.byteLength;
  }
  if (startsLike(bytes, V1_PREFIX_BYTES)) return v1BytesStillNeeded(bytes);
  throw notAHeader(bytes);
}

/** Shortest text of each field of a v1 TCP line, after `PROXY`. */
const V1_MIN_FIELD = {
  TCP4: [4, 7, 7, 1, 1],
  TCP6: [4, 2, 2, 1, 1],
} as const;

function v1BytesStillNeeded(bytes: Uint8Array): number {
  const text = decoder.decode(bytes);
  const crlf = text.indexOf("\r\n");
  if (crlf !== -1) {
    if (crlf + 2 !== text.length) throw new Error("read past the header");
    return 0;
  }
  if (/[\n\0]|\r./s.test(text)) {
    throw new ProxyHeaderError(
      `bad PROXY v1 header: a line must end in CRLF: got ${quote(bytes)}`,
    );
  }
  if (text.length >= MAX_V1_HEADER_BYTES) {
    throw new ProxyHeaderError(
      `bad PROXY v1 header: no CRLF in the first ${MAX_V1_HEADER_BYTES} bytes`,
    );
  }
  if (text.endsWith("\r")) return 1;
  const fields = text.slice(V1_PREFIX.length).split(" ");
  const protocol = fields[0];
  if (fields.length === 1) {
    if (!["TCP4", "TCP6", "UNKNOWN"].some((p) => p.startsWith(protocol))) {
      throw new ProxyHeaderError(
        `bad PROXY v1 header: unknown protocol in ${quote(bytes)}`,
      );
    }
    return Math.max(1, MIN_V1_HEADER_BYTES - text.length);
  }
  if (protocol === "UNKNOWN") return checkV1Length(bytes, 2);
  if (protocol !== "TCP4" && protocol !== "TCP6") {
    throw new ProxyHeaderError(
      `bad PROXY v1 header: unknown protocol '${
        escapeControlChars(protocol)
      }' (expected TCP4, TCP6 or UNKNOWN)`,
    );
  }
  if (fields.length > 5 || !/^[0-9a-fA-F:. ]*$/.test(text.slice(11))) {
    throw new ProxyHeaderError(`bad PROXY v1 header: ${quote(bytes)}`);
  }
  // The field being written, then every field after it (each after a
  // space), then CRLF: the shortest the line can still be.
  const minimum = V1_MIN_FIELD[protocol];
  const at = fields.length - 1;
  let needed = Math.max(0, minimum[at] - fields[at].length);
  for (let i = at + 1; i < minimum.length; i++) needed += 1 + minimum[i];
  return checkV1Length(bytes, needed + 2);
}

/** `needed`, unless the line would then be over the spec's 107 bytes. */
function checkV1Length(bytes: Uint8Array, needed: number): number {
  if (bytes.byteLength + needed > MAX_V1_HEADER_BYTES) {
    throw new ProxyHeaderError(
      `bad PROXY v1 header: no CRLF in the first ${MAX_V1_HEADER_BYTES} bytes`,
    );
  }
  return needed;
}

/**
 * Parses a PROXY header at the start of `bytes`: the header, or `null`
 * when `bytes` is a valid start of one but not all of it yet. Throws
 * {@linkcode ProxyHeaderError} when `bytes` cannot start a valid header
 * (or holds one over `maxBytes`, default
 * {@linkcode DEFAULT_MAX_PROXY_HEADER_BYTES}). Bytes after the header are
 * ignored.
 *
 * Version 1 is parsed strictly, as the spec asks: single spaces, addresses
 * in the family named (no leading zeros in IPv4), ports 0 to 65535 without
 * leading zeros, CRLF. Version 2: version 2, command `LOCAL` or `PROXY`,
 * a known family (IPv4, IPv6, Unix; stream or datagram; or `UNSPEC`), an
 * address block as long as its family needs, well-formed TLVs, and a
 * `PP2_TYPE_CRC32C` TLV, if one is there, that matches the header (its
 * CRC32C, computed with the TLV's 4 bytes zeroed).
 *
 * @example
 * ```ts
 * import { parseProxyHeader } from "./proxy_protocol.ts";
 *
 * const line = new TextEncoder().encode("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\nGET /");
 * const header = parseProxyHeader(line)!;
 * if (header.source?.transport !== "tcp" || header.source.hostname !== "192.0.2.1") {
 *   throw new Error("wrong source");
 * }
 * if (header.byteLength !== 45) throw new Error(String(header.byteLength));
 * if (parseProxyHeader(line.subarray(0, 20)) !== null) throw new Error("took a part");
 * ```
 */
export function parseProxyHeader(
  bytes: Uint8Array,
  maxBytes: number = DEFAULT_MAX_PROXY_HEADER_BYTES,
): ProxyHeader | null {
  if (startsLike(bytes, V2_SIGNATURE) && bytes.byteLength >= V2_FIXED) {
    const total = V2_FIXED + ((bytes[14] << 8) | bytes[15]);
    if (total > maxBytes) {
      bytesStillNeeded(bytes.subarray(0, V2_FIXED), maxBytes);
    }
    return bytes.byteLength < total ? null : parseV2(bytes.subarray(0, total));
  }
  if (startsLike(bytes, V1_PREFIX_BYTES) && bytes.byteLength > 1) {
    const end = bytes.subarray(0, MAX_V1_HEADER_BYTES).indexOf(0x0a);
    if (end === -1) {
      bytesStillNeeded(bytes.subarray(0, MAX_V1_HEADER_BYTES), maxBytes);
      return null;
    }
    bytesStillNeeded(bytes.subarray(0, end), maxBytes); // What is wrong, if anything.
    return parseV1(bytes.subarray(0, end + 1));
  }
  bytesStillNeeded(bytes.subarray(0, V2_FIXED), maxBytes);
  return null;
}

/** A v1 port: 0 to 65535, no leading zeros. */
function v1Port(text: string): number | undefined {
  return /^(0|[1-9][0-9]{0,4})$/.test(text) && Number(text) <= 65535
    ? Number(text)
    : undefined;
}

function parseV1(line: Uint8Array): ProxyHeader {
  const text = decoder.decode(line);
  const bad = (what: string) =>
    new ProxyHeaderError(`bad PROXY v1 header: ${what}: got ${quote(line)}`);
  if (!text.endsWith("\r\n")) throw bad("a line must end in CRLF");
  const fields = text.slice(V1_PREFIX.length, -2).split(" ");
  if (fields[0] === "UNKNOWN") {
    // The spec: whatever follows UNKNOWN is ignored.
    return { version: 1, command: "local", tlvs: [], byteLength: line.length };
  }
  if (fields.length !== 5) throw bad("expected 5 fields after PROXY");
  const [protocol, sourceText, destinationText, sourcePort, destinationPort] =
    fields;
  const v4 = protocol === "TCP4";
  if (!v4 && protocol !== "TCP6") {
    throw bad(`unknown protocol '${escapeControlChars(protocol)}'`);
  }
  const valid = (address: string) =>
    v4 ? parseIPv4(address) !== null : parseIPv6(address) !== null;
  if (!valid(sourceText) || !valid(destinationText)) {
    throw bad(`addresses are not ${v4 ? "IPv4" : "IPv6"}`);
  }
  const ports = [v1Port(sourcePort), v1Port(destinationPort)];
  if (ports[0] === undefined || ports[1] === undefined) {
    throw bad("ports must be 0 to 65535, without leading zeros");
  }
  return {
    version: 1,
    command: "proxy",
    source: { transport: "tcp", hostname: sourceText, port: ports[0] },
    destination: {
      transport: "tcp",
      hostname: destinationText,
      port: ports[1],
    },
    tlvs: [],
    byteLength: line.length,
  };
}

function formatIPv4(bytes: Uint8Array): string {
  return bytes.join(".");
}

/** RFC 5952 text (`2001:db8::1`); an IPv4-mapped one as `::ffff:a.b.c.d`. */
function formatIPv6(bytes: Uint8Array): string {
  if (
    bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff &&
    bytes[11] === 0xff
  ) {
    return `::ffff:${formatIPv4(bytes.subarray(12))}`;
  }
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  }
  // The URL parser writes IPv6 hosts in RFC 5952's compressed form.
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

function unixPath(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return decoder.decode(end === -1 ? bytes : bytes.subarray(0, end));
}

function parseV2(header: Uint8Array): ProxyHeader {
  const bad = (what: string) =>
    new ProxyHeaderError(`bad PROXY v2 header: ${what}`);
  const version = header[12] >> 4;
  const command = header[12] & 0x0f;
  if (version !== 2) throw bad(`version ${version} (expected 2)`);
  if (command > 1) throw bad(`unknown command ${command}`);
  const family = header[13] >> 4;
  const protocol = header[13] & 0x0f;
  if (family > 3 || protocol > 2 || ((family === 0) !== (protocol === 0))) {
    throw bad(
      `unknown address family and protocol 0x${
        header[13].toString(16).padStart(2, "0")
      }`,
    );
  }
  const block = header.subarray(V2_FIXED);
  const addressBytes = family === 0 ? 0 : V2_ADDRESS_BYTES[family as 1 | 2 | 3];
  if (block.byteLength < addressBytes) {
    throw bad(
      `${block.byteLength} address bytes, ${addressBytes} needed for its family`,
    );
  }
  const tlvs = parseTlvs(block.subarray(addressBytes), bad);
  checkCrc32c(header, V2_FIXED + addressBytes, bad);
  const result: ProxyHeader = {
    version: 2,
    command: "local",
    tlvs,
    byteLength: header.byteLength,
  };
  // LOCAL: the proxy's own connection; UNSPEC: addresses it does not know.
  // Either way the connection's own addresses stand.
  if (command === 0 || family === 0) return result;
  result.command = "proxy";
  const view = new DataView(block.buffer, block.byteOffset, addressBytes);
  if (family === 3) {
    const transport = protocol === 1 ? "unix" : "unixpacket";
    result.source = {
      transport,
      path: unixPath(block.subarray(0, UNIX_PATH_BYTES)),
    };
    result.destination = {
      transport,
      path: unixPath(block.subarray(UNIX_PATH_BYTES, 2 * UNIX_PATH_BYTES)),
    };
    return result;
  }
  const size = family === 1 ? 4 : 16;
  const format = family === 1 ? formatIPv4 : formatIPv6;
  const transport = protocol === 1 ? "tcp" : "udp";
  result.source = {
    transport,
    hostname: format(block.subarray(0, size)),
    port: view.getUint16(2 * size),
  };
  result.destination = {
    transport,
    hostname: format(block.subarray(size, 2 * size)),
    port: view.getUint16(2 * size + 2),
  };
  return result;
}

function parseTlvs(
  bytes: Uint8Array,
  bad: (what: string) => ProxyHeaderError,
): ProxyTlv[] {
  const tlvs: ProxyTlv[] = [];
  let at = 0;
  while (at < bytes.byteLength) {
    if (at + 3 > bytes.byteLength) throw bad("a TLV cut short");
    const length = (bytes[at + 1] << 8) | bytes[at + 2];
    if (at + 3 + length > bytes.byteLength) {
      throw bad(`a TLV of ${length} bytes runs past the header`);
    }
    tlvs.push({
      type: bytes[at],
      value: bytes.slice(at + 3, at + 3 + length),
    });
    at += 3 + length;
  }
  return tlvs;
}

/**
 * A `PP2_TYPE_CRC32C` TLV, if there is one, must hold the CRC32C of the
 * whole header with its own 4 bytes zeroed (the spec: a receiver that
 * checks it treats a mismatch as an invalid connection). `at`: where the
 * TLVs start; they are well-formed already.
 */
function checkCrc32c(
  header: Uint8Array,
  at: number,
  bad: (what: string) => ProxyHeaderError,
): void {
  while (at < header.byteLength) {
    const length = (header[at + 1] << 8) | header[at + 2];
    if (header[at] === PP2_TYPE_CRC32C) {
      if (length !== 4) throw bad(`a CRC32C TLV of ${length} bytes (not 4)`);
      const value = at + 3;
      const view = new DataView(header.buffer, header.byteOffset);
      const sent = view.getUint32(value);
      const zeroed = header.slice();
      zeroed.fill(0, value, value + 4);
      const computed = crc32c(zeroed);
      if (computed !== sent) {
        throw bad(
          `CRC32C mismatch (header says 0x${hex32(sent)}, computed 0x${
            hex32(computed)
          })`,
        );
      }
    }
    at += 3 + length;
  }
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/** Options for {@linkcode readProxyHeader}. */
export interface ReadProxyHeaderOptions {
  /**
   * The whole header must have arrived within this many ms of the call.
   * Default {@linkcode DEFAULT_PROXY_HEADER_TIMEOUT_MS}.
   */
  deadlineMs?: number;
  /**
   * The largest header taken, in bytes (a version 1 line is at most 107
   * whatever this says). Default {@linkcode DEFAULT_MAX_PROXY_HEADER_BYTES}.
   */
  maxBytes?: number;
  /** Gives up when this aborts (a server shutting down). */
  signal?: AbortSignal;
  /**
   * The kind of listener the connection came to: `tcp` (default) or
   * `unix`. A header must speak for a client that such a connection can
   * have been relaying (see {@linkcode checkProxyHeaderFits}).
   */
  listener?: "tcp" | "unix";
}

/**
 * Refuses, with a {@linkcode ProxyHeaderError}, a header that says
 * `PROXY` for a client a connection to a `listener` (a stream socket:
 * TCP or Unix) cannot have been relaying: a datagram client (v2 `UDP` or
 * Unix datagram) on any stream connection, and a Unix socket client on a
 * TCP listener, which takes TCP clients over IPv4 or IPv6 only. A header
 * that carries no client (v2 `LOCAL` or `UNSPEC`, v1 `UNKNOWN`) fits any.
 *
 * haproxy's receiver keeps the connection's own addresses for such a
 * header, as for `LOCAL`; this refuses it instead, so that a header never
 * chooses how its connection is judged: with its own addresses the access
 * rules would judge the proxy, which they let in; taken at its word (as
 * before), an `AF_UNIX` header had no address for `--deny` or exec's
 * `--rate` to match and gave exec's program `PROTO=UNIX` on a TCP server,
 * and a UDP one was passed on by `--send-proxy v2` to a stream target.
 * (haproxy as a sender writes `LOCAL`, not `AF_UNIX`, for a client
 * without an IP address.)
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { checkProxyHeaderFits, type ProxyHeader, ProxyHeaderError } from "./proxy_protocol.ts";
 *
 * const unix: ProxyHeader = {
 *   version: 2,
 *   command: "proxy",
 *   source: { transport: "unix", path: "/run/client.sock" },
 *   destination: { transport: "unix", path: "/run/proxy.sock" },
 *   tlvs: [],
 *   byteLength: 232,
 * };
 * checkProxyHeaderFits(unix, "unix");
 * assertThrows(() => checkProxyHeaderFits(unix, "tcp"), ProxyHeaderError, "TCP listener");
 * ```
 */
export function checkProxyHeaderFits(
  header: ProxyHeader,
  listener: "tcp" | "unix",
): void {
  const transport = header.source?.transport;
  if (transport === "udp" || transport === "unixpacket") {
    throw new ProxyHeaderError(
      `PROXY v${header.version} header for a ${
        transport === "udp" ? "UDP" : "Unix datagram"
      } client: a stream connection cannot have carried it`,
    );
  }
  if (transport === "unix" && listener === "tcp") {
    throw new ProxyHeaderError(
      `PROXY v${header.version} header for a Unix socket client: a TCP listener takes TCP clients (IPv4 or IPv6) or LOCAL only`,
    );
  }
}

/**
 * Reads a PROXY protocol header (version 1 or 2) off `conn`, which a server
 * has just accepted, and resolves with it. It reads exactly the header's
 * bytes, never one more: each read asks for no more than the shortest
 * header the bytes so far can still be the start of, so what follows (TLS,
 * a request) stays in the socket for whoever reads next. That costs a few
 * reads for a version 1 line (six for a typical IPv4 one), two for version
 * 2.
 *
 * Rejects with {@linkcode ProxyHeaderError} when the bytes cannot start a
 * header (at the first wrong byte, without waiting for more), when a
 * header is over `maxBytes`, when the connection ends first, when the
 * deadline passes, or when the header speaks for a client the `listener`
 * cannot have carried ({@linkcode checkProxyHeaderFits}). A read still
 * pending then is not cancelled: the caller closes `conn`, as it should
 * after any failure here.
 *
 * @example A header in front of a request
 * ```ts
 * import { encodeProxyHeader, readProxyHeader } from "./proxy_protocol.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * using conn = await listener.accept();
 * const header = encodeProxyHeader(1, {
 *   source: { transport: "tcp", hostname: "192.0.2.1", port: 51234 },
 *   destination: { transport: "tcp", hostname: "198.51.100.7", port: 443 },
 * });
 * await client.write(new Uint8Array([...header, ...new TextEncoder().encode("hi")]));
 * const got = await readProxyHeader(conn, { deadlineMs: 1000 });
 * if ((got.source as Deno.NetAddr).hostname !== "192.0.2.1") throw new Error("wrong client");
 * const rest = new Uint8Array(2);
 * await conn.read(rest);
 * if (new TextDecoder().decode(rest) !== "hi") throw new Error("read past the header");
 * ```
 */
export async function readProxyHeader(
  conn: ByteReader,
  options: ReadProxyHeaderOptions = {},
): Promise<ProxyHeader> {
  const deadlineMs = options.deadlineMs ?? DEFAULT_PROXY_HEADER_TIMEOUT_MS;
  const maxBytes = Math.max(
    MAX_V1_HEADER_BYTES,
    options.maxBytes ?? DEFAULT_MAX_PROXY_HEADER_BYTES,
  );
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), deadlineMs);
  const signal = options.signal
    ? AbortSignal.any([options.signal, deadline.signal])
    : deadline.signal;
  let buffer = new Uint8Array(MAX_V1_HEADER_BYTES);
  let length = 0;
  // Counts what arrives, so a failure can show it, and checks it at once:
  // a short line of garbage ("hi\n", then waiting for an answer) fails
  // now, not at the deadline.
  const counting: ByteReader = {
    read: async (p) => {
      const n = await conn.read(p);
      if (n !== null) {
        length += n;
        bytesStillNeeded(buffer.subarray(0, length), maxBytes);
      }
      return n;
    },
  };
  try {
    for (
      let needed;
      (needed = bytesStillNeeded(buffer.subarray(0, length), maxBytes)) > 0;
    ) {
      if (length + needed > buffer.byteLength) {
        const larger = new Uint8Array(length + needed);
        larger.set(buffer.subarray(0, length));
        buffer = larger;
      }
      await readExactInto(
        counting,
        buffer.subarray(length, length + needed),
        { signal },
      );
    }
  } catch (error) {
    if (error instanceof UnexpectedEofError) {
      throw new ProxyHeaderError(
        length === 0
          ? "closed before sending a PROXY header"
          : `closed in the middle of a PROXY header (got ${
            quote(buffer.subarray(0, length))
          })`,
      );
    }
    if (deadline.signal.aborted && !(error instanceof ProxyHeaderError)) {
      throw new ProxyHeaderError(
        `no PROXY header within ${formatSeconds(deadlineMs)}` +
          (length > 0 ? ` (got ${quote(buffer.subarray(0, length))})` : ""),
      );
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
  const header = parseProxyHeader(buffer.subarray(0, length), maxBytes)!;
  checkProxyHeaderFits(header, options.listener ?? "tcp");
  return header;
}

/** The addresses {@linkcode encodeProxyHeader} writes. */
export interface ProxyAddresses {
  /** The client the proxy accepted. */
  source: Deno.Addr;
  /** The address the client connected to (the proxy's own). */
  destination: Deno.Addr;
}

type Family = { v6: boolean; source: string; destination: string };

/** Both IP addresses in one family: IPv4 if both are, else both IPv6. */
function oneFamily(source: string, destination: string): Family {
  const a = unmapIPv4(source);
  const b = unmapIPv4(destination);
  if (parseIPv4(a) && parseIPv4(b)) {
    return { v6: false, source: a, destination: b };
  }
  const v6 = (host: string) => parseIPv4(host) ? `::ffff:${host}` : host;
  return { v6: true, source: v6(a), destination: v6(b) };
}

/**
 * The PROXY protocol header a proxy writes first on the connection it
 * opens for a client: version 1 (`PROXY TCP4 ...\r\n`) or 2 (binary), for
 * the client `source` and the address it reached, `destination`. Two
 * addresses of different IP families are both written as IPv6 (IPv4 as
 * `::ffff:a.b.c.d`); an IPv4-mapped pair as IPv4. A client with no IP
 * address (a Unix socket) is written as version 1 `UNKNOWN` or version 2
 * `UNSPEC`: the receiver then uses the connection's own addresses. UDP
 * addresses need version 2 (version 1 has no UDP).
 *
 * @example
 * ```ts
 * import { encodeProxyHeader } from "./proxy_protocol.ts";
 *
 * const line = encodeProxyHeader(1, {
 *   source: { transport: "tcp", hostname: "::ffff:192.0.2.1", port: 51234 },
 *   destination: { transport: "tcp", hostname: "198.51.100.7", port: 443 },
 * });
 * const text = new TextDecoder().decode(line);
 * if (text !== "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n") throw new Error(text);
 * ```
 */
export function encodeProxyHeader(
  version: 1 | 2,
  addresses: ProxyAddresses,
): Uint8Array {
  const { source, destination } = addresses;
  const ip = "hostname" in source && "hostname" in destination;
  const udp = source.transport === "udp";
  if (version === 1) {
    if (udp) throw new TypeError("PROXY protocol v1 has no UDP: use v2");
    if (!ip) return encoder.encode("PROXY UNKNOWN\r\n");
    const f = oneFamily(source.hostname, destination.hostname);
    return encoder.encode(
      `PROXY ${
        f.v6 ? "TCP6" : "TCP4"
      } ${f.source} ${f.destination} ${source.port} ${destination.port}\r\n`,
    );
  }
  if (!ip) {
    // PROXY, UNSPEC, no address: the receiver keeps the connection's own.
    const header = new Uint8Array(V2_FIXED);
    header.set(V2_SIGNATURE);
    header[12] = 0x21;
    return header;
  }
  const f = oneFamily(source.hostname, destination.hostname);
  const size = f.v6 ? 16 : 4;
  const header = new Uint8Array(V2_FIXED + 2 * size + 4);
  header.set(V2_SIGNATURE);
  header[12] = 0x21; // version 2, PROXY
  header[13] = (f.v6 ? 0x20 : 0x10) | (udp ? 0x02 : 0x01);
  const view = new DataView(header.buffer);
  view.setUint16(14, 2 * size + 4);
  const bytes = (host: string) =>
    f.v6
      ? new Uint8Array(
        Array.from(parseIPv6(host)!).flatMap((g) => [g >> 8, g & 0xff]),
      )
      : parseIPv4(host)!;
  header.set(bytes(f.source), V2_FIXED);
  header.set(bytes(f.destination), V2_FIXED + size);
  view.setUint16(V2_FIXED + 2 * size, source.port);
  view.setUint16(V2_FIXED + 2 * size + 2, destination.port);
  return header;
}
