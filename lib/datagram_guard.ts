/**
 * What keeps a datagram server from being turned against others or against
 * itself, beyond the source-port rules of `datagram_server.ts`: a reply rate
 * limit per source address (not per address and port: one host owns all
 * its ports), and a loop guard that ends a loop between two servers that
 * answer anything, whatever their ports and rate limits.
 *
 * Every table here is bounded, so a flood of distinct (spoofed) sources
 * costs a fixed amount of memory.
 *
 * @module
 */

import { parseIPv6, unmapIPv4 } from "./address.ts";
import { rfc868Seconds } from "./rfc868.ts";

/**
 * The source a limit counts by: an IPv4 address (an IPv4-mapped IPv6
 * address counts as the IPv4 address it carries), an IPv6 /64 (one host
 * has a whole /64 to pick addresses from, so a limit per IPv6 address
 * would be no limit), or a Unix socket path.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { sourceKey } from "./datagram_guard.ts";
 *
 * const key = (hostname: string) => sourceKey({ transport: "udp", hostname, port: 5000 });
 * assertEquals(key("::ffff:192.0.2.1"), "192.0.2.1");
 * assertEquals(key("2001:db8:1:2::99"), "2001:db8:1:2::/64");
 * ```
 */
export function sourceKey(addr: Deno.Addr): string {
  if (!("hostname" in addr)) return "path" in addr ? addr.path : "";
  const host = unmapIPv4(addr.hostname);
  if (!host.includes(":")) return host;
  const groups = parseIPv6(host);
  if (!groups) return host;
  const prefix = Array.from(groups.subarray(0, 4), (g) => g.toString(16))
    .join(":").replace(/(^|:)0(:0)*$/, "");
  return `${prefix}::/64`;
}

/** Sources a {@linkcode SourceRateLimiter} remembers unless told otherwise. */
export const MAX_RATE_SOURCES = 16_384;

/**
 * Token bucket per source ({@linkcode sourceKey}): `perSecond` replies a
 * second, bursts up to the same; 0 means no limit. The table holds at most
 * `maxSources` buckets (default {@linkcode MAX_RATE_SOURCES}, about 2 MB):
 * past that the least recently used goes. A bucket unused for a second is
 * full again anyway, so only a flood of more distinct sources than that
 * within a second loses anything: one extra burst for a source it comes
 * back to, which a spoofing flood gets from fresh addresses regardless.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { SourceRateLimiter } from "./datagram_guard.ts";
 *
 * const limiter = new SourceRateLimiter(2);
 * const answered = [1, 2, 3].map(() => limiter.take("192.0.2.1"));
 * assertEquals(answered, [true, true, false]); // a burst of 2, then wait
 * ```
 */
export class SourceRateLimiter {
  /** Replies a second to one source (and the burst); 0: no limit. */
  readonly perSecond: number;
  readonly #maxSources: number;
  /** In order of last use, least recent first. */
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  /** A limiter of `perSecond` replies to each source. */
  constructor(perSecond: number, options: { maxSources?: number } = {}) {
    this.perSecond = perSecond;
    this.#maxSources = options.maxSources ?? MAX_RATE_SOURCES;
  }

  /** Sources remembered now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes a token for `source`: `true` if a reply may go to it now. */
  take(source: string): boolean {
    if (this.perSecond <= 0) return true;
    const now = performance.now();
    let bucket = this.#buckets.get(source);
    if (bucket) {
      this.#buckets.delete(source);
      bucket.tokens = Math.min(
        this.perSecond,
        bucket.tokens + (now - bucket.at) * this.perSecond / 1000,
      );
      bucket.at = now;
    } else {
      if (this.#buckets.size >= this.#maxSources) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
      bucket = { tokens: this.perSecond, at: now };
    }
    this.#buckets.set(source, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens--;
    return true;
  }
}

/** Peers a {@linkcode ReplyMemory} remembers unless told otherwise. */
export const MAX_REMEMBERED_REPLIES = 4096;

/**
 * How long a reply is remembered to catch it coming back: longer than any
 * round trip between two servers, shorter than a person repeating a probe.
 */
export const LOOP_WINDOW_MS = 1000;

/**
 * The last reply sent to each peer (address and port), as a length and a
 * 32-bit hash, for {@linkcode LOOP_WINDOW_MS}: a datagram from that peer
 * identical to it is our own reply bounced back by a server that answers
 * anything (an echo: ours, or any other), the first step of a loop. At most
 * `maxPeers` (default {@linkcode MAX_REMEMBERED_REPLIES}) are kept, least
 * recently used first out.
 *
 * @example
 * ```ts
 * import { assert, assertFalse } from "@std/assert";
 * import { ReplyMemory } from "./datagram_guard.ts";
 *
 * const replies = new ReplyMemory();
 * const reply = new TextEncoder().encode("hello");
 * replies.sent("127.0.0.1:7", reply);
 * assert(replies.bouncedBack("127.0.0.1:7", reply));
 * assertFalse(replies.bouncedBack("127.0.0.1:8", reply)); // another peer
 * ```
 */
export class ReplyMemory {
  readonly #maxPeers: number;
  readonly #windowMs: number;
  readonly #replies = new Map<
    string,
    { length: number; hash: number; at: number }
  >();

