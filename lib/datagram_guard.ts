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

import { rfc868Seconds } from "./rfc868.ts";

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
 * Hosts a {@linkcode LoopGuard} remembers on one port: finding a peer
 * walks its port's hosts, so a flood of (spoofed) hosts on one port costs
 * a bounded walk; past this, the one least like a loop (lowest score, then
 * oldest) goes.
 */
export const MAX_LOOP_HOSTS_PER_PORT = 64;

/**
 * A reply of ours that comes back this soon (in ms) after the one before
 * came back from the same peer made a round trip with no think time: what
 * a server does, not a person or a program that reads the answer first.
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
  /** The peer's host (or Unix socket path); its port is the table's key. */
  host: string;
  /** The next peer with the same port. */
  next?: PeerRecord;
  /** The last reply: its length and 32-bit hash. */
  length: number;
  hash: number;
  /** Whether it has not come back yet (each reply counts once). */
  pending: boolean;
  /** Whether it was the request itself (an echo), not the service's own text. */
  echoed: boolean;
  /** Rounds with no think time, less what `rate` drains (see LoopGuard). */
  score: number;
  /** When `score` was last drained (a clock reading). */
  drainedAt: number;
  /** When a reply of ours last came back from this peer. */
  lastRoundAt: number;
  /** Replies sent by the guard's count when it was last moved in the table. */
  movedAt: number;
}

/**
 * The loop guard: tells a loop between two servers from a client by what
 * only a loop does. A datagram from a peer (address and port) is a round
 * of a loop when it is our last reply to that peer coming back (the same
 * bytes: an echo, ours or another, returning it; or, to a service whose
 * reply ignores the request, text shaped like a simple service's reply,
 * {@linkcode serviceReplyKind}) within {@linkcode LOOP_THINK_MS} of the
 * round before: a round trip with no think time. Rounds drain at `rate` a
 * second (a token bucket turned round); past `rate` + {@linkcode LOOP_ROUNDS}
 * of them the peer is a loop, and its datagrams are dropped until the
 * score drains below that again (a few ms). Each reply counts once, so a
 * client repeating itself, even at full speed, is never taken for a loop
 * while it goes no faster than `rate` round trips a second: a rate limit
 * of `rate` and its burst are inside it. The clock is read only when a
 * reply comes back, or for a peer taken for a loop: other traffic costs
 * a lookup by port (no string is built or hashed) and a hash of the
 * datagram. At most `maxPeers` (default {@linkcode MAX_LOOP_PEERS}) are
 * kept, least recently used (by port) first out.
 *
 * @example A peer returning each reply at once, 300 times a second, and a client doing it 100 times a second
 * ```ts
 * import { assert, assertFalse } from "@std/assert";
 * import { LoopGuard } from "./datagram_guard.ts";
 *
 * const reply = new TextEncoder().encode("hello");
 * const peer = { transport: "udp" as const, hostname: "127.0.0.1", port: 7 };
 * const rounds = (perSecond: number) => {
 *   let now = 0;
 *   const guard = new LoopGuard(100, { clock: () => now });
 *   for (let round = 1; round <= 2000; round++) {
 *     guard.sent(peer, reply, true);
 *     now += 1000 / perSecond;
 *     if (guard.isLoop(peer, reply)) return round;
 *   }
 *   return Infinity;
 * };
 * const loop = rounds(300);
 * assert(loop > 300 && loop < 600, `a loop after ${loop} rounds`);
 * assertFalse(Number.isFinite(rounds(100)));
 * ```
 */
