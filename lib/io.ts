/**
 * Byte-stream utilities from "Reading and writing on a blocking socket" in
 * the seed (the C socket examples page this toolkit ports, see `mod.ts`):
 * a socket's `read` and `write` may move fewer bytes than asked, so reading
 * a known amount or writing a whole buffer takes a loop.
 *
 * @module
 */

/** Anything with a `read` like {@linkcode Deno.Conn}'s. */
export interface ByteReader {
  /** Reads up to `p.byteLength` bytes into `p`; `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Anything with a `write` like {@linkcode Deno.Conn}'s. */
export interface ByteWriter {
  /** Writes some prefix of `p` and resolves with how many bytes it wrote. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * The peer closed the stream before the expected number of bytes arrived.
 *
 * @example Telling an early close from other failures
 * ```ts
 * import { assertEquals, assertRejects } from "@std/assert";
 * import { readExact, UnexpectedEofError } from "./io.ts";
 *
 * let sent = false;
 * const reader = {
 *   read(p: Uint8Array): Promise<number | null> {
 *     if (sent) return Promise.resolve(null);
 *     sent = true;
 *     p.set([1, 2, 3]);
 *     return Promise.resolve(3);
 *   },
 * };
 * const error = await assertRejects(() => readExact(reader, 8), UnexpectedEofError);
 * assertEquals([error.bytesRead, error.bytesExpected], [3, 8]);
 * ```
 */
export class UnexpectedEofError extends Error {
  /** How many bytes arrived before the stream ended. */
  readonly bytesRead: number;
  /** How many bytes were expected. */
  readonly bytesExpected: number;

  /** Builds the error for `bytesRead` of `bytesExpected` bytes. */
  constructor(bytesRead: number, bytesExpected: number) {
    super(
      `unexpected end of stream: expected ${bytesExpected} bytes, got ${bytesRead}`,
    );
    this.name = "UnexpectedEofError";
    this.bytesRead = bytesRead;
    this.bytesExpected = bytesExpected;
  }
}

/** Options for {@linkcode readExact} and {@linkcode readExactInto}. */
export interface ReadExactOptions {
  /**
   * Gives up when this aborts, rejecting with its reason (e.g. a deadline:
   * `AbortSignal.timeout(ms)`). A read still pending then is not cancelled
   * (`read` takes no signal): close the reader to end it, as a connection's
   * `close()` does.
   */
  signal?: AbortSignal;
}

/**
 * Reads exactly `buffer.byteLength` bytes into `buffer`, looping over short
 * reads. Rejects with {@linkcode UnexpectedEofError} when the stream ends
 * first (the bytes that did arrive are at the start of `buffer`), or with
 * the reason of `options.signal` once it aborts.
 *
 * @example Filling a reused buffer
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { readExactInto } from "./io.ts";
 *
 * const chunks = [new Uint8Array([1, 2]), new Uint8Array([3, 4])];
 * const reader = {
 *   read(p: Uint8Array): Promise<number | null> {
 *     const chunk = chunks.shift();
 *     if (!chunk) return Promise.resolve(null);
 *     p.set(chunk);
 *     return Promise.resolve(chunk.byteLength);
 *   },
 * };
 * const buffer = new Uint8Array(4);
 * await readExactInto(reader, buffer);
 * assertEquals(buffer, new Uint8Array([1, 2, 3, 4]));
 * ```
 */
export async function readExactInto(
  reader: ByteReader,
  buffer: Uint8Array,
  options: ReadExactOptions = {},
): Promise<void> {
  const { signal } = options;
  let filled = 0;
  while (filled < buffer.byteLength) {
    signal?.throwIfAborted();
    const reading = reader.read(buffer.subarray(filled));
    const n = signal ? await untilAborted(reading, signal) : await reading;
    if (n === null) throw new UnexpectedEofError(filled, buffer.byteLength);
    filled += n;
  }
}

/** `promise`, or a rejection with `signal.reason` once it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => {}); // Ends when the caller closes the reader.
      reject(signal.reason);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() =>
      signal.removeEventListener("abort", onAbort)
    );
  });
}

/**
 * Resolves with exactly `n` bytes read from `reader`, however many reads it
 * takes; rejects with {@linkcode UnexpectedEofError} (saying how many bytes
 * came) when the peer closes first, or with the reason of `options.signal`
 * once it aborts (see {@linkcode ReadExactOptions}).
 *
 * @example Reading a 4-byte RFC 868 time value
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { readExact } from "./io.ts";
 *
 * const parts = [new Uint8Array([0xec]), new Uint8Array([0x4f, 0x2b, 0x00])];
 * const reader = {
 *   read(p: Uint8Array): Promise<number | null> {
 *     const part = parts.shift();
 *     if (!part) return Promise.resolve(null);
 *     p.set(part);
 *     return Promise.resolve(part.byteLength);
 *   },
 * };
 * const bytes = await readExact(reader, 4);
 * assertEquals(new DataView(bytes.buffer).getUint32(0), 0xec4f2b00);
 * ```
 *
 * @example Giving up on a silent connection
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { readExact } from "./io.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * using _silent = await listener.accept(); // never sends anything
 * const controller = new AbortController();
 * const timer = setTimeout(() => controller.abort(new Error("too slow")), 50);
 * await assertRejects(() => readExact(conn, 4, { signal: controller.signal }), Error, "too slow");
 * clearTimeout(timer);
 * ```
 */
export async function readExact(
  reader: ByteReader,
  n: number,
  options: ReadExactOptions = {},
): Promise<Uint8Array<ArrayBuffer>> {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`byte count must be a non-negative integer, got ${n}`);
  }
  const buffer = new Uint8Array(n);
  await readExactInto(reader, buffer, options);
  return buffer;
}

