/**
 * Timeouts by the thousand on few timers. A forwarder gives each client's
 * dial a deadline (`--connect-timeout`), and nearly every dial ends long
 * before it: a `setTimeout` and its `clearTimeout` for each cost about
 * 2 µs of a short connection's ~70 µs of CPU (Deno 2.9's timers, measured
 * in `deno task bench --family balance`). {@linkcode setDeadline} keeps the
 * deadlines of one length in a queue, in the order they fall, under one
 * timer: setting one is a push, cancelling it a mark.
 *
 * @module
 */

/** A deadline from {@linkcode setDeadline}. */
export interface Deadline {
  /** It will not fire: the work it bounded is done. */
  cancel(): void;
}

class Entry implements Deadline {
  constructor(
    /** When it falls (`performance.now()`). */
    readonly at: number,
    /** Unset once cancelled or fired. */
    public onExpired: (() => void) | undefined,
    readonly queue: Queue,
  ) {}

  cancel(): void {
    if (this.onExpired === undefined) return;
    this.onExpired = undefined;
    this.queue.cancelled();
  }
}

/** The longest delay a timer takes: 2^31 - 1 ms, about 24.8 days. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Past this many spent entries at its head, a queue drops them. */
const COMPACT_AT = 1024;

/**
 * The deadlines of one length: they fall in the order they were set. One
 * timer, armed for the first that has not been cancelled when it was
 * armed; it keeps the process alive only while a deadline is pending.
 */
class Queue {
  readonly #entries: Entry[] = [];
  #head = 0;
  /** Entries neither cancelled nor fired. */
  #pending = 0;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(readonly ms: number) {}

  add(onExpired: () => void): Deadline {
    this.#dropSpent();
    const entry = new Entry(performance.now() + this.ms, onExpired, this);
    this.#entries.push(entry);
    this.#pending++;
    if (this.#timer === undefined) this.#arm(entry.at);
    else if (this.#pending === 1) Deno.refTimer(this.#timer);
    return entry;
  }

  /** An entry was cancelled: with none pending, the timer holds nothing up. */
  cancelled(): void {
    if (--this.#pending === 0 && this.#timer !== undefined) {
      Deno.unrefTimer(this.#timer);
    }
  }

  #arm(at: number): void {
    // A longer delay than a timer holds would fire it at once (Deno, as
    // Node, sets it to 1 ms): it fires at the most, finds nothing due and
    // is armed again.
    this.#timer = setTimeout(
      () => this.#fire(),
      Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(at - performance.now()))),
    );
  }

  /** Drops cancelled and fired entries at the head. */
  #dropSpent(): void {
    const entries = this.#entries;
    while (
      this.#head < entries.length &&
      entries[this.#head].onExpired === undefined
    ) {
      this.#head++;
    }
    if (this.#head === entries.length) {
      entries.length = 0;
      this.#head = 0;
    } else if (this.#head >= COMPACT_AT && this.#head * 2 >= entries.length) {
      entries.splice(0, this.#head);
      this.#head = 0;
    }
  }

  /**
   * Fires what has fallen, re-arms for what is left, and only then calls
   * the callbacks: one may set a deadline of its own.
   */
  #fire(): void {
    this.#timer = undefined;
    const now = performance.now();
    const expired: (() => void)[] = [];
    const entries = this.#entries;
    for (; this.#head < entries.length; this.#head++) {
      const entry = entries[this.#head];
      if (entry.onExpired === undefined) continue;
      if (entry.at > now) break;
      expired.push(entry.onExpired);
      entry.onExpired = undefined;
      this.#pending--;
    }
    this.#dropSpent();
    if (entries.length > 0) this.#arm(entries[this.#head].at);
    else queues.delete(this.ms);
    for (const onExpired of expired) onExpired();
  }
}

/** A queue per length of deadline in use; a queue with nothing left goes. */
const queues = new Map<number, Queue>();

/**
 * Calls `onExpired` once `ms` milliseconds have passed (never before,
 * however long: past a timer's 24.8 days too), unless the returned
 * deadline is cancelled first. As `setTimeout`, and
 * as cheap to set and cancel as a push and a mark when many deadlines of
 * one length are set: those share one timer. A pending deadline keeps the
 * process alive, a cancelled one does not.
 *
 * @example A dial's deadline, cancelled once it connected
 * ```ts
 * import { setDeadline } from "./deadlines.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const controller = new AbortController();
 * const deadline = setDeadline(10_000, () => controller.abort());
 * using conn = await Deno.connect({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 *   signal: controller.signal,
 * });
 * deadline.cancel();
 * ```
 */
export function setDeadline(ms: number, onExpired: () => void): Deadline {
  let queue = queues.get(ms);
  if (!queue) {
    queue = new Queue(ms);
    queues.set(ms, queue);
  }
  return queue.add(onExpired);
}
