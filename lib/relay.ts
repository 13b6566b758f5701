/**
 * Relaying between a local pair of streams (stdin and stdout) and a socket,
 * as `nc` does: bytes both ways, half-close when the local input ends, done
 * when the peer closes. And the datagram counterpart: one datagram per
 * input chunk, replies to the output.
 *
 * @module
 */

import { canonicalAddress } from "./address.ts";
import { describeConnectFailure } from "./connect_error.ts";
import { type ByteReader, type ByteWriter, writeAll } from "./io.ts";

/**
 * What one read of the input may send: Deno reads stdin from a thread of
 * its own, one thread hop a read (64 KiB reads cost the client 6% more CPU
 * sending 100 MB over TLS).
 */
const SEND_BUFFER_SIZE = 256 * 1024;

/** A stream socket as {@linkcode relay} needs it. */
export interface RelayConn extends ByteReader, ByteWriter {
  /** Half-closes: sends end of stream, keeps reading. */
  closeWrite(): Promise<void>;
}

/** Where {@linkcode relay} and {@linkcode relayDatagrams} read and write locally. */
export interface RelayOptions {
  /** What to send. Default: `Deno.stdin`. */
  input?: ByteReader;
  /** Where received bytes go. Default: `Deno.stdout`. */
  output?: ByteWriter;
  /**
   * Streams: once the peer has finished sending, keep sending the input
   * while it keeps coming (the peer may have only half-closed) and stop
   * when none has come for this long. Default 500 ms.
   */
  lingerMs?: number;
  /**
   * How a failure of the connection (a reset...) names the peer, e.g.
   * `127.0.0.1:7`: it then rejects with a one-line `ConnectError`
   * (`connection to 127.0.0.1:7 was reset by the peer`). Without it, with
   * the system's own error.
   */
  peer?: string;
}

/** A failure of the connection, named as `options.peer` asks. */
function connectionFailure(error: unknown, options: RelayOptions): unknown {
  return options.peer === undefined
    ? error
    : describeConnectFailure(error, options.peer);
}

/** What a relay moved. */
export interface RelayResult {
  /** Bytes read from the input and sent. */
  bytesSent: number;
  /** Bytes received and written to the output. */
  bytesReceived: number;
  /** Whether the input reached its end (and the write side was closed). */
  inputEnded: boolean;
}

function isGone(error: unknown): boolean {
  return error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.NotConnected;
}

/**
 * Copies `input` to `conn` and `conn` to `output` at once, byte-exact, with
 * one reused buffer each way (a slow side holds the other back instead of
 * growing a queue). When `input` ends it half-closes `conn` (`closeWrite`)
 * and keeps copying until the peer closes. When the peer finishes first,
 * it goes on sending what `input` still has (the peer may only have
 * half-closed) and resolves once `input` ends or has been idle for
 * `lingerMs` (an interactive stdin may never end: `nc` exits then too).
 *
 * A read of `input` still pending then is left running: `Deno.stdin` cannot
 * be cancelled, a script simply exits. A read error on `conn` rejects; a
 * write to a peer that is gone stops sending.
 *
 * @example Sending a request, half-closing, reading the reply
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { relay } from "./relay.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const serving = (async () => {
 *   using peer = await listener.accept();
 *   const buffer = new Uint8Array(16);
 *   const n = await peer.read(buffer);
 *   assertEquals(await peer.read(buffer), null); // the client half-closed
 *   await peer.write(new TextEncoder().encode(`got ${n} bytes`));
 * })();
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const request = new TextEncoder().encode("hello");
 * let sent = false;
 * const input = {
 *   read(p: Uint8Array): Promise<number | null> {
 *     if (sent) return Promise.resolve(null);
 *     sent = true;
 *     p.set(request);
 *     return Promise.resolve(request.byteLength);
 *   },
 * };
 * let reply = "";
 * const output = {
 *   write(p: Uint8Array): Promise<number> {
 *     reply += new TextDecoder().decode(p);
 *     return Promise.resolve(p.byteLength);
 *   },
 * };
 * const result = await relay(conn, { input, output });
 * await serving;
 * assertEquals(reply, "got 5 bytes");
 * assertEquals(result, { bytesSent: 5, bytesReceived: 11, inputEnded: true });
 * ```
 */