/**
 * Writes every byte of `bytes` to `writer`, looping over partial writes
 * (`Deno.Conn.write` may write only part of its argument).
 *
 * @example Writing through a writer that takes one byte at a time
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { writeAll } from "./io.ts";
 *
 * const written: number[] = [];
 * const writer = {
 *   write(p: Uint8Array): Promise<number> {
 *     written.push(p[0]);
 *     return Promise.resolve(1);
 *   },
 * };
 * await writeAll(writer, new Uint8Array([7, 8, 9]));
 * assertEquals(written, [7, 8, 9]); // three writes of one byte each
 * ```
 */
export async function writeAll(
  writer: ByteWriter,
  bytes: Uint8Array,
): Promise<void> {
  if (bytes.byteLength === 0) return;
  // Most writes take it all at once: no view made for them.
  let offset = await writer.write(bytes);
  while (offset < bytes.byteLength) {
    offset += await writer.write(bytes.subarray(offset));
  }
}

/**
 * What {@linkcode closeQuietly} has closed. A Deno resource cannot say
 * whether it is closed, and closing one twice throws a `BadResource` whose
 * building (a stack trace) is dear: a forwarder's connection closed by
 * `splice` and then by the server core cost 6 to 8 µs of a short
 * connection's 78 µs of CPU (`deno task bench --family balance`). Looked
 * up here, a second close costs nothing.
 */
const closedQuietly = new WeakSet<object>();

/**
 * Closes `resource`, ignoring that it was closed already (by the peer
 * leaving, a timeout, the server's shutdown...): for the places where
 * "make sure it is closed" is all that is meant. A resource it closed
 * before is not closed again (nor asked to).
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./io.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * listener.close();
 * closeQuietly(listener); // a second close throws BadResource: not here
 * closeQuietly(listener); // nor a third, which is only looked up
 * ```
 */
export function closeQuietly(resource: { close(): void }): void {
  if (closedQuietly.has(resource)) return;
  closedQuietly.add(resource);
  try {
    resource.close();
  } catch {
    // Closed already.
  }
}

/**
 * A line was longer than the reader's `maxLength`; nothing was buffered past
 * the limit.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { LineTooLongError } from "./io.ts";
 *
 * assertEquals(new LineTooLongError(80).maxLength, 80);
 * ```
 */
export class LineTooLongError extends Error {
  /** The limit that was exceeded, in bytes, not counting the line ending. */
  readonly maxLength: number;

  /** Builds the error for a line over `maxLength` bytes. */
  constructor(maxLength: number) {
    super(`line longer than ${maxLength} bytes`);
    this.name = "LineTooLongError";
    this.maxLength = maxLength;
  }
}

