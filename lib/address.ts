/**
 * IP addresses and host names as text: telling an IPv4 literal from an IPv6
 * one or a host name, refusing what is none of them (`inet_pton`, as the
 * seed uses it, refuses `1.2.3`, which `getaddrinfo` would read as
 * `1.2.0.3`; the seed is the C socket examples page this toolkit ports,
 * see `mod.ts`), and printing an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`)
 * as the IPv4 address it is.
 *
 * We keep this parser rather than `@std/net/unstable-ip` (measured against
 * @std/net 1.0.6): its `isIPv4` takes `1.2.3.` (an empty part counts as 0),
 * `0x7f.0.0.1` and `01.2.3.4` (each part goes through `Number`), its
 * `isIPv6` takes `1g::` (`parseInt` stops at the `g`), and its
 * `matchSubnets` does not put `::ffff:10.1.2.3` (an IPv4 peer of a
 * dual-stack socket) in `10.0.0.0/8`, which `Cidr` from `./access.ts`
 * does. `tests/address_test.ts` asserts each of these differences.
 *
 * @module
 */

/**
 * A client was given an address that is neither an IP literal nor a
 * possible host name. Scripts print it as a runtime failure (exit 1).
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { AddressError, checkHost } from "./address.ts";
 *
 * assertThrows(() => checkHost("1.2.3"), AddressError, "invalid address '1.2.3'");
 * ```
 */
export class AddressError extends Error {
  /** The text that was refused. */
  readonly input: string;

  /** Builds the error for `input`. */
  constructor(input: string) {
    super(
      `invalid address '${input}': expected an IPv4 address (192.0.2.1), ` +
        `an IPv6 address (2001:db8::1) or a host name`,
    );
    this.name = "AddressError";
    this.input = input;
  }
}

/**
 * Parses a dotted-quad IPv4 literal (exactly four decimal parts, 0 to 255,
 * no leading zeros) into its four bytes, or returns `null`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseIPv4 } from "./address.ts";
 *
 * assertEquals(parseIPv4("192.0.2.1"), new Uint8Array([192, 0, 2, 1]));
 * assertEquals(parseIPv4("1.2.3"), null); // getaddrinfo would read 1.2.0.3
 * assertEquals(parseIPv4("01.2.3.4"), null);
 * ```
 */
export function parseIPv4(text: string): Uint8Array | null {
  // One pass over the characters: a forwarder parses its target's address
  // for each client it dials, and splitting with a RegExp per part took
  // about 1 µs a call (three calls a short connection).
  const bytes = new Uint8Array(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === DOT) {
      if (digits === 0 || part === 3) return null;
      bytes[part++] = value;
      value = 0;
      digits = 0;
    } else if (code >= ZERO && code <= NINE) {
      // A leading zero (`01`, `00`): octal to some parsers, refused here.
      if (digits > 0 && value === 0) return null;
      value = value * 10 + code - ZERO;
      if (value > 255) return null;
      digits++;
    } else {
      return null;
    }
  }
  if (part !== 3 || digits === 0) return null;
  bytes[3] = value;
  return bytes;
}

const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/**
 * Parses an IPv6 literal (no brackets, no zone; an embedded dotted IPv4 tail
 * allowed, as `::ffff:192.0.2.1`) into its eight 16-bit groups, or returns
 * `null`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseIPv6 } from "./address.ts";
 *
 * assertEquals(parseIPv6("2001:db8::1"), new Uint16Array([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]));
 * assertEquals(parseIPv6("1::2::3"), null);
 * ```
 */
export function parseIPv6(text: string): Uint16Array | null {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groupsOf = (half: string): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const pieces = half.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIPv4(piece);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groupsOf(halves[0]);
  const tail = halves.length === 2 ? groupsOf(halves[1]) : [];
  if (!head || !tail) return null;
  // An embedded IPv4 tail may only end the address.
  if (halves.length === 2 && halves[0].includes(".")) return null;
  const total = head.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const groups = new Uint16Array(8);
  groups.set(head, 0);
  groups.set(tail, 8 - tail.length);
  return groups;
}

