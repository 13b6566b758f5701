/**
 * What keeps a datagram server from being turned against others or against
 * itself, beyond the source-port rules of `datagram_server.ts`: a reply rate
 * limit per source address (not per address and port: one host owns all
 * its ports), and a loop guard that ends a loop between two servers that
 * answer anything, whatever their ports, by what only a loop does (our
 * replies come back with no think time, round after round, faster than
 * the rate limit lets a client go), never by a datagram's bytes alone: a
 * client repeating itself is answered like any other.
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

/** Peers a {@linkcode LoopGuard} remembers unless told otherwise. */
export const MAX_LOOP_PEERS = 4096;

/**
 * A datagram that comes back this soon after our reply to its sender (in
 * ms) came with no think time: what a server does, not a person or a
 * program that reads the answer first.
 */
export const LOOP_THINK_MS = 5;

/**
 * Replies coming back with no think time, beyond the rate a peer may
 * have anyway ({@linkcode loopRate}), that make a loop: so a loop between
 * two servers that answer anything ends within a few hundred round trips.
 */
export const LOOP_ROUNDS = 200;

/**
 * The round trips a second a peer may go on at with no think time and
 * never be taken for a loop: the reply rate limit, or when that is lower
 * (or 0, no limit) `floor`, the default rate limit. A loop goes faster:
 * it never waits.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { loopRate } from "./datagram_guard.ts";
 *
 * assertEquals(loopRate(0, 100), 100);
 * assertEquals(loopRate(5000, 100), 5000);
 * ```
 */
export function loopRate(ratePerSecond: number, floor: number): number {
  return Math.max(ratePerSecond, floor);
}

/** What a {@linkcode LoopGuard} keeps of one peer: its last reply and score. */
interface PeerRecord {
  /** The last reply: its length and 32-bit hash. */
  length: number;
  hash: number;
  /** When it was sent (`performance.now()`). */
  sentAt: number;
  /** Whether it has not come back yet (each reply counts once). */
  pending: boolean;
  /** Whether it was the request itself (an echo), not the service's own text. */
  echoed: boolean;
  /** Replies come back with no think time, less what `rate` allows. */
  score: number;
  scoredAt: number;
}

/**
 * The loop guard: tells a loop between two servers from a client by what
 * only a loop does. A datagram from a peer (address and port) counts as
 * a round of a loop when it comes within {@linkcode LOOP_THINK_MS} of our
 * reply to that peer (no think time) and is that reply coming back: the
 * same bytes (an echo, ours or another, returning it), or, for a service
 * whose reply ignores the request, text shaped like a simple service's
 * reply ({@linkcode serviceReplyKind}). Rounds drain at `rate` a second
 * (a token bucket turned round); past `rate` + {@linkcode LOOP_ROUNDS} of
 * them the peer is a loop, and its datagrams are dropped until the score
 * drains below that again (a few ms). So a client repeating itself, even
 * at full speed, is never taken for a loop while it goes no faster than
 * `rate` round trips a second: the rate limit's own burst and rate are
 * inside it. At most `maxPeers` (default {@linkcode MAX_LOOP_PEERS}) are
 * kept, least recently used first out.
 *
 * @example A peer returning each reply at once, 300 times a second, and a client doing it 100 times a second
 * ```ts
 * import { assert, assertFalse } from "@std/assert";
 * import { LoopGuard } from "./datagram_guard.ts";
 *
 * const reply = new TextEncoder().encode("hello");
 * const rounds = (guard: LoopGuard, perSecond: number) => {
 *   let now = 0;
 *   for (let round = 1; round <= 2000; round++) {
 *     guard.sent("127.0.0.1:7", reply, true, now);
 *     if (guard.isLoop("127.0.0.1:7", reply, now + 0.1)) return round;
 *     now += 1000 / perSecond;
 *   }
 *   return Infinity;
 * };
 * const loop = rounds(new LoopGuard(100), 300);
 * assert(loop > 300 && loop < 600, `a loop after ${loop} rounds`);
 * assertFalse(Number.isFinite(rounds(new LoopGuard(100), 100)));
 * ```
 */
