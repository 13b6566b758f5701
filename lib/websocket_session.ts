/**
 * One bridged WebSocket client, once upgraded: its frames
 * (`websocket_frame_reader.ts`) read from its connection and their payload
 * written to its target connection, the target's bytes sent back in
 * frames, as websockify does. Each side is read only once the other has
 * taken the last bytes read (backpressure both ways, no queue). Pings go
 * out every half `pingTimeoutMs`, each with a random payload; a client
 * that has not answered one by the next (with a pong carrying that
 * payload: one sent unasked does not count) is closed (1001). Any end is a close frame and one reason for
 * the closing line: `client closed first (1000 bye)`, `target closed
 * first`, `client gone without a close frame (1006)`, `a message of 2000
 * bytes, more than 1000 (1009)`...
 *
 * @module
 */

import { closeQuietly, sameBytes, writeAll } from "./io.ts";
// One buffer per direction, as a forwarded pair's: small while idle, the
// large one once a read has filled the small one.
import {
  describeFailure,
  SPLICE_BUFFER_BYTES,
  SPLICE_IDLE_BUFFER_BYTES,
  type SpliceConn,
} from "./splice.ts";
import { type FrameEvent, FrameReader } from "./websocket_frame_reader.ts";
import {
  closePayload,
  encodeFrame,
  Opcode,
  parseClosePayload,
  WebSocketProtocolError,
  writeFrameHeader,
} from "./websocket_frames.ts";
import { describeClose, type WebSocketFraming } from "./websocket_join.ts";

/**
 * After our close frame, how long the client has to answer with its own
 * before its connection is closed anyway, in ms.
 */
export const CLOSE_WAIT_MS = 2000;

/** Room before a target read for the frame header (at most 10 bytes). */
const HEADROOM = 10;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What a session moves bytes between, and how. */
export interface SessionOptions {
  /** How bytes travel in messages (`lines` is the client's, not a bridge's). */
  framing: Exclude<WebSocketFraming, "lines">;
  /** Largest message from the client, in bytes (1009 past it). */
  maxMessageBytes: number;
  /** Close a client that leaves a ping unanswered this long; 0: no pings. */
  pingTimeoutMs: number;
  /** Bytes of the client's that came with its request, after the head. */
  leftover?: Uint8Array;
  /** Called after moving bytes (the idle timeout starts again). */
  onActivity?: () => void;
}

/** What a session ended with. */
export interface SessionResult {
  /** Bytes from the client's messages written to the target. */
  bytesToTarget: number;
  /** Bytes read from the target and sent to the client. */
  bytesToClient: number;
  /** Why it ended, for the closing line. */
  end: string;
}

/**
 * A message's bytes gathered from its fragments into one buffer that
 * doubles as it fills, up to the message limit: a copy kept for each
 * fragment cost some 300 bytes of heap apiece (a 1 MiB message in 1-byte
 * fragments took the server 500 MB at its peak).
 */
class MessageBytes {
  readonly #maxBytes: number;
  #buffer = new Uint8Array(0);
  #length = 0;

  /** Gathers messages of at most `maxBytes` (the reader's limit). */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  get length(): number {
    return this.#length;
  }

