/**
 * A raw WebSocket client for the bridge's tests: frames a library would
 * never send ({@linkcode clientFrame}: unmasked, fragmented, reserved
 * bits, long lengths), written over a plain TCP connection, and the
 * server's frames read back as they come ({@linkcode RawClient}).
 *
 * @module
 */

import { assertEquals, assertMatch } from "@std/assert";
import { concat } from "@std/bytes";
import { writeAll } from "../lib/io.ts";

const encode = (s: string) => new TextEncoder().encode(s);

/** A client frame: masked unless told otherwise, final unless told. */
export function clientFrame(
  opcode: number,
  payload: Uint8Array,
  options: {
    fin?: boolean;
    masked?: boolean;
    rsv?: number;
    long?: boolean;
    key?: Uint8Array;
  } = {},
): Uint8Array {
  const {
    fin = true,
    masked = true,
    rsv = 0,
    long = false,
    key = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]),
  } = options;
  const length = payload.length;
  const header: number[] = [(fin ? 0x80 : 0) | rsv | opcode];
  const maskBit = masked ? 0x80 : 0;
  if (long || length >= 0x10000) {
    header.push(maskBit | 127, 0, 0, 0, 0);
    header.push(length >>> 24, (length >>> 16) & 0xff, (length >>> 8) & 0xff);
    header.push(length & 0xff);
  } else if (length >= 126) {
    header.push(maskBit | 126, length >>> 8, length & 0xff);
  } else {
    header.push(maskBit | length);
  }
  if (!masked) return concat([new Uint8Array(header), payload]);
  const body = payload.map((byte, i) => byte ^ key[i & 3]);
  return concat([new Uint8Array(header), key, body]);
}

/** A server frame as read: its first byte's parts and its payload. */
export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** A raw client, upgraded: writes bytes, reads the server's frames. */
export class RawClient {
  #held = new Uint8Array(0);

  constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number, path = "/"): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(encode(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
        "Sec-WebSocket-Version: 13\r\n\r\n",
    ));
    const client = new RawClient(conn);
    const head = await client.head();
    assertMatch(head, /^HTTP\/1\.1 101 /);
    assertMatch(
      head,
      /\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i,
    );
    return client;
  }

  async #more(): Promise<boolean> {
    const buffer = new Uint8Array(65536);
    const n = await this.conn.read(buffer).catch(() => null);
    if (n === null) return false;
    this.#held = concat([this.#held, buffer.subarray(0, n)]);
    return true;
  }

  /** The server's answer to the upgrade: its head, up to its blank line. */
  async head(): Promise<string> {
    for (;;) {
      const text = new TextDecoder().decode(this.#held);
      const end = text.indexOf("\r\n\r\n");
      if (end !== -1) {
        this.#held = this.#held.subarray(end + 4);
        return text.slice(0, end + 4);
      }
      if (!(await this.#more())) return text;
    }
  }

  /** The next frame, or `null` at the end. */
  async frame(): Promise<ServerFrame | null> {
    for (;;) {
      const held = this.#held;
      if (held.length >= 2) {
        assertEquals(held[1] & 0x80, 0, "a server frame is never masked");
        let length = held[1] & 0x7f;
        let header = 2;
        if (length === 126) {
          header = 4;
          if (held.length >= 4) length = held[2] << 8 | held[3];
        } else if (length === 127) {
          header = 10;
          if (held.length >= 10) {
            length = Number(new DataView(held.buffer, held.byteOffset + 2, 8)
              .getBigUint64(0));
          }
        }
        if (held.length >= header + length) {
          this.#held = held.subarray(header + length);
          return {
            fin: (held[0] & 0x80) !== 0,
            opcode: held[0] & 0x0f,
            payload: held.slice(header, header + length),
          };
        }
      }
      if (!(await this.#more())) return null;
    }
  }

  /** Data frames' payloads until `length` bytes came; other frames kept. */
  async data(length: number, others: ServerFrame[] = []): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    let got = 0;
    while (got < length) {
      const frame = await this.frame();
      if (frame === null) throw new Error(`ended after ${got} bytes`);
      if (frame.opcode === 0x2 || frame.opcode === 0x0) {
        chunks.push(frame.payload);
        got += frame.payload.length;
      } else others.push(frame);
    }
    return concat(chunks);
  }

  /** The close frame's code, after any other frames; then the end. */
  async closeCode(): Promise<number> {
    for (;;) {
      const frame = await this.frame();
      if (frame === null) throw new Error("ended without a close frame");
      if (frame.opcode === 0x8) {
        return frame.payload[0] << 8 | frame.payload[1];
      }
    }
  }

  /** Whether the server ends the connection (after the frames held). */
  async ended(): Promise<boolean> {
    while (await this.frame() !== null) {
      // Frames after a close frame are not expected, but not this test's.
    }
    return true;
  }

  /** Writes all of `bytes` (a write may take only part under pressure). */
  send(bytes: Uint8Array): Promise<void> {
    return writeAll(this.conn, bytes);
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed.
    }
  }
}