export class LoopGuard {
  /** Round trips a second with no think time that a peer may keep up. */
  readonly rate: number;
  /** The score past which a peer is a loop. */
  readonly threshold: number;
  readonly #maxPeers: number;
  readonly #clock: () => number;
  /**
   * Peers with an address, by port (then a chain by host), in order of
   * last reply (roughly: see sent()), least recent first; a number key
   * and a compare of the host cost less than a string built and hashed
   * for each datagram.
   */
  readonly #byPort = new Map<number, PeerRecord>();
  /** Unix socket peers, by path. */
  readonly #byPath = new Map<string, PeerRecord>();
  #size = 0;
  /** Replies recorded so far. */
  #sends = 0;
  /** The peer isLoop() last looked up, and its record then. */
  #lastPeer?: Deno.Addr;
  #lastRecord?: PeerRecord;
  /** The last datagram #cameBack() hashed, and its hash. */
  #hashed?: Uint8Array;
  #hashedAs = 0;

  /**
   * A guard letting each peer go on at `rate` round trips a second;
   * `clock` (default `performance.now`) gives the time in ms.
   */
  constructor(
    rate: number,
    options: { maxPeers?: number; clock?: () => number } = {},
  ) {
    if (!(rate > 0)) throw new RangeError(`rate must be above 0: ${rate}`);
    this.rate = rate;
    this.threshold = rate + LOOP_ROUNDS;
    this.#maxPeers = options.maxPeers ?? MAX_LOOP_PEERS;
    this.#clock = options.clock ?? (() => performance.now());
  }

  /** Peers remembered now. */
  get size(): number {
    return this.#size;
  }

  /**
   * Records that `reply` went to `peer`; `echoed`: it is the request
   * itself (an echo).
   */
  sent(peer: Deno.Addr, reply: Uint8Array, echoed: boolean): void {
    // The peer isLoop() just looked up, as a rule: not looked up again.
    let record = peer === this.#lastPeer ? this.#lastRecord : this.#find(peer);
    this.#lastPeer = undefined;
    if (record) {
      // Moved to the recent end once half the table's worth of replies
      // went elsewhere: an active peer never reaches the front, where
      // eviction takes from, and most replies cost no delete and insert.
      if (this.#sends - record.movedAt > this.#maxPeers / 2) {
        this.#moveToEnd(peer, record);
      }
    } else {
      record = this.#add(peer, echoed);
    }
    this.#sends++;
    record.length = reply.byteLength;
    // An echo's reply is the datagram #cameBack() may just have hashed.
    record.hash = reply === this.#hashed ? this.#hashedAs : hash32(reply);
    record.pending = true;
    record.echoed = echoed;
  }

  /** Scores a datagram `data` from `peer`: `true` when the peer is a loop (drop it). */
  isLoop(peer: Deno.Addr, data: Uint8Array): boolean {
    const record = this.#find(peer);
    this.#lastPeer = peer;
    this.#lastRecord = record;
    if (!record) return false;
    const cameBack = record.pending && this.#cameBack(record, data);
    if (!cameBack && record.score <= this.threshold) return false;
    const now = this.#clock();
    if (record.score > 0) {
      record.score = Math.max(
        0,
        record.score - (now - record.drainedAt) * this.rate / 1000,
      );
    }
    record.drainedAt = now;
    if (cameBack) {
      record.pending = false;
      if (now - record.lastRoundAt <= LOOP_THINK_MS) record.score++;
      record.lastRoundAt = now;
    }
    return record.score > this.threshold;
  }

  /** How many rounds with no think time `peer` is scored at now. */
  score(peer: Deno.Addr): number {
    return Math.round(this.#find(peer)?.score ?? 0);
  }

  /** Whether `data` is the reply in `record` coming back (see above). */
  #cameBack(record: PeerRecord, data: Uint8Array): boolean {
    if (data.byteLength === record.length) {
      this.#hashed = data;
      this.#hashedAs = hash32(data);
      if (this.#hashedAs === record.hash) return true;
    }
    return !record.echoed && serviceReplyKind(data) !== undefined;
  }

  #find(peer: Deno.Addr): PeerRecord | undefined {
    if ("hostname" in peer) {
      let record = this.#byPort.get(peer.port);
      while (record !== undefined && record.host !== peer.hostname) {
        record = record.next;
      }
      return record;
    }
    return "path" in peer ? this.#byPath.get(peer.path) : undefined;
  }

