/**
 * Reading a WebSocket client's frames (RFC 6455 §5) as a server:
 * {@linkcode FrameReader} reads them from a connection as they come,
 * checked as the RFC asks of a server (masked, reserved bits clear, known
 * opcodes, control frames whole and at most 125 bytes, fragments in
 * order, text valid UTF-8, messages no larger than a limit), and hands a
 * data frame's payload on in the pieces the reads bring, so a large
 * message never has to be held whole. A breach is a
 * `WebSocketProtocolError` carrying the close code to send.
 *
 * @module
 */

import type { ByteReader } from "./io.ts";
import { Opcode, unmask, WebSocketProtocolError } from "./websocket_frames.ts";

/** What {@linkcode FrameReader.next} gives: a piece of a message, or a control frame. */
export type FrameEvent =
  | {
    /** Payload bytes of a data message, unmasked (valid until the next read). */
    readonly kind: "data";
    /** The message's opcode: `Opcode.text` or `Opcode.binary`. */
    readonly opcode: number;
    readonly bytes: Uint8Array;
    /** The message's last bytes. */
    readonly last: boolean;
  }
  | {
    /** A whole control frame (close, ping, pong), its payload copied out. */
    readonly kind: "control";
    readonly opcode: number;
    readonly bytes: Uint8Array;
  };

/** Options for {@linkcode FrameReader}. */
export interface FrameReaderOptions {
  /** Largest message, in payload bytes; a larger one is a 1009. */
  maxMessageBytes: number;
  /**
   * The buffer's size to start with: a read that fills it earns one of
   * `maxBufferBytes` (an idle client holds the small one). Default 256,
   * room for any header and control frame.
   */
  bufferBytes?: number;
  /** Bytes read at most at once. Default 64 KiB. */
  maxBufferBytes?: number;
}

/**
 * Reads a client's frames from a connection (see the module doc): each
 * {@linkcode FrameReader.next} gives the next piece of a data message or
 * the next control frame, or `null` once the connection has ended. One
 * buffer, read into and handed out in place: a piece is valid until the
 * next call, so its reader (a write to the target) paces the client.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { FrameReader } from "./websocket_frame_reader.ts";
 * import { Opcode } from "./websocket_frames.ts";
 *
 * // A masked binary frame of "hi" (key 0, 0, 0, 0), then the end.
 * const chunks = [new Uint8Array([0x82, 0x82, 0, 0, 0, 0, 104, 105])];
 * const reader = new FrameReader({
 *   read: (buffer) => {
 *     const chunk = chunks.shift();
 *     if (!chunk) return Promise.resolve(null);
 *     buffer.set(chunk);
 *     return Promise.resolve(chunk.length);
 *   },
 * }, { maxMessageBytes: 100 });
 * const event = await reader.next();
 * assertEquals(event?.kind === "data" && [event.opcode, event.last], [Opcode.binary, true]);
 * assertEquals(await reader.next(), null);
 * ```
 */
export class FrameReader {
  readonly #conn: ByteReader;
  readonly #maxMessageBytes: number;
  readonly #maxBufferBytes: number;
  #buffer: Uint8Array;
  #start = 0;
  #end = 0;
  /** The data frame being read: its payload bytes not yet handed out. */
  #remaining = 0;
  /** Its payload bytes handed out so far (the mask's position). */
  #offset = 0;
  #fin = false;
  /** Set while a data frame's header has been read and its payload is due. */
  #inFrame = false;
  readonly #key = new Uint8Array(4);
  /** The message in progress: its opcode (0: none), its bytes so far. */
  #messageOpcode = 0;
  #messageBytes = 0;
  /** Text messages: validates their UTF-8 across pieces. */
  readonly #text = new TextDecoder("utf-8", { fatal: true });