export async function relay(
  conn: RelayConn,
  options: RelayOptions = {},
): Promise<RelayResult> {
  const input = options.input ?? Deno.stdin;
  const output = options.output ?? Deno.stdout;
  const result: RelayResult = {
    bytesSent: 0,
    bytesReceived: 0,
    inputEnded: false,
  };
  const lingerMs = options.lingerMs ?? 500;
  let stopped = false; // Relay over: the sender must not write any more.
  let writing = false;
  let lastInputMs = performance.now();

  const sending = (async () => {
    const buffer = new Uint8Array(SEND_BUFFER_SIZE);
    while (true) {
      const n = await input.read(buffer);
      lastInputMs = performance.now();
      if (stopped) return;
      if (n === null) break;
      writing = true;
      try {
        await writeAll(conn, buffer.subarray(0, n));
      } catch (error) {
        if (isGone(error)) return; // The peer stopped reading: nothing to send.
        throw connectionFailure(error, options);
      } finally {
        writing = false;
        lastInputMs = performance.now();
      }
      result.bytesSent += n;
    }
    result.inputEnded = true;
    try {
      await conn.closeWrite();
    } catch (error) {
      if (!isGone(error)) throw connectionFailure(error, options);
    }
  })();
  let sent = false;
  const sendingSettled = sending.then(
    () => sent = true,
    () => sent = true,
  );

  const receiving = receive(conn, output, result, options);

  try {
    // A failure sending is reported at once; otherwise the receiver ends it.
    await Promise.race([receiving, sending.then(() => receiving)]);
    // The peer has finished sending, but it may only have half-closed and
    // still read: keep sending while input keeps coming, and stop once it
    // has been idle for `lingerMs` (an interactive stdin may never end).
    while (!sent) {
      const idleMs = performance.now() - lastInputMs;
      if (!writing && idleMs >= lingerMs) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        sendingSettled,
        new Promise((resolve) => {
          timer = setTimeout(resolve, Math.max(10, lingerMs - idleMs));
        }),
      ]);
      clearTimeout(timer);
    }
    await (sent ? sending : undefined);
  } finally {
    stopped = true;
    sending.catch(() => {}); // A read of `input` may still be pending.
  }
  return result;
}

/**
 * Room for what comes while the output is busy: a TLS read hands over one
 * record (16 KiB) at a time, often in two pieces.
 */
const RECEIVE_BUFFER_SIZE = 256 * 1024;
/** With less room than this left, wait for the output and start over. */
const MIN_READ_SIZE = 16 * 1024;

/**
 * Copies `conn` to `output` until the peer closes (or `output`'s reader
 * goes away, as `| head` does), counting into `result`. It goes on reading
 * while `output` writes what came before, into the same buffer after it,
 * and then writes all that came meanwhile at once: Deno writes stdout from
 * a thread of its own, one thread hop a write, and 100 MB over TLS came in
 * 11,000 reads (a record and its tail), 11,000 writes. An idle output
 * still gets each read at once.
 */
async function receive(
  conn: RelayConn,
  output: ByteWriter,
  result: RelayResult,
  options: RelayOptions,
): Promise<void> {
  const buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
  let filled = 0; // Bytes read into `buffer`...
  let written = 0; // ...and of them, written to `output`.
  let draining = false;
  let drained: Promise<void> = Promise.resolve();
  let failure: { error: unknown } | undefined;
  let outputGone!: () => void;
  const gone = new Promise<null>((resolve) => outputGone = () => resolve(null));
  let stopped = false;

  // Writes until all that was read is written; `draining` turns false in
  // the same turn as the last check, so a read after it starts a new one.
  const drain = () => {
    if (draining) return;
    draining = true;
    drained = (async () => {
      try {
        while (written < filled && !stopped) {
          const end = filled;
          try {
            await writeAll(output, buffer.subarray(written, end));
          } catch (error) {
            // `| head` went away: done, quietly; anything else is thrown.
            if (!(error instanceof Deno.errors.BrokenPipe)) failure = { error };
            stopped = true;
            outputGone();
            return;
          }
          result.bytesReceived += end - written;
          written = end;
        }
      } finally {
        draining = false;
      }
    })();
  };

  while (!stopped) {
    if (written === filled && !draining) {
      written = filled = 0;
    } else if (buffer.byteLength - filled < MIN_READ_SIZE) {
      await drained;
      if (stopped) break;
      written = filled = 0;
    }
    const reading = conn.read(buffer.subarray(filled));
    let n: number | null;
    try {
      n = await Promise.race([reading, gone]);
    } catch (error) {
      await drained;
      throw connectionFailure(error, options);
    }
    if (stopped) {
      reading.catch(() => {}); // The caller closes `conn`.
      break;
    }
    if (n === null) break;
    filled += n;
    drain();
  }
  await drained;
  if (failure) throw failure.error;
}