  #add(peer: Deno.Addr, echoed: boolean): PeerRecord {
    const byPort = "hostname" in peer;
    if (byPort) this.#limitHosts(peer.port);
    if (this.#size >= this.#maxPeers) this.#evict();
    const record: PeerRecord = {
      host: byPort ? peer.hostname : "path" in peer ? peer.path : "",
      next: byPort ? this.#byPort.get(peer.port) : undefined,
      length: 0,
      hash: 0,
      pending: false,
      echoed,
      score: 0,
      drainedAt: 0,
      lastRoundAt: -Infinity,
      movedAt: this.#sends,
    };
    if (byPort) {
      // A new host on a known port goes first in its chain, and the port
      // to the recent end.
      this.#byPort.delete(peer.port);
      this.#byPort.set(peer.port, record);
    } else {
      this.#byPath.set(record.host, record);
    }
    this.#size++;
    return record;
  }

  #moveToEnd(peer: Deno.Addr, record: PeerRecord): void {
    if ("hostname" in peer) {
      const head = this.#byPort.get(peer.port)!;
      this.#byPort.delete(peer.port);
      this.#byPort.set(peer.port, head);
    } else {
      this.#byPath.delete(record.host);
      this.#byPath.set(record.host, record);
    }
    record.movedAt = this.#sends;
  }

  /**
   * Makes room for one more host on `port`: at {@linkcode
   * MAX_LOOP_HOSTS_PER_PORT}, drops the one with the lowest score (the
   * oldest of equals), so a flood of hosts cannot push out a loop's peer.
   */
  #limitHosts(port: number): void {
    this.#lastPeer = undefined;
    let count = 0;
    let lowest: PeerRecord | undefined;
    let beforeLowest: PeerRecord | undefined;
    let before: PeerRecord | undefined;
    for (
      let record = this.#byPort.get(port);
      record !== undefined;
      before = record, record = record.next
    ) {
      count++;
      if (lowest === undefined || record.score <= lowest.score) {
        lowest = record;
        beforeLowest = before;
      }
    }
    if (count < MAX_LOOP_HOSTS_PER_PORT || lowest === undefined) return;
    if (beforeLowest) beforeLowest.next = lowest.next;
    else if (lowest.next) this.#byPort.set(port, lowest.next);
    else this.#byPort.delete(port);
    this.#size--;
  }

  /** Drops the least recently used peer: the last of the oldest port's chain. */
  #evict(): void {
    this.#lastPeer = undefined;
    const port = this.#byPort.keys().next();
    if (!port.done) {
      let record = this.#byPort.get(port.value)!;
      if (!record.next) {
        this.#byPort.delete(port.value);
      } else {
        while (record.next!.next) record = record.next!;
        record.next = undefined;
      }
    } else {
      const path = this.#byPath.keys().next();
      if (path.done) return;
      this.#byPath.delete(path.value);
    }
    this.#size--;
  }
}

/**
 * A 32-bit hash of `bytes`, four at a time (FNV-1a's multiply on 32-bit
 * words: a quarter of the chain of a byte-wise hash, which took 86 ns of
 * the few µs a 64-byte round trip costs the server). Collisions only
 * count a round of a client as a loop's, which still needs hundreds of
 * them with no think time.
 */
function hash32(bytes: Uint8Array): number {
  const n = bytes.byteLength;
  let hash = Math.imul(0x811c9dc5 ^ n, 0x01000193);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    hash = Math.imul(
      hash ^
        (bytes[i] | bytes[i + 1] << 8 | bytes[i + 2] << 16 |
          bytes[i + 3] << 24),
      0x01000193,
    );
  }
  for (; i < n; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
  return (hash ^ hash >>> 15) >>> 0;
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