  /** Remembers up to `maxPeers` replies for `windowMs` each. */
  constructor(options: { maxPeers?: number; windowMs?: number } = {}) {
    this.#maxPeers = options.maxPeers ?? MAX_REMEMBERED_REPLIES;
    this.#windowMs = options.windowMs ?? LOOP_WINDOW_MS;
  }

  /** Peers remembered now. */
  get size(): number {
    return this.#replies.size;
  }

  /** Records that `reply` went to `peer`. */
  sent(peer: string, reply: Uint8Array): void {
    this.#replies.delete(peer);
    if (this.#replies.size >= this.#maxPeers) {
      this.#replies.delete(this.#replies.keys().next().value!);
    }
    this.#replies.set(peer, {
      length: reply.byteLength,
      hash: fnv1a(reply),
      at: performance.now(),
    });
  }

  /** `true` when `data` from `peer` is the reply just sent to it. */
  bouncedBack(peer: string, data: Uint8Array): boolean {
    const last = this.#replies.get(peer);
    return last !== undefined && last.length === data.byteLength &&
      performance.now() - last.at <= this.#windowMs &&
      last.hash === fnv1a(data);
  }
}

function fnv1a(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.byteLength; i++) {
    hash = Math.imul(hash ^ bytes[i], 0x01000193);
  }
  return hash >>> 0;
}

/** Seconds an RFC 868 value may be off our clock and still be a time reply. */
const TIME_REPLY_SLACK_S = 86_400;

/**
 * Whether `data` looks like the reply of one of the simple services rather
 * than a request, and which: text in CRLF lines with at least 8 characters
 * besides line ends (daytime, qotd, chargen), or 4 bytes that read as an
 * RFC 868 time within a day of `now` (time). A service whose reply ignores
 * the request does not answer one: two such services would otherwise
 * answer each other forever. Requests are empty or a short line in
 * practice (RFC 864, 865, 867 and 868 ignore their content).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serviceReplyKind } from "./datagram_guard.ts";
 *
 * const encode = (text: string) => new TextEncoder().encode(text);
 * assertEquals(serviceReplyKind(encode("Tue Nov 24 23:37:45 2026\r\n")), "text in CRLF lines");
 * assertEquals(serviceReplyKind(encode("\n")), undefined); // a request
 * assertEquals(serviceReplyKind(encode("what time is it?")), undefined);
 * ```
 */
export function serviceReplyKind(
  data: Uint8Array,
  now: Date = new Date(),
): string | undefined {
  if (data.byteLength === 4) {
    const value = new DataView(data.buffer, data.byteOffset, 4).getUint32(0);
    const ours = rfc868Seconds(now);
    const apart = Math.abs(value - ours);
    if (Math.min(apart, 2 ** 32 - apart) <= TIME_REPLY_SLACK_S) {
      return "an RFC 868 time";
    }
    return undefined;
  }
  const n = data.byteLength;
  if (n < 10 || data[n - 2] !== 0x0d || data[n - 1] !== 0x0a) return undefined;
  let characters = 0;
  for (let i = 0; i < n; i++) {
    const byte = data[i];
    if (byte === 0x0a) {
      if (i === 0 || data[i - 1] !== 0x0d) return undefined;
    } else if (byte === 0x0d) {
      if (data[i + 1] !== 0x0a) return undefined;
    } else if (byte < 0x20 && byte !== 0x09 || byte === 0x7f) {
      return undefined;
    } else {
      characters++;
    }
  }
  return characters >= 8 ? "text in CRLF lines" : undefined;
}