  /** Adds `bytes` (copied: the reader reuses its buffer). */
  append(bytes: Uint8Array): void {
    const needed = this.#length + bytes.length;
    if (needed > this.#buffer.length) {
      const larger = new Uint8Array(
        Math.max(needed, Math.min(2 * this.#buffer.length, this.#maxBytes)),
      );
      larger.set(this.#buffer.subarray(0, this.#length));
      this.#buffer = larger;
    }
    this.#buffer.set(bytes, this.#length);
    this.#length = needed;
  }

  /** The bytes gathered; the buffer is let go (an idle client holds none). */
  take(): Uint8Array {
    const bytes = this.#buffer.subarray(0, this.#length);
    this.#buffer = new Uint8Array(0);
    this.#length = 0;
    return bytes;
  }
}

/**
 * Bridges the upgraded `client` and `target` until both are done (see the
 * module doc), then closes both (the client once its last frame is out).
 * `stop()` closes the client with 1001 (a server shutting down).
 *
 * @example A masked frame's payload reaches the target; its end, a close frame
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { WebSocketSession } from "./websocket_session.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const pair = async () => {
 *   const [outside, inside] = await Promise.all([
 *     Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
 *     listener.accept(),
 *   ]);
 *   return { outside, inside };
 * };
 * const client = await pair();
 * const target = await pair();
 * const session = new WebSocketSession(client.inside, target.inside, {
 *   framing: "binary",
 *   maxMessageBytes: 1024,
 *   pingTimeoutMs: 0,
 * });
 * // "hi", masked with the key 0, 0, 0, 0.
 * await client.outside.write(new Uint8Array([0x82, 0x82, 0, 0, 0, 0, 104, 105]));
 * const got = new Uint8Array(2);
 * await target.outside.read(got);
 * target.outside.close();
 * const close = new Uint8Array(64);
 * const n = await client.outside.read(close);
 * assertEquals([...close.subarray(0, 4)], [0x88, n! - 2, 0x03, 0xe8]);
 * client.outside.close();
 * const result = await session.done;
 * assertEquals([new TextDecoder().decode(got), result.end], ["hi", "target closed first"]);
 * ```
 */
export class WebSocketSession {
  /** Settles once both sides are done; never rejects. */
  readonly done: Promise<SessionResult>;
  readonly #client: Deno.Conn;
  readonly #target: SpliceConn;
  readonly #options: SessionOptions;
  #bytesToTarget = 0;
  #bytesToClient = 0;
  #end?: string;
  #closeSent = false;
  /** Set once both connections are to close: every loop ends. */
  #finished = false;
  /** Writes to the client, one after another (frames must not interleave). */
  #writing: Promise<void> = Promise.resolve();
  /** Writes to the client under way or queued. */
  #inFlight = 0;
  #pingTimer?: ReturnType<typeof setInterval>;
  #pongDue = false;
  /**
   * The last ping's payload, random: only a pong that carries it answers
   * it (RFC 6455 §5.5.3), so a client that sends pongs unasked and never
   * reads cannot pass for one that answers.
   */
  readonly #pingPayload = new Uint8Array(8);
  #closeTimer?: ReturnType<typeof setTimeout>;

  /** Starts bridging `client` (upgraded) and `target`. */
  constructor(
    client: Deno.Conn,
    target: SpliceConn,
    options: SessionOptions,
  ) {
    this.#client = client;
    this.#target = target;
    this.#options = options;
    if (options.pingTimeoutMs > 0) {
      this.#pingTimer = setInterval(
        () => this.#ping(),
        options.pingTimeoutMs / 2,
      );
    }
    this.done = Promise.all([this.#fromClient(), this.#fromTarget()]).then(
      async () => {
        this.#finish();
        // The last frame out before the server closes the connection.
        await this.#writing;
        return {
          bytesToTarget: this.#bytesToTarget,
          bytesToClient: this.#bytesToClient,
          end: this.#end ?? "closed",
        };
      },
    );
  }

  /** Closes the client with 1001, as a server shutting down does. */
  stop(): void {
    this.#close(1001, "server shutting down", "server shutting down (1001)");
  }

  /** Sends `bytes` to the client after what was sent before. */
  #send(bytes: Uint8Array): Promise<void> {
    // Nothing in flight (nearly always): written at once, not a turn of
    // the microtask queue later.
    const write = this.#inFlight === 0
      ? writeAll(this.#client, bytes)
      : this.#writing.then(() => writeAll(this.#client, bytes));
    this.#inFlight++;
    this.#writing = write.then(this.#wrote, this.#wrote);
    return write;
  }

  readonly #wrote = (): void => {
    this.#inFlight--;
  };

  /**
   * Sends a close frame (once) and says why it ends (the first reason
   * stays); the client then has `CLOSE_WAIT_MS` to answer with its own.
   */
  #close(code: number, reason: string, end: string): void {
    this.#end ??= end;
    if (this.#closeSent || this.#finished) return;
    this.#closeSent = true;
    clearInterval(this.#pingTimer);
    this.#send(encodeFrame(Opcode.close, closePayload(code, reason))).catch(
      () => this.#finish(),
    );
    this.#closeTimer = setTimeout(() => this.#finish(), CLOSE_WAIT_MS);
  }

  /** Ends both sides: both connections closed, so both reads end. */
  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#closeTimer);
    closeQuietly(this.#target);
    // After what is being written (a close frame goes out before the
    // end), or once a client that does not read has had its time.
    const cut = setTimeout(() => closeQuietly(this.#client), CLOSE_WAIT_MS);
    this.#writing.then(() => {
      clearTimeout(cut);
      closeQuietly(this.#client);
    });
  }

  #ping(): void {
    if (this.#pongDue) {
      this.#close(
        1001,
        "no pong",
        `client did not answer a ping within ${
          this.#options.pingTimeoutMs / 1000
        } s (1001)`,
      );
      // No answer is coming: closed once the close frame is out.
      this.#finish();
      return;
    }
    this.#pongDue = true;
    crypto.getRandomValues(this.#pingPayload);
    this.#send(encodeFrame(Opcode.ping, this.#pingPayload)).catch(() => {});
  }

  /** Reads the client's frames until its close frame or its end. */
  async #fromClient(): Promise<void> {
    const reader = new FrameReader(this.#client, {
      maxMessageBytes: this.#options.maxMessageBytes,
      bufferBytes: SPLICE_IDLE_BUFFER_BYTES,
      maxBufferBytes: SPLICE_BUFFER_BYTES,
    }, this.#options.leftover);
    /** base64: the message's text so far (fragments of it). */
    const pending = new MessageBytes(this.#options.maxMessageBytes);
    for (;;) {
      let event: FrameEvent | null;
      try {
        event = await reader.next();
      } catch (error) {
        if (error instanceof WebSocketProtocolError) {
          this.#close(
            error.code,
            "protocol error",
            `${error.message} (${error.code})`,
          );
          await this.#discardClient();
        } else if (!this.#finished) {
          this.#end ??= describeFailure("client", error, false);
        }
        break;
      }
      if (event === null) {
        this.#end ??= "client gone without a close frame (1006)";
        break;
      }
      if (event.kind === "control") {
        if (event.opcode === Opcode.ping) {
          // Awaited: a client that pings and does not read is not read
          // either, instead of a queue of pongs growing for it (300,000
          // pings of 125 bytes took the server 300 MB at its peak).
          await this.#send(encodeFrame(Opcode.pong, event.bytes)).catch(
            () => {},
          );
        } else if (event.opcode === Opcode.pong) {
          if (sameBytes(event.bytes, this.#pingPayload)) this.#pongDue = false;
        } else {
          this.#closeReceived(event.bytes);
          break;
        }
        continue;
      }
      if (this.#closeSent) continue;
      let bytes = event.bytes;
      if (this.#options.framing === "base64" && event.opcode === Opcode.text) {
        if (!event.last || pending.length > 0) {
          pending.append(bytes);
          if (!event.last) continue;
          bytes = pending.take();
        }
        try {
          bytes = Uint8Array.fromBase64(decoder.decode(bytes));
        } catch {
          this.#close(1007, "not base64", "a message not base64 (1007)");
          continue;
        }
      }
      if (bytes.length === 0) continue;
      try {
        await writeAll(this.#target, bytes);
      } catch (error) {
        this.#close(
          1011,
          "target failed",
          describeFailure("target", error, true),
        );
        continue;
      }
      this.#bytesToTarget += bytes.length;
      this.#options.onActivity?.();
    }
    this.#finish();
  }

  /** The client's close frame: answered with one of ours, then the end. */
  #closeReceived(payload: Uint8Array): void {
    let code: number;
    let reason: string;
    try {
      ({ code, reason } = parseClosePayload(payload));
    } catch (error) {
      const { code } = error as WebSocketProtocolError;
      this.#end ??= `client sent ${(error as Error).message} (${code})`;
      this.#close(code, "bad close frame", "");
      return;
    }
    this.#end ??= `client closed first (${describeClose(code, reason)})`;
    if (!this.#closeSent) {
      this.#closeSent = true;
      // An empty close frame is answered with an empty one (RFC 6455 §5.5.1).
      this.#send(
        encodeFrame(
          Opcode.close,
          code === 1005 ? new Uint8Array(0) : closePayload(code),
        ),
      ).catch(() => {});
    }
  }

  /**
   * After a breach: our close frame, then our end of the connection (so
   * the client reads the frame, then the end), then the client's bytes
   * read and dropped until it goes: closing with bytes unread would reset
   * the connection, and the client could lose the close frame.
   */
  async #discardClient(): Promise<void> {
    const buffer = new Uint8Array(4096);
    await this.#writing;
    try {
      await this.#client.closeWrite();
      while (!this.#finished && await this.#client.read(buffer) !== null) {
        // Dropped.
      }
    } catch {
      // Closed.
    }
  }