/**
 * Says what `host` is: `4` or `6` for an IP literal (IPv6 with or without
 * brackets), `"name"` for a possible host name (letters, digits, `-`, `_`,
 * dot-separated labels of 1 to 63 characters, at most 253 in all, not all
 * digits and dots). Throws {@linkcode AddressError} for anything else.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { checkHost } from "./address.ts";
 *
 * assertEquals(checkHost("[::1]"), 6);
 * assertEquals(checkHost("127.0.0.1"), 4);
 * assertEquals(checkHost("localhost"), "name");
 * ```
 */
export function checkHost(host: string): 4 | 6 | "name" {
  const bare = stripBrackets(host);
  if (bare !== host || bare.includes(":")) {
    if (parseIPv6(bare)) return 6;
    throw new AddressError(host);
  }
  if (parseIPv4(bare)) return 4;
  const name = bare.endsWith(".") ? bare.slice(0, -1) : bare;
  const labels = name.split(".");
  if (
    name.length === 0 || name.length > 253 || /^[0-9.]+$/.test(name) ||
    labels.some((label) =>
      !/^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label)
    )
  ) {
    throw new AddressError(host);
  }
  return "name";
}

/**
 * Removes the brackets of an IPv6 literal written as `[::1]`; returns any
 * other text as it is.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { stripBrackets } from "./address.ts";
 *
 * assertEquals(stripBrackets("[::1]"), "::1");
 * assertEquals(stripBrackets("example.com"), "example.com");
 * ```
 */
export function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/**
 * Prints an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, in any spelling)
 * as the dotted IPv4 address it carries; returns anything else as it is.
 * A dual-stack (`::`) socket reports IPv4 peers this way.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { unmapIPv4 } from "./address.ts";
 *
 * assertEquals(unmapIPv4("::ffff:127.0.0.1"), "127.0.0.1");
 * assertEquals(unmapIPv4("::1"), "::1");
 * ```
 */
export function unmapIPv4(host: string): string {
  // Every IPv6 form has a colon; the common IPv4 case costs one scan.
  if (!host.includes(":")) return host;
  const groups = parseIPv6(stripBrackets(host));
  if (
    !groups || groups.subarray(0, 5).some((g) => g !== 0) ||
    groups[5] !== 0xffff
  ) {
    return host;
  }
  return [groups[6] >> 8, groups[6] & 0xff, groups[7] >> 8, groups[7] & 0xff]
    .join(".");
}

/**
 * Writes an IPv6 address's eight 16-bit groups as RFC 5952 says: lower-case
 * hex without leading zeros, the first longest run of two or more zero
 * groups as `::`, no dotted IPv4 tail.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { formatIPv6, parseIPv6 } from "./address.ts";
 *
 * assertEquals(formatIPv6(parseIPv6("2001:DB8:0:0:0:0:0:1")!), "2001:db8::1");
 * assertEquals(formatIPv6(parseIPv6("::ffff:192.0.2.1")!), "::ffff:c000:201");
 * ```
 */
export function formatIPv6(groups: ArrayLike<number>): string {
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = Array.from(groups, (g) => g.toString(16));
  if (best === -1) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${
    hex.slice(best + bestLength).join(":")
  }`;
}

/**
 * One spelling per IP address, so that two spellings of one address
 * compare equal: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, in any
 * spelling, as a dual-stack socket reports IPv4 peers) as the IPv4 address
 * it carries, other IPv6 as {@linkcode formatIPv6} writes it, without
 * brackets. Anything else (a host name) is returned as it is.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { canonicalAddress } from "./address.ts";
 *
 * assertEquals(canonicalAddress("::FFFF:c000:201"), "192.0.2.1");
 * assertEquals(canonicalAddress("[2001:db8:0::1]"), "2001:db8::1");
 * assertEquals(canonicalAddress("localhost"), "localhost");
 * ```
 */
export function canonicalAddress(host: string): string {
  const plain = unmapIPv4(stripBrackets(host));
  if (parseIPv4(plain)) return plain;
  const groups = parseIPv6(plain);
  return groups ? formatIPv6(groups) : plain;
}
