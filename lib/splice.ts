/**
 * Joining two stream connections, as a forwarder does for each client:
 * bytes copied both ways, byte-exact, each direction half-closed on its
 * own, with backpressure and a fixed amount of memory per pair.
 *
 * @module
 */

import type { ByteReader, ByteWriter } from "./io.ts";

/** A stream connection as {@linkcode splice} needs it (any `Deno.Conn`). */
export interface SpliceConn extends ByteReader, ByteWriter {
  /** Half-closes: sends end of stream, keeps reading. */
  closeWrite(): Promise<void>;
  /** Closes both ways at once. */
  close(): void;
}

/** What a {@linkcode splice} moved, and why it ended. */
export interface SpliceResult {
  /** Bytes read from the client and written to the target. */
  bytesToTarget: number;
  /** Bytes read from the target and written to the client. */
  bytesToClient: number;
  /**
   * Why it ended, for a log line: `client closed first` or `target closed
   * first` (both sides finished, in that order), `client reset`, `target
   * reset` (a read or a write failed: the side reset the connection, or
   * closed it and then reset what was still sent), `cut by the server`
   * (the client's connection was closed under it: an idle timeout, a
   * shutdown), or `client: REASON` / `target: REASON` for anything else.
   */
  end: string;
  /** `true` when both sides finished sending in order (no reset, no cut). */
  clean: boolean;
}

/** Options for {@linkcode splice}. */
export interface SpliceOptions {
  /** Called each time bytes have moved (to restart an idle timeout). */
  onActivity?: () => void;
  /**
   * The largest buffer each direction grows to, in bytes. Default
   * {@linkcode SPLICE_BUFFER_BYTES}.
   */
  maxBufferBytes?: number;
}

/**
 * The buffer each direction of a {@linkcode splice} starts with: an idle
 * pair holds two of these. A read that fills it earns the large one. An
 * idle pair's memory is then mostly Deno's two sockets: measured with
 * `deno task bench` after the same load, about 10 KB of RSS a pair, where
 * a bare two-loop Deno forwarder with these buffers takes 8.5 KB and our
 * echo server 3.5 KB a connection (with 64 KiB buffers from the start, as
 * the bare one in `bench/minimal_forward.ts` has: 117 KB).
 */
export const SPLICE_IDLE_BUFFER_BYTES = 256;

/**
 * The largest buffer each direction of a {@linkcode splice} uses: a pair
 * holds at most two (plus what the kernel's socket buffers hold). Measured
 * (`deno task bench`, 64 streams): with it a forwarder moves about 1.4 to
 * 1.8 times what haproxy's default 16 KiB buffers do, for half its CPU per
 * MB.
 */
export const SPLICE_BUFFER_BYTES = 64 * 1024;

type Side = "client" | "target";

function closeQuietly(conn: SpliceConn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** The words for a failure of `side`'s connection. */
function describeFailure(side: Side, error: unknown, writing: boolean): string {
  if (
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted
  ) {
    return "cut by the server";
  }
  // A write to a side that has closed (or reset) fails with EPIPE once its
  // kernel answered the write with a reset: a reset too, seen by writing.
  if (
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    (writing && error instanceof Deno.errors.NotConnected)
  ) {
    return `${side} reset`;
  }
  if (error instanceof Deno.errors.TimedOut) {
    return `${side} dead (keepalive probes unanswered)`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `${side}: ${message.split("\n")[0].replace(/ \(os error \d+\)$/, "")}`;
}

/**
 * Copies `client` to `target` and `target` to `client` until both have
 * finished, then closes both: it owns them once called.
 *
 * Each direction is one loop, read then write, over one buffer of its own
 * (no queue): a side that does not read stops the other side being read
 * (backpressure), and a pair never holds more than two buffers of
 * `maxBufferBytes`. When one side finishes sending, the other is
 * half-closed (`closeWrite`) and the other direction goes on, so a client
 * that shuts down its writing still gets the target's whole answer, and
 * the reverse. A failure of either side (a reset, a write to a side that
 * is gone, the server closing the client under it) closes both at once.
 * It never rejects: the result says how it ended.
 *
 * @example An echo target, through a pair of connections
 * ```ts
 * import { splice } from "./splice.ts";
 *
 * using front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using back = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const echoing = back.accept().then(async (conn) => {
 *   await conn.readable.pipeTo(conn.writable); // closes it when done
 * });
 * const forwarding = front.accept().then(async (client) => {
 *   const target = await Deno.connect({ hostname: "127.0.0.1", port: back.addr.port });
 *   return await splice(client, target);
 * });
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
 * await conn.write(new TextEncoder().encode("ping"));
 * await conn.closeWrite();
 * const reply = await new Response(conn.readable).text();
 * const result = await forwarding;
 * await echoing;
 * if (reply !== "ping" || result.bytesToClient !== 4) throw new Error(reply);
 * ```
 */
export async function splice(
  client: SpliceConn,
  target: SpliceConn,
  options: SpliceOptions = {},
): Promise<SpliceResult> {
  const maxBuffer = Math.max(
    SPLICE_IDLE_BUFFER_BYTES,
    options.maxBufferBytes ?? SPLICE_BUFFER_BYTES,
  );
  const onActivity = options.onActivity;
  const result: SpliceResult = {
    bytesToTarget: 0,
    bytesToClient: 0,
    end: "",
    clean: false,
  };
  let failed = false;
  let firstDone: Side | undefined;

  // The first failure ends both directions: closing both connections ends
  // the other loop's pending read or write.
  const fail = (side: Side, error: unknown, writing: boolean) => {
    if (failed) return;
    failed = true;
    result.end = describeFailure(side, error, writing);
    closeQuietly(client);
    closeQuietly(target);
  };

  const pump = async (
    from: SpliceConn,
    to: SpliceConn,
    fromSide: Side,
    toSide: Side,
  ): Promise<void> => {
    let buffer = new Uint8Array(SPLICE_IDLE_BUFFER_BYTES);
    while (true) {
      let n: number | null;
      try {
        n = await from.read(buffer);
      } catch (error) {
        fail(fromSide, error, false);
        return;
      }
      if (n === null) break;
      try {
        // One write nearly always takes it all; loop only when it does not.
        let written = await to.write(
          n === buffer.byteLength ? buffer : buffer.subarray(0, n),
        );
        while (written < n) {
          written += await to.write(buffer.subarray(written, n));
        }
      } catch (error) {
        fail(toSide, error, true);
        return;
      }
      if (fromSide === "client") result.bytesToTarget += n;
      else result.bytesToClient += n;
      onActivity?.();
      if (n === buffer.byteLength && n < maxBuffer) {
        buffer = new Uint8Array(maxBuffer);
      }
    }
    firstDone ??= fromSide;
    if (failed) return;
    try {
      await to.closeWrite();
    } catch (error) {
      // Already gone (reset, closed): the other direction says how.
      if (!(error instanceof Deno.errors.NotConnected)) {
        fail(toSide, error, true);
      }
    }
  };

  await Promise.all([
    pump(client, target, "client", "target"),
    pump(target, client, "target", "client"),
  ]);
  if (!failed) {
    result.clean = true;
    result.end = `${firstDone} closed first`;
  }
  closeQuietly(client);
  closeQuietly(target);
  return result;
}
