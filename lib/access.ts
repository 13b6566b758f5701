/**
 * Access control by address, as xinetd's `only_from`/`no_access` and ncat's
 * `--allow`/`--deny`: CIDR blocks parsed once into 32-bit words, matched
 * with a few masks per peer. IPv4 and IPv6 share one 128-bit space (IPv4 as
 * `::ffff:a.b.c.d`, the form a dual-stack socket reports), so an
 * IPv4-mapped IPv6 peer matches IPv4 rules and `::/0` matches everyone.
 *
 * @module
 */

import {
  formatIPv6,
  parseIPv4 as ipv4Bytes,
  parseIPv6 as ipv6Groups,
} from "./address.ts";

/**
 * Which peers may use a server (`ServerOptions.access`): an
 * {@linkcode AccessList}, or anything else that answers `allows`.
 */
export interface AccessPolicy {
  /** `true` when `addr` may be served. */
  allows(addr: Deno.Addr): boolean;
  /**
   * Set by a policy that also limits a rate (exec's `--rate`) when its
   * last `allows` refused for the rate, not the list: the stats count it
   * as a `rate` refusal.
   */
  readonly overRate?: boolean;
}

/**
 * A string that is not an IP address or CIDR block.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { Cidr, CidrError } from "./access.ts";
 *
 * assertThrows(() => Cidr.parse("10.0.0.0/33"), CidrError, "expected a prefix length from 0 to 32");
 * ```
 */
export class CidrError extends Error {
  /** The text that could not be parsed. */
  readonly input: string;
  /** What was expected, without the input (`expected 0 to 32`). */
  readonly reason: string;

  /** Builds the error for `input`; `reason` says what was expected. */
  constructor(reason: string, input: string) {
    super(`invalid address block '${input}': ${reason}`);
    this.name = "CidrError";
    this.input = input;
    this.reason = reason;
  }
}

/** 128 bits as four unsigned 32-bit words, most significant first. */
type Words = [number, number, number, number];

const MAPPED_PREFIX = 96;

/** An IPv4 literal as one unsigned 32-bit number (see `parseIPv4`). */
function parseIPv4(text: string): number | undefined {
  const b = ipv4Bytes(text);
  return b
    ? ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0
    : undefined;
}

/** An IPv6 literal as four 32-bit words (see `parseIPv6`). */
function parseIPv6(text: string): Words | undefined {
  const g = ipv6Groups(text);
  if (!g) return undefined;
  return [
    ((g[0] << 16) | g[1]) >>> 0,
    ((g[2] << 16) | g[3]) >>> 0,
    ((g[4] << 16) | g[5]) >>> 0,
    ((g[6] << 16) | g[7]) >>> 0,
  ];
}

/**
 * Parses an IPv4 or IPv6 literal (a `%zone` suffix is dropped) into the
 * shared 128-bit space; IPv4 becomes `::ffff:a.b.c.d`. `undefined` when
 * `text` is not an address.
 */
function parseAddress(
  text: string,
): { words: Words; v4: boolean } | undefined {
  const v4 = parseIPv4(text);
  if (v4 !== undefined) return { words: [0, 0, 0xffff, v4], v4: true };
  const zone = text.indexOf("%");
  const words = parseIPv6(zone === -1 ? text : text.slice(0, zone));
  return words ? { words, v4: false } : undefined;
}

/**
 * One CIDR block (`10.0.0.0/8`, `fd00::/8`, or a single address), parsed
 * once into masked words so that {@linkcode Cidr.contains} costs four ANDs.
 * Host bits below the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
 *
 * @example
 * ```ts
 * import { assert, assertFalse } from "@std/assert";
 * import { Cidr } from "./access.ts";
 *
 * const block = Cidr.parse("192.168.0.0/16");
 * assert(block.contains("192.168.4.2"));
 * assert(block.contains("::ffff:192.168.4.2")); // IPv4-mapped matches too
 * assertFalse(block.contains("10.0.0.1"));
 * ```
 */
export class Cidr {
  /** The block as given, normalised (`10.0.0.0/8`, `fd00::/8`). */
  readonly text: string;
  /** Prefix length in the block's own family (0-32 for IPv4, 0-128 for IPv6). */
  readonly prefix: number;
  /** Whether the block was written as IPv4. */
  readonly ipv4: boolean;
  readonly #network: Words;
  readonly #mask: Words;