  /** Reads frames from `conn`, starting with `leftover` (bytes read already). */
  constructor(
    conn: ByteReader,
    options: FrameReaderOptions,
    leftover?: Uint8Array,
  ) {
    this.#conn = conn;
    this.#maxMessageBytes = options.maxMessageBytes;
    this.#maxBufferBytes = Math.max(options.maxBufferBytes ?? 64 * 1024, 256);
    this.#buffer = new Uint8Array(
      Math.max(options.bufferBytes ?? 256, 256, leftover?.length ?? 0),
    );
    if (leftover) {
      this.#buffer.set(leftover);
      this.#end = leftover.length;
    }
  }

  /**
   * The next piece of a message or control frame; `null` once the
   * connection has ended (where a frame was cut short too). Throws
   * {@linkcode WebSocketProtocolError} for a breach, and what the
   * connection's read throws.
   */
  async next(): Promise<FrameEvent | null> {
    for (;;) {
      if (!this.#inFrame) {
        const event = this.#frame();
        if (event !== undefined) return event;
      }
      if (this.#inFrame && this.#end > this.#start) return this.#dataPiece();
      if (!(await this.#fill())) return null;
    }
  }

  /** Reads more bytes after the ones held; false at the end. */
  async #fill(): Promise<boolean> {
    if (
      this.#end === this.#buffer.length &&
      this.#buffer.length < this.#maxBufferBytes
    ) {
      // The last read filled it: a busy client gets the large buffer.
      const larger = new Uint8Array(this.#maxBufferBytes);
      larger.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = larger;
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
    } else if (this.#end === this.#buffer.length) {
      // What is held is a header or a control frame in part: at most 139
      // bytes, moved to the front.
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#conn.read(this.#buffer.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  /** A data frame's payload bytes held now, unmasked. */
  #dataPiece(): FrameEvent {
    const take = Math.min(this.#remaining, this.#end - this.#start);
    const bytes = this.#buffer.subarray(this.#start, this.#start + take);
    unmask(bytes, this.#key, this.#offset);
    this.#start += take;
    this.#offset += take;
    this.#remaining -= take;
    const frameDone = this.#remaining === 0;
    if (frameDone) this.#inFrame = false;
    const last = frameDone && this.#fin;
    const opcode = this.#messageOpcode;
    if (opcode === Opcode.text) this.#checkText(bytes, last);
    if (last) this.#messageOpcode = 0;
    return { kind: "data", opcode, bytes, last };
  }

  #checkText(bytes: Uint8Array, last: boolean): void {
    try {
      this.#text.decode(bytes, { stream: !last });
    } catch {
      throw new WebSocketProtocolError(1007, "a text message not UTF-8");
    }
  }

  /**
   * The frame whose header starts at `#start`: a control frame whole, a
   * data frame's header taken (an empty piece for an empty data frame);
   * `undefined` until enough bytes are held.
   */
  #frame(): FrameEvent | undefined {
    const buffer = this.#buffer;
    const start = this.#start;
    const held = this.#end - start;
    if (held < 2) return undefined;
    const first = buffer[start];
    const second = buffer[start + 1];
    // Judged on the first two bytes: a client that sends an unmasked frame
    // may send no more.
    if (first & 0x70) {
      throw new WebSocketProtocolError(1002, "a frame with reserved bits set");
    }
    if (!(second & 0x80)) {
      throw new WebSocketProtocolError(
        1002,
        "an unmasked frame from a client",
      );
    }
    let length = second & 0x7f;
    let header = 2;
    if (length === 126) header = 4;
    else if (length === 127) header = 10;
    header += 4;
    if (held < header) return undefined;
    if (header === 8) length = buffer[start + 2] << 8 | buffer[start + 3];
    else if (header === 14) {
      const view = new DataView(buffer.buffer, buffer.byteOffset + start + 2);
      const high = view.getUint32(0);
      if (high & 0x80000000) {
        throw new WebSocketProtocolError(
          1002,
          "a frame length with its top bit set",
        );
      }
      // Anything past 2^32 is past any limit here.
      length = high > 0 ? Infinity : view.getUint32(4);
    }
    const fin = (first & 0x80) !== 0;
    const opcode = first & 0x0f;
    const keyAt = start + header - 4;
    if (opcode >= 0x8) {
      return this.#control(opcode, fin, length, header, keyAt);
    }
    this.#dataHeader(opcode, fin, length);
    this.#key.set(buffer.subarray(keyAt, keyAt + 4));
    this.#start = start + header;
    this.#remaining = length;
    this.#offset = 0;
    this.#fin = fin;
    this.#inFrame = true;
    if (length === 0) {
      // An empty frame: a piece of nothing, which may end the message.
      return this.#dataPiece();
    }
    return undefined;
  }

  /** Checks a data frame's header against the message in progress. */
  #dataHeader(opcode: number, fin: boolean, length: number): void {
    if (opcode === Opcode.continuation) {
      if (this.#messageOpcode === 0) {
        throw new WebSocketProtocolError(
          1002,
          "a continuation frame with no message begun",
        );
      }
    } else if (opcode === Opcode.text || opcode === Opcode.binary) {
      if (this.#messageOpcode !== 0) {
        throw new WebSocketProtocolError(
          1002,
          "a new message before the last one ended",
        );
      }
      this.#messageOpcode = opcode;
      this.#messageBytes = 0;
    } else {
      throw new WebSocketProtocolError(1002, `a frame of opcode ${opcode}`);
    }
    this.#messageBytes += length;
    if (this.#messageBytes > this.#maxMessageBytes) {
      throw new WebSocketProtocolError(
        1009,
        `a message of ${
          fin && Number.isFinite(this.#messageBytes)
            ? this.#messageBytes
            : "more"
        } bytes, more than ${this.#maxMessageBytes}`,
      );
    }
  }

  /** A control frame, once whole; `undefined` until then. */
  #control(
    opcode: number,
    fin: boolean,
    length: number,
    header: number,
    keyAt: number,
  ): FrameEvent | undefined {
    if (opcode > Opcode.pong) {
      throw new WebSocketProtocolError(1002, `a frame of opcode ${opcode}`);
    }
    if (!fin) {
      throw new WebSocketProtocolError(1002, "a fragmented control frame");
    }
    if (length > 125) {
      throw new WebSocketProtocolError(1002, "a control frame over 125 bytes");
    }
    const start = this.#start;
    if (this.#end - start < header + length) return undefined;
    const bytes = this.#buffer.slice(start + header, start + header + length);
    unmask(bytes, this.#buffer.subarray(keyAt, keyAt + 4), 0);
    this.#start = start + header + length;
    return { kind: "control", opcode, bytes };
  }
}
