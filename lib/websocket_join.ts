/**
 * Joining a byte stream (a TCP or Unix connection, stdin and stdout) with
 * an open {@linkcode WebSocket} (Deno's client), bytes both ways, as
 * websocat does: the pump the forwarder's `ws://` targets and
 * `clients/connect.ts` share. (The bridge, websockify's job, serves
 * WebSocket clients with its own server: `websocket_session.ts`.)
 *
 * A WebSocket carries messages, not bytes: each chunk read from the stream
 * becomes one message and each message's bytes are written to the stream,
 * in the {@linkcode WebSocketFraming} agreed on. It has no half-close
 * either: a close frame ends both directions (Deno answers a peer's close
 * frame at once), so the stream's end becomes a close frame, after
 * `lingerMs` without a message when the other side may still be answering.
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";
import { writeAll } from "./io.ts";

/**
 * How bytes travel in messages: `binary` frames (the default), `text`
 * frames (UTF-8; bytes that are not are replaced by U+FFFD), `base64`
 * (text frames of base64, websockify's subprotocol for old clients, noVNC's
 * choice), or `lines` (a text message per line, its newline left off;
 * `clients/connect.ts --text`).
 */
export type WebSocketFraming = "binary" | "text" | "base64" | "lines";

/** The default {@linkcode JoinOptions.maxMessageBytes}: 1 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;

/**
 * Bytes the socket may hold unsent (`bufferedAmount`) before the stream is
 * read again: the WebSocket API has no backpressure of its own.
 */
export const WEBSOCKET_HIGH_WATER_BYTES = 4 * 1024 * 1024;

/**
 * Bytes from the socket that may wait for the stream to take them; more
 * closes the socket (1008): a WebSocket cannot be told to stop sending.
 */
export const MAX_UNWRITTEN_BYTES = 16 * 1024 * 1024;

/** The stream side of a join: what `Deno.Conn` and stdin/stdout give. */
export interface ByteStream {
  /** As `Deno.Conn.read`: bytes read, or `null` at the end. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** As `Deno.Conn.write`. */
  write(bytes: Uint8Array): Promise<number>;
}

/** Options for {@linkcode joinWebSocket}. */
export interface JoinOptions {
  /** How bytes travel in messages. Default `binary`. */
  framing?: WebSocketFraming;
  /**
   * A message larger than this (its bytes, once decoded) closes the socket
   * with 1009.
   *
   * @default {@linkcode DEFAULT_MAX_MESSAGE_BYTES}
   */
  maxMessageBytes?: number;
  /**
   * After the stream ends, send the close frame once no message has come
   * for this long, in ms (a reply may still be on its way: WebSocket has
   * no half-close). Default 0: at once.
   */
  lingerMs?: number;
  /** What the stream is, for the end's words (`target`, `client`). */
  streamName?: string;
  /** What the socket's peer is, for the end's words. */
  socketName?: string;
  /** Called after moving bytes (an idle timeout starts again). */
  onActivity?: () => void;
}

/** What {@linkcode joinWebSocket} resolves to once both sides are done. */
export interface JoinResult {
  /** Bytes taken from the socket's messages and written to the stream. */
  bytesToStream: number;
  /** Bytes read from the stream and sent in messages. */
  bytesToSocket: number;
  /**
   * Why it ended: `client closed first (1000 bye)`, `target closed first`,
   * `message too big (1009)`...
   */
  end: string;
  /** The close code the socket ended with (sent or received). */
  closeCode?: number;
}

const encoder = new TextEncoder();

/** Bytes read from the stream at most at once. */
const READ_BUFFER_BYTES = 64 * 1024;
/** A read of at most this many bytes is copied out of the buffer. */
const COPY_BELOW_BYTES = 4096;

/**
 * A close code and reason as logged: `1000`, `1001 going away`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { describeClose } from "./websocket_join.ts";
 *
 * assertEquals(describeClose(1000, "bye"), "1000 bye");
 * ```
 */