/** A datagram socket as {@linkcode relayDatagrams} needs it. */
export interface DatagramSocket {
  /** Sends one datagram to `addr`. */
  send(p: Uint8Array, addr: Deno.Addr): Promise<number>;
  /** Receives one datagram and its sender. */
  receive(p?: Uint8Array): Promise<[Uint8Array, Deno.Addr]>;
  /** Closes the socket (ending a pending `receive`). */
  close(): void;
}

/** Options for {@linkcode relayDatagrams}. */
export interface DatagramRelayOptions extends RelayOptions {
  /**
   * After the input ends, stop once no reply has come for this long (a
   * datagram peer never says it is done). Default 1000 ms.
   */
  quietMs?: number;
}

/** The datagram the largest IPv4 UDP payload fits in. */
const MAX_DATAGRAM = 65_507;

function sameAddr(a: Deno.Addr, b: Deno.Addr): boolean {
  if ("hostname" in a && "hostname" in b) {
    return a.port === b.port &&
      canonicalAddress(a.hostname) === canonicalAddress(b.hostname);
  }
  if ("path" in a && "path" in b) return a.path === b.path;
  return false;
}

/**
 * Sends each chunk read from `input` as one datagram to `peer` and writes
 * each datagram that comes back from `peer` (others are ignored) to
 * `output`. Once `input` ends it keeps printing replies and resolves when
 * none has come for `quietMs`. It owns `socket`: it closes it when done.
 *
 * @example One datagram to an echo socket and its reply
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { relayDatagrams } from "./relay.ts";
 *
 * const echo = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * const echoing = echo.receive().then(([data, from]) => echo.send(data, from));
 * const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * const chunks = [new TextEncoder().encode("ping")];
 * const input = {
 *   read(p: Uint8Array): Promise<number | null> {
 *     const chunk = chunks.shift();
 *     if (!chunk) return new Promise((resolve) => setTimeout(() => resolve(null), 50));
 *     p.set(chunk);
 *     return Promise.resolve(chunk.byteLength);
 *   },
 * };
 * let reply = "";
 * const output = {
 *   write(p: Uint8Array): Promise<number> {
 *     reply += new TextDecoder().decode(p);
 *     return Promise.resolve(p.byteLength);
 *   },
 * };
 * await relayDatagrams(socket, echo.addr, { input, output, quietMs: 200 });
 * await echoing;
 * echo.close();
 * assertEquals(reply, "ping");
 * ```
 */
export async function relayDatagrams(
  socket: DatagramSocket,
  peer: Deno.Addr,
  options: DatagramRelayOptions = {},
): Promise<RelayResult> {
  const input = options.input ?? Deno.stdin;
  const output = options.output ?? Deno.stdout;
  const quietMs = options.quietMs ?? 1000;
  const result: RelayResult = {
    bytesSent: 0,
    bytesReceived: 0,
    inputEnded: false,
  };
  let lastActivity = performance.now();
  let receiveError: unknown;
  let outputGone = false;
  let closing = false; // Closing the socket ends `receive` with an error.

  // The receive loop runs until the socket is closed (below); it records
  // activity so the quiet period restarts with every reply.
  const receiving = (async () => {
    const buffer = new Uint8Array(MAX_DATAGRAM);
    while (true) {
      let data: Uint8Array, from: Deno.Addr;
      try {
        [data, from] = await socket.receive(buffer);
      } catch (error) {
        if (!closing) receiveError = connectionFailure(error, options);
        return;
      }
      if (!sameAddr(from, peer)) continue;
      lastActivity = performance.now();
      try {
        await writeAll(output, data);
      } catch (error) {
        if (!(error instanceof Deno.errors.BrokenPipe)) receiveError = error;
        outputGone = true;
        return;
      }
      result.bytesReceived += data.byteLength;
    }
  })();

  try {
    const buffer = new Uint8Array(MAX_DATAGRAM);
    while (!outputGone && receiveError === undefined) {
      const n = await input.read(buffer);
      if (n === null) {
        result.inputEnded = true;
        break;
      }
      await socket.send(buffer.subarray(0, n), peer).catch((error) => {
        throw connectionFailure(error, options);
      });
      result.bytesSent += n;
      lastActivity = performance.now();
    }
    lastActivity = performance.now();
    while (!outputGone && receiveError === undefined) {
      const left = lastActivity + quietMs - performance.now();
      if (left <= 0) break;
      await new Promise((resolve) => setTimeout(resolve, left));
    }
  } finally {
    closing = true;
    socket.close();
    await receiving;
  }
  if (receiveError !== undefined) throw receiveError;
  return result;
}