  private constructor(words: Words, prefix128: number, v4: boolean) {
    this.#mask = [0, 1, 2, 3].map((i) => {
      const bits = Math.min(32, Math.max(0, prefix128 - 32 * i));
      return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    }) as Words;
    this.#network = words.map((w, i) => (w & this.#mask[i]) >>> 0) as Words;
    this.ipv4 = v4;
    this.prefix = v4 ? prefix128 - MAPPED_PREFIX : prefix128;
    this.text = `${formatWords(this.#network, v4)}/${this.prefix}`;
  }

  /**
   * Parses `ADDRESS` or `ADDRESS/PREFIX`; throws {@linkcode CidrError}.
   *
   * @example
   * ```ts
   * import { assertEquals } from "@std/assert";
   * import { Cidr } from "./access.ts";
   *
   * assertEquals(Cidr.parse("10.1.2.3/8").text, "10.0.0.0/8"); // host bits masked
   * assertEquals(Cidr.parse("::1").prefix, 128); // one address
   * ```
   */
  static parse(text: string): Cidr {
    const slash = text.indexOf("/");
    const addressText = slash === -1 ? text : text.slice(0, slash);
    const address = addressText.includes("%")
      ? undefined
      : parseAddress(addressText);
    if (!address) {
      throw new CidrError(
        "expected an IP address or ADDRESS/PREFIX, as 10.0.0.0/8 or fd00::/8",
        text,
      );
    }
    const max = address.v4 ? 32 : 128;
    let prefix = max;
    if (slash !== -1) {
      const prefixText = text.slice(slash + 1);
      if (
        !/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max
      ) {
        throw new CidrError(
          `expected a prefix length from 0 to ${max} after '/'`,
          text,
        );
      }
      prefix = Number(prefixText);
    }
    return new Cidr(
      address.words,
      address.v4 ? prefix + MAPPED_PREFIX : prefix,
      address.v4,
    );
  }

  /** Whether the IP literal `address` lies in the block (`false` for a non-address). */
  contains(address: string): boolean {
    const parsed = parseAddress(address);
    return parsed !== undefined && this.#containsWords(parsed.words);
  }

  /** Whether an address already parsed into four 32-bit words lies in the block. */
  containsWords(words: readonly number[]): boolean {
    return this.#containsWords(words);
  }

  #containsWords(words: readonly number[]): boolean {
    const mask = this.#mask;
    const net = this.#network;
    return ((words[0] & mask[0]) >>> 0) === net[0] &&
      ((words[1] & mask[1]) >>> 0) === net[1] &&
      ((words[2] & mask[2]) >>> 0) === net[2] &&
      ((words[3] & mask[3]) >>> 0) === net[3];
  }

  /** The normalised block, as {@linkcode Cidr.text}. */
  toString(): string {
    return this.text;
  }
}

function formatWords(words: Words, v4: boolean): string {
  if (v4) {
    const w = words[3];
    return [w >>> 24, (w >>> 16) & 255, (w >>> 8) & 255, w & 255].join(".");
  }
  return formatIPv6(words.flatMap((w) => [w >>> 16, w & 0xffff]));
}

/** The rules of an {@linkcode AccessList}, as the flags give them. */
export interface AccessRules {
  /** Blocks that may connect; when any is given, everyone else is refused. */
  allow?: readonly string[];
  /** Blocks that are always refused; deny wins over allow. */
  deny?: readonly string[];
}

/**
 * Who may use a server: `deny` blocks are refused first, then, when any
 * `allow` block is given, only peers inside one are served. Parse once,
 * pass as `access` in `ServerOptions`; the server applies it on accept (a
 * refused TCP client is closed without a byte, before anything is read)
 * and to each datagram (a refused one gets no reply).
 *
 * A peer without an IP address (a Unix socket) matches no block: it is
 * served only when there is no `allow` rule. The command line refuses
 * `--allow`/`--deny` with `--unix` or `--unixpacket` rather than guess,
 * unless `--unix` comes with `--accept-proxy`: its clients then have the
 * addresses their PROXY headers carry (one whose header says `LOCAL` has
 * none, and is refused by an `allow` rule).
 *
 * @example
 * ```ts
 * import { assert, assertFalse } from "@std/assert";
 * import { AccessList } from "./access.ts";
 *
 * const access = new AccessList({ allow: ["127.0.0.0/8", "::1"], deny: ["127.0.0.66"] });
 * const peer = (hostname: string): Deno.NetAddr => ({ transport: "tcp", hostname, port: 5000 });
 * assert(access.allows(peer("127.0.0.2")));
 * assert(access.allows(peer("::ffff:127.0.0.2"))); // IPv4-mapped: the same peer
 * assertFalse(access.allows(peer("127.0.0.66"))); // deny wins
 * assertFalse(access.allows(peer("10.0.0.1"))); // in no allow block
 * ```
 */
export class AccessList implements AccessPolicy {
  /** The parsed `allow` blocks. */
  readonly allow: readonly Cidr[];
  /** The parsed `deny` blocks. */
  readonly deny: readonly Cidr[];

  /** Parses every block now; throws {@linkcode CidrError} for the first bad one. */
  constructor(rules: AccessRules) {
    this.allow = (rules.allow ?? []).map((text) => Cidr.parse(text));
    this.deny = (rules.deny ?? []).map((text) => Cidr.parse(text));
  }

  /** `true` when `addr` may be served. */
  allows(addr: Deno.Addr): boolean {
    if (!("hostname" in addr)) return this.allow.length === 0;
    return this.allowsAddress(addr.hostname);
  }

  /**
   * `true` when the IP literal `address` may be served; a string that is
   * not an address is refused when any rule exists.
   *
   * @example
   * ```ts
   * import { assert, assertFalse } from "@std/assert";
   * import { AccessList } from "./access.ts";
   *
   * const access = new AccessList({ deny: ["10.0.0.0/8"] });
   * assertFalse(access.allowsAddress("10.9.9.9"));
   * assert(access.allowsAddress("fd00::1"));
   * ```
   */
  allowsAddress(address: string): boolean {
    if (this.allow.length === 0 && this.deny.length === 0) return true;
    const parsed = parseAddress(address);
    if (!parsed) return false;
    const words = parsed.words;
    for (const block of this.deny) {
      if (block.containsWords(words)) return false;
    }
    if (this.allow.length === 0) return true;
    for (const block of this.allow) {
      if (block.containsWords(words)) return true;
    }
    return false;
  }

  /** `true` when no rule is set: the list allows everyone. */
  get empty(): boolean {
    return this.allow.length === 0 && this.deny.length === 0;
  }
}