export function describeClose(code: number, reason: string): string {
  return reason ? `${code} ${escapeControlChars(reason)}` : `${code}`;
}

/**
 * Joins `stream` and the open `socket` until both are done; closes the
 * socket (never the stream: its owner does) and resolves with the byte
 * counts and why it ended. Never rejects.
 *
 * @example Through a WebSocket echo
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { joinWebSocket } from "./websocket_join.ts";
 *
 * await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
 *   const { socket, response } = Deno.upgradeWebSocket(request);
 *   socket.onmessage = (event) => socket.send(event.data);
 *   return response;
 * });
 * const socket = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
 * await new Promise((resolve) => socket.onopen = resolve);
 * const chunks = [new TextEncoder().encode("hi")];
 * const written: string[] = [];
 * const result = await joinWebSocket({
 *   read: (buffer) => {
 *     const chunk = chunks.shift();
 *     if (!chunk) return Promise.resolve(null);
 *     buffer.set(chunk);
 *     return Promise.resolve(chunk.length);
 *   },
 *   write: (bytes) => {
 *     written.push(new TextDecoder().decode(bytes));
 *     return Promise.resolve(bytes.length);
 *   },
 * }, socket, { lingerMs: 100, streamName: "stdin" });
 * assertEquals(written, ["hi"]);
 * assertEquals(result.end, "stdin closed first");
 * ```
 */
export function joinWebSocket(
  stream: ByteStream,
  socket: WebSocket,
  options: JoinOptions = {},
): Promise<JoinResult> {
  return new Join(stream, socket, options).done;
}