  /** The target sent bytes that text frames cannot carry. */
  #notText(): void {
    this.#close(
      1011,
      "target sent bytes that are not UTF-8",
      "target sent bytes that are not UTF-8, which text frames cannot carry (1011)",
    );
  }

  /** Reads the target into frames for the client until it ends. */
  async #fromTarget(): Promise<void> {
    // Small while idle; a read that fills it earns the large one.
    let buffer = new Uint8Array(HEADROOM + SPLICE_IDLE_BUFFER_BYTES);
    let payload = buffer.subarray(HEADROOM);
    const framing = this.#options.framing;
    // Fatal: text frames carry text only, and a byte turned into U+FFFD
    // would be a byte lost without a word.
    const text = framing === "text"
      ? new TextDecoder("utf-8", { fatal: true })
      : undefined;
    for (;;) {
      let n: number | null;
      try {
        n = await this.#target.read(payload);
      } catch (error) {
        if (!this.#finished) {
          this.#close(
            1011,
            "target failed",
            describeFailure("target", error, false),
          );
        }
        return;
      }
      if (n === null || this.#closeSent || this.#finished) break;
      let frame: Uint8Array;
      if (framing === "binary") {
        const start = writeFrameHeader(buffer, HEADROOM, Opcode.binary, n);
        frame = buffer.subarray(start, HEADROOM + n);
      } else if (framing === "base64") {
        frame = encodeFrame(
          Opcode.text,
          encoder.encode(payload.subarray(0, n).toBase64()),
        );
      } else {
        // A character cut by the read waits for its other bytes.
        let decoded: string;
        try {
          decoded = text!.decode(payload.subarray(0, n), { stream: true });
        } catch {
          return this.#notText();
        }
        frame = encodeFrame(Opcode.text, encoder.encode(decoded));
      }
      try {
        if (frame.length > 2) await this.#send(frame);
      } catch {
        // The client's side ends it (its read fails too).
        return;
      }
      this.#bytesToClient += n;
      this.#options.onActivity?.();
      if (n === payload.length && n < SPLICE_BUFFER_BYTES) {
        buffer = new Uint8Array(HEADROOM + SPLICE_BUFFER_BYTES);
        payload = buffer.subarray(HEADROOM);
      }
    }
    if (this.#finished || this.#closeSent) return;
    let rest: string | undefined;
    try {
      rest = text?.decode();
    } catch {
      return this.#notText();
    }
    if (rest) {
      await this.#send(encodeFrame(Opcode.text, encoder.encode(rest))).catch(
        () => {},
      );
    }
    this.#close(1000, "target closed", "target closed first");
  }
}