export class LoopGuard {
  /** Round trips a second with no think time that a peer may keep up. */
  readonly rate: number;
  /** The score past which a peer is a loop. */
  readonly threshold: number;
  readonly #maxPeers: number;
  /** In order of last reply, least recent first. */
  readonly #peers = new Map<string, PeerRecord>();

  /** A guard letting each peer go on at `rate` round trips a second. */
  constructor(rate: number, options: { maxPeers?: number } = {}) {
    if (!(rate > 0)) throw new RangeError(`rate must be above 0: ${rate}`);
    this.rate = rate;
    this.threshold = rate + LOOP_ROUNDS;
    this.#maxPeers = options.maxPeers ?? MAX_LOOP_PEERS;
  }

  /** Peers remembered now. */
  get size(): number {
    return this.#peers.size;
  }

  /**
   * Records that `reply` went to `peer` at `now`; `echoed`: it is the
   * request itself (an echo).
   */
  sent(
    peer: string,
    reply: Uint8Array,
    echoed: boolean,
    now: number = performance.now(),
  ): void {
    let record = this.#peers.get(peer);
    if (record) {
      this.#peers.delete(peer);
    } else {
      if (this.#peers.size >= this.#maxPeers) {
        this.#peers.delete(this.#peers.keys().next().value!);
      }
      record = {
        length: 0,
        hash: 0,
        sentAt: 0,
        pending: false,
        echoed,
        score: 0,
        scoredAt: now,
      };
    }
    record.length = reply.byteLength;
    record.hash = fnv1a(reply);
    record.sentAt = now;
    record.pending = true;
    record.echoed = echoed;
    this.#peers.set(peer, record);
  }

  /**
   * Scores a datagram `data` from `peer` arriving at `now`: `true` when
   * the peer is a loop (drop the datagram).
   */
  isLoop(
    peer: string,
    data: Uint8Array,
    now: number = performance.now(),
  ): boolean {
    const record = this.#peers.get(peer);
    if (!record) return false;
    if (record.score > 0) {
      record.score = Math.max(
        0,
        record.score - (now - record.scoredAt) * this.rate / 1000,
      );
    }
    record.scoredAt = now;
    if (
      record.pending && now - record.sentAt <= LOOP_THINK_MS &&
      cameBack(record, data)
    ) {
      record.pending = false;
      record.score++;
    }
    return record.score > this.threshold;
  }

  /** How many rounds with no think time `peer` is scored at now. */
  score(peer: string): number {
    return Math.round(this.#peers.get(peer)?.score ?? 0);
  }
}

/** Whether `data` is the reply in `record` coming back (see LoopGuard). */
function cameBack(record: PeerRecord, data: Uint8Array): boolean {
  if (data.byteLength === record.length && fnv1a(data) === record.hash) {
    return true;
  }
  return !record.echoed && serviceReplyKind(data) !== undefined;
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
 * Whether `data` looks like the reply of one of the simple services,
 * and which: text in CRLF lines with at least 8 characters besides line
 * ends (daytime, qotd, chargen), or 4 bytes that read as an RFC 868 time
 * within a day of `now` (time). Never a reason to drop a datagram alone
 * (RFC 867 and 868 servers answer any datagram, `what time is it?\r\n`
 * included): {@linkcode LoopGuard} counts it only when it comes back with
 * no think time to a service whose reply ignores the request, as another
 * such service's reply would in a loop between the two.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serviceReplyKind } from "./datagram_guard.ts";
 *
 * const encode = (text: string) => new TextEncoder().encode(text);
 * assertEquals(serviceReplyKind(encode("Tue Nov 24 23:37:45 2026\r\n")), "text in CRLF lines");
 * assertEquals(serviceReplyKind(encode("\n")), undefined);
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