class Join {
  readonly done: Promise<JoinResult>;
  readonly #stream: ByteStream;
  readonly #socket: WebSocket;
  readonly #framing: WebSocketFraming;
  readonly #maxMessageBytes: number;
  readonly #lingerMs: number;
  readonly #streamName: string;
  readonly #socketName: string;
  readonly #onActivity?: () => void;
  #bytesToStream = 0;
  #bytesToSocket = 0;
  /** Writes to the stream, one after another, in the messages' order. */
  #writing: Promise<void> = Promise.resolve();
  #unwritten = 0;
  #end?: string;
  #closeCode?: number;
  /** Closed for a fault of ours (a message too big...): write no more. */
  #discarding = false;
  #closed!: () => void;
  readonly #socketClosed = new Promise<void>((resolve) =>
    this.#closed = resolve
  );
  #lastMessageAt = performance.now();
  /** Ends the read in progress with `null` once the socket has closed. */
  #wakeReader?: () => void;
  /** `lines`: a line read in part. */
  #partialLine = "";
  // Fatal: a byte turned into U+FFFD would be lost without a word.
  readonly #lineDecoder = new TextDecoder("utf-8", { fatal: true });
  readonly #textDecoder = new TextDecoder("utf-8", { fatal: true });

  constructor(stream: ByteStream, socket: WebSocket, options: JoinOptions) {
    this.#stream = stream;
    this.#socket = socket;
    this.#framing = options.framing ?? "binary";
    this.#maxMessageBytes = options.maxMessageBytes ??
      DEFAULT_MAX_MESSAGE_BYTES;
    this.#lingerMs = options.lingerMs ?? 0;
    this.#streamName = options.streamName ?? "stream";
    this.#socketName = options.socketName ?? "socket";
    this.#onActivity = options.onActivity;
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => this.#message(event));
    // Deno may report one close twice (a missed pong: 1001, then 1005);
    // the first says why.
    socket.addEventListener("close", (event) => {
      if (this.#closeCode === undefined) {
        // No close frame (the connection dropped): RFC 6455's 1006, which
        // Deno reports as 0 on a server's socket.
        const dropped = !event.wasClean && (event.code === 0 ||
          event.code === 1006);
        this.#closeCode = dropped ? 1006 : event.code;
        this.#finish(
          dropped
            ? `${this.#socketName} gone without a close frame (1006)`
            : `${this.#socketName} closed first (${
              describeClose(event.code, event.reason)
            })`,
        );
      }
      this.#closed();
      this.#wakeReader?.();
    });
    this.done = this.#run();
  }

  #finish(end: string): void {
    this.#end ??= end;
  }

  /** Closes the socket with `code`, saying `end` unless something already ended it. */
  #close(code: number, reason: string, end: string): void {
    this.#finish(end);
    this.#closeCode ??= code;
    if (code !== 1000) this.#discarding = true;
    try {
      // The WebSocket API closes with 1000 or 3000-4999 only, and throws
      // for RFC 6455's own codes (1007, 1009, 1011...), which left the
      // socket open: those go as 4000 plus their last digits, a
      // private-use code, and `end` says which was meant.
      const sent = code === 1000 || (code >= 3000 && code <= 4999)
        ? code
        : 4000 + code % 1000;
      this.#socket.close(sent, reason);
    } catch {
      // Already closing.
    }
  }

  #message(event: MessageEvent): void {
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    this.#lastMessageAt = performance.now();
    let bytes: Uint8Array;
    try {
      bytes = this.#decode(event.data as ArrayBuffer | string);
    } catch {
      this.#close(1007, "not base64", "a message not base64 (1007)");
      return;
    }
    if (bytes.length > this.#maxMessageBytes) {
      this.#close(
        1009,
        "message too big",
        `a message of ${bytes.length} bytes, more than ${this.#maxMessageBytes} (1009)`,
      );
      return;
    }
    if (bytes.length === 0) return;
    this.#unwritten += bytes.length;
    if (this.#unwritten > MAX_UNWRITTEN_BYTES) {
      this.#close(
        1008,
        `${this.#streamName} not reading`,
        `${this.#streamName} not reading: ${this.#unwritten} bytes waiting (1008)`,
      );
      return;
    }
    this.#writing = this.#writing.then(async () => {
      if (this.#discarding) return;
      await writeAll(this.#stream, bytes);
      this.#unwritten -= bytes.length;
      this.#bytesToStream += bytes.length;
      this.#onActivity?.();
    });
    // A failed write ends the join (#run sees it); later writes are skipped.
    this.#writing.catch((error: Error) =>
      this.#close(
        1011,
        `${this.#streamName} failed`,
        `${this.#streamName} failed: ${error.message}`,
      )
    );
  }

  #decode(data: ArrayBuffer | string): Uint8Array {
    if (this.#framing === "lines") {
      // A message is a line: printed with its newline, one it lacks added.
      const text = typeof data === "string"
        ? data
        : new TextDecoder().decode(data);
      return encoder.encode(text.endsWith("\n") ? text : `${text}\n`);
    }
    if (typeof data !== "string") return new Uint8Array(data);
    if (this.#framing === "base64") return Uint8Array.fromBase64(data);
    return encoder.encode(data);
  }

  /**
   * `bytes` as text, or `undefined` (and the socket closed with 1011) when
   * they are not UTF-8: text messages cannot carry them.
   */
  #text(
    decoder: TextDecoder,
    bytes: Uint8Array,
    end: boolean,
  ): string | undefined {
    try {
      return decoder.decode(bytes, { stream: !end });
    } catch {
      this.#close(
        1011,
        `${this.#streamName} sent bytes that are not UTF-8`,
        `${this.#streamName} sent bytes that are not UTF-8, which text messages cannot carry (1011)`,
      );
      return undefined;
    }
  }

  /** Sends `bytes` as the framing says; false once the socket is not open. */
  #send(bytes: Uint8Array, end = false): boolean {
    if (this.#socket.readyState !== WebSocket.OPEN) return false;
    switch (this.#framing) {
      case "binary":
        this.#socket.send(bytes);
        return true;
      case "base64":
        this.#socket.send(bytes.toBase64());
        return true;
      case "text": {
        const text = this.#text(this.#textDecoder, bytes, end);
        if (text === undefined) return false;
        if (text) this.#socket.send(text);
        return true;
      }
      case "lines": {
        const text = this.#text(this.#lineDecoder, bytes, end);
        if (text === undefined) return false;
        const lines = (this.#partialLine + text).split("\n");
        this.#partialLine = lines.pop()!;
        if (end && this.#partialLine) lines.push(this.#partialLine);
        for (const line of lines) this.#socket.send(line.replace(/\r$/, ""));
        return true;
      }
    }
  }

  async #run(): Promise<JoinResult> {
    if (this.#socket.readyState === WebSocket.CONNECTING) {
      // An upgraded socket opens once its 101 has gone out.
      await new Promise((resolve) => {
        this.#socket.addEventListener("open", resolve, { once: true });
        this.#socketClosed.then(resolve);
      });
    }
    await this.#pumpToSocket();
    await this.#socketClosed;
    try {
      await this.#writing;
    } catch {
      // Said by the end already.
    }
    return {
      bytesToStream: this.#bytesToStream,
      bytesToSocket: this.#bytesToSocket,
      end: this.#end ?? "closed",
      closeCode: this.#closeCode,
    };
  }

  /** Reads the stream into messages until it ends, fails, or the socket closes. */
  async #pumpToSocket(): Promise<void> {
    let buffer = new Uint8Array(READ_BUFFER_BYTES);
    for (;;) {
      let n: number | null;
      try {
        n = await this.#readUnlessClosed(buffer);
      } catch (error) {
        this.#close(
          1011,
          `${this.#streamName} failed`,
          `${this.#streamName} failed: ${(error as Error).message}`,
        );
        return;
      }
      if (n === null) break;
      // `send` may still hold what it was given when the buffer is read
      // into again: a small read is copied, a large one keeps the buffer
      // and the next read gets a fresh one (a fresh 64 KiB buffer each
      // read cost 10% of a 64-byte ping-pong; a copy each read, 15% of a
      // 64 KiB stream).
      let chunk: Uint8Array;
      if (n <= COPY_BELOW_BYTES) {
        chunk = buffer.slice(0, n);
      } else {
        chunk = buffer.subarray(0, n);
        buffer = new Uint8Array(READ_BUFFER_BYTES);
      }
      if (!this.#send(chunk)) return;
      this.#bytesToSocket += n;
      this.#onActivity?.();
      while (
        this.#socket.bufferedAmount > WEBSOCKET_HIGH_WATER_BYTES &&
        this.#socket.readyState === WebSocket.OPEN
      ) {
        // The WebSocket API says nothing when its buffer drains: look again
        // soon.
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    this.#send(new Uint8Array(0), true);
    await this.#linger();
    await this.#writing.catch(() => {});
    this.#close(
      1000,
      `${this.#streamName} closed`,
      `${this.#streamName} closed first`,
    );
  }

  /**
   * The stream's next read, or `null` once the socket has closed (a
   * `Promise.race` with the close each read would pile a reaction a read
   * on the close's promise for the connection's whole life).
   */
  #readUnlessClosed(buffer: Uint8Array): Promise<number | null> {
    if (this.#socket.readyState === WebSocket.CLOSED) {
      return Promise.resolve(null);
    }
    return new Promise((resolve, reject) => {
      this.#wakeReader = () => resolve(null);
      this.#stream.read(buffer).then(resolve, reject);
    });
  }

  /** Waits until no message has come for `lingerMs` (or the socket closed). */
  async #linger(): Promise<void> {
    if (this.#lingerMs <= 0) return;
    for (;;) {
      const quietMs = performance.now() - this.#lastMessageAt;
      if (quietMs >= this.#lingerMs) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const closed = await Promise.race([
        new Promise<boolean>((resolve) =>
          timer = setTimeout(() => resolve(false), this.#lingerMs - quietMs)
        ),
        this.#socketClosed.then(() => true),
      ]);
      clearTimeout(timer);
      if (closed) return;
    }
  }
}