/** Options for {@linkcode LineReader}. */
export interface LineReaderOptions {
  /** Longest line accepted, in bytes, without its ending. Default 8192. */
  maxLength?: number;
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Reads LF- or CRLF-terminated lines from a byte stream with a bounded
 * buffer: a line over `maxLength` bytes rejects with
 * {@linkcode LineTooLongError} instead of growing the buffer without end.
 *
 * @example Reading lines from a connection
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { LineReader } from "./io.ts";
 *
 * const data = [new TextEncoder().encode("one\r\ntw"), new TextEncoder().encode("o\nrest")];
 * const reader = {
 *   read(p: Uint8Array): Promise<number | null> {
 *     const chunk = data.shift();
 *     if (!chunk) return Promise.resolve(null);
 *     p.set(chunk);
 *     return Promise.resolve(chunk.byteLength);
 *   },
 * };
 * const lines = new LineReader(reader, { maxLength: 16 });
 * const decoder = new TextDecoder();
 * const seen: string[] = [];
 * for (let line; (line = await lines.readLine()) !== null;) {
 *   seen.push(decoder.decode(line));
 * }
 * assertEquals(seen, ["one", "two", "rest"]);
 * ```
 */
export class LineReader {
  readonly #reader: ByteReader;
  readonly #maxLength: number;
  readonly #buffer: Uint8Array;
  #start = 0;
  #end = 0;
  #eof = false;

  /** Wraps `reader`; see {@linkcode LineReaderOptions}. */
  constructor(reader: ByteReader, options: LineReaderOptions = {}) {
    const maxLength = options.maxLength ?? 8192;
    if (!Number.isSafeInteger(maxLength) || maxLength < 1) {
      throw new RangeError(
        `maxLength must be a positive integer, got ${maxLength}`,
      );
    }
    this.#reader = reader;
    this.#maxLength = maxLength;
    // Room for the longest line plus CR LF.
    this.#buffer = new Uint8Array(maxLength + 2);
  }

  /**
   * Resolves with the next line without its ending, or `null` at end of
   * stream. A last line without an ending is returned as a line.
   */
  async readLine(): Promise<Uint8Array | null> {
    let scanFrom = this.#start;
    while (true) {
      const lf = this.#buffer.subarray(scanFrom, this.#end).indexOf(LF);
      if (lf !== -1) {
        const lineEnd = scanFrom + lf;
        let contentEnd = lineEnd;
        if (contentEnd > this.#start && this.#buffer[contentEnd - 1] === CR) {
          contentEnd--;
        }
        if (contentEnd - this.#start > this.#maxLength) {
          throw new LineTooLongError(this.#maxLength);
        }
        const line = this.#buffer.slice(this.#start, contentEnd);
        this.#start = lineEnd + 1;
        return line;
      }
      const pending = this.#end - this.#start;
      // A pending CR may still be part of a CRLF, hence maxLength + 1.
      if (pending > this.#maxLength + 1) {
        throw new LineTooLongError(this.#maxLength);
      }
      if (this.#eof) {
        if (pending === 0) return null;
        if (pending > this.#maxLength) {
          throw new LineTooLongError(this.#maxLength);
        }
        const line = this.#buffer.slice(this.#start, this.#end);
        this.#start = this.#end;
        return line;
      }
      if (this.#start > 0) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#end = pending;
        this.#start = 0;
      }
      scanFrom = this.#end;
      const n = await this.#reader.read(this.#buffer.subarray(this.#end));
      if (n === null) this.#eof = true;
      else this.#end += n;
    }
  }

  /** Iterates over the remaining lines. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (let line; (line = await this.readLine()) !== null;) yield line;
  }
}

/**
 * The `readable` of a hand-made connection: 16 KiB reads pulled through
 * `read`, cancel closes it (unless `closed()` says it is already).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { connReadable } from "./io.ts";
 *
 * let sent = false;
 * const conn = {
 *   read: (p: Uint8Array) => Promise.resolve(sent ? null : (sent = true, p.set([7]), 1)),
 *   close() {},
 * };
 * const chunks = await Array.fromAsync(connReadable(conn, () => false));
 * assertEquals(chunks, [new Uint8Array([7])]);
 * ```
 */
export function connReadable(
  conn: ByteReader & { close(): void },
  closed: () => boolean,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  return new ReadableStream<Uint8Array<ArrayBuffer>>({
    pull: async (controller) => {
      const buffer = new Uint8Array(16 * 1024);
      const n = await conn.read(buffer);
      if (n === null) controller.close();
      else controller.enqueue(buffer.subarray(0, n));
    },
    cancel: () => {
      if (!closed()) conn.close();
    },
  });
}

/**
 * The `writable` of a hand-made connection: each chunk written whole
 * ({@linkcode writeAll}), close half-closes (`closeWrite`), abort closes it
 * (unless `closed()` says it is already).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { connWritable } from "./io.ts";
 *
 * const got: number[] = [];
 * const conn = {
 *   write: (p: Uint8Array) => (got.push(...p), Promise.resolve(p.byteLength)),
 *   closeWrite: () => Promise.resolve(),
 *   close() {},
 * };
 * await new Blob([new Uint8Array([1, 2])]).stream().pipeTo(connWritable(conn, () => false));
 * assertEquals(got, [1, 2]);
 * ```
 */
export function connWritable(
  conn: ByteWriter & { closeWrite(): Promise<void>; close(): void },
  closed: () => boolean,
): WritableStream<Uint8Array<ArrayBufferLike>> {
  return new WritableStream<Uint8Array<ArrayBufferLike>>({
    write: (chunk) => writeAll(conn, chunk),
    close: () => conn.closeWrite(),
    abort: () => {
      if (!closed()) conn.close();
    },
  });
}

/**
 * Whether `a` and `b` hold the same bytes: `@std/bytes`' `equals`, which
 * lib/ cannot import (`deno install` and `deno compile` run the scripts
 * without deno.json's import map).
 *
 * @example
 * ```ts
 * import { assert } from "@std/assert";
 * import { sameBytes } from "./io.ts";
 *
 * assert(sameBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2])));
 * assert(!sameBytes(new Uint8Array([1, 2]), new Uint8Array([1])));
 * ```
 */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
