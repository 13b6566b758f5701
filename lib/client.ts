/**
 * The client side every script here shares, besides connecting (that is
 * `dialHost`, in `dial.ts`): read with a timeout, and ask a UDP server with
 * retries, each failure one clear `ConnectError` line, where the clients
 * of the seed (the C socket examples page this toolkit ports, see
 * `mod.ts`) ignore `connect`'s result and block forever.
 *
 * @module
 */

import { canonicalAddress } from "./address.ts";
import {
  checkConnectHost,
  ConnectError,
  describeConnectFailure,
  NoReplyError,
} from "./connect_error.ts";
import { formatSeconds } from "./units.ts";
import { joinHostPort } from "./endpoint.ts";
import { closeQuietly } from "./io.ts";
import { notePermission } from "./main.ts";

/**
 * Reads once from `conn` like `conn.read(buffer)`, but gives up after
 * `timeoutMs` (0: never): the connection is then closed (a pending read
 * cannot be cancelled otherwise) and the promise rejects with a
 * {@linkcode ConnectError} of kind `timeout` naming `target`. Other read
 * failures (reset...) reject with a {@linkcode ConnectError} too.
 *
 * @example
 * ```ts
 * import { assertEquals, assertRejects } from "@std/assert";
 * import { readWithTimeout } from "./client.ts";
 * import { ConnectError } from "./connect_error.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const { port } = listener.addr as Deno.NetAddr;
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * using _silent = await listener.accept(); // never sends anything
 * const error = await assertRejects(
 *   () => readWithTimeout(conn, new Uint8Array(16), 50, "the server"),
 *   ConnectError,
 *   "timed out after 0.05 s waiting for data from the server",
 * );
 * assertEquals(error.kind, "timeout");
 * ```
 */
export async function readWithTimeout(
  conn: Deno.Conn,
  buffer: Uint8Array,
  timeoutMs: number,
  target: string,
): Promise<number | null> {
  let timedOut = false;
  const timer = timeoutMs > 0
    ? setTimeout(() => {
      timedOut = true;
      closeQuietly(conn);
    }, timeoutMs)
    : undefined;
  try {
    return await conn.read(buffer);
  } catch (error) {
    if (timedOut) {
      throw new ConnectError(
        `timed out after ${
          formatSeconds(timeoutMs)
        } waiting for data from ${target}`,
        "timeout",
        target,
        error,
      );
    }
    throw describeConnectFailure(error, target);
  } finally {
    clearTimeout(timer);
  }
}

/** Options for {@linkcode requestDatagram}. */
export interface DatagramRequestOptions {
  /** Server: IP literal (IPv6 with or without brackets) or host name. */
  hostname: string;
  /** Server port, 1 to 65535. */
  port: number;
  /** The request datagram. */
  message: Uint8Array;
  /** How long to wait for a reply after each send, in ms. Default 1000. */
  timeoutMs?: number;
  /** How many times to send again when no reply came. Default 3. */
  retries?: number;
  /** Told about each retry (`no reply within 1 s; sending again (2 of 4)`). */
  log?: (line: string) => void;
}

/**
 * Sends a request datagram and waits for the reply, sending again after
 * each `timeoutMs` without one, `retries` times. Only a datagram from the
 * server's address and port counts as the reply (for a host name, from
 * its port). The socket is bound to the wildcard address of the server's
 * family (`0.0.0.0` or `::`), port 0: it needs `--allow-net=0.0.0.0:0`
 * (or `[::]:0`) besides the server's address, and `--unstable-net`.
 * When no reply comes, rejects with {@linkcode NoReplyError} (a
 * `ConnectError` of kind `no-reply`): `no reply from HOST:PORT after N
 * attempts (T s each)`.
 *
 * @example Against an in-process UDP server that answers "hello"
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { requestDatagram } from "./client.ts";
 *
 * const server = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * const { port } = server.addr as Deno.NetAddr;
 * const answering = server.receive().then(([, source]) =>
 *   server.send(new TextEncoder().encode("hello"), source)
 * );
 * const reply = await requestDatagram({
 *   hostname: "127.0.0.1",
 *   port,
 *   message: new TextEncoder().encode("hi"),
 * });
 * await answering;
 * server.close();
 * assertEquals(new TextDecoder().decode(reply), "hello");
 * ```
 */
export async function requestDatagram(
  options: DatagramRequestOptions,
): Promise<Uint8Array> {
  const { hostname, family, target } = checkConnectHost(
    options.hostname,
    options.port,
  );
  const timeoutMs = options.timeoutMs ?? 1000;
  const attempts = 1 + (options.retries ?? 3);
  const server = { transport: "udp" as const, hostname, port: options.port };
  const wanted = family === "name" ? undefined : canonicalAddress(hostname);
  const local = family === 6 ? "::" : "0.0.0.0";
  notePermission("--unstable-net");
  notePermission("--allow-net", joinHostPort(local, 0), target);
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: local,
    port: 0,
  });
  const buffer = new Uint8Array(65536);
  let receiving: Promise<[Uint8Array, Deno.Addr]> | undefined;
  try {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) {
        options.log?.(
          `no reply within ${
            formatSeconds(timeoutMs)
          }; sending again (${attempt} of ${attempts})`,
        );
      }
      try {
        await socket.send(options.message, server);
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) throw error;
        throw describeConnectFailure(error, target);
      }
      const deadline = Date.now() + timeoutMs;
      while (true) {
        receiving ??= socket.receive(buffer);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const received = await Promise.race([
          receiving,
          new Promise<undefined>((resolve) =>
            timer = setTimeout(
              () => resolve(undefined),
              Math.max(0, deadline - Date.now()),
            )
          ),
        ]).catch((error) => {
          // Where the system reports an ICMP error to the socket.
          receiving = undefined;
          throw describeConnectFailure(error, target);
        }).finally(() => clearTimeout(timer));
        if (!received) break;
        receiving = undefined;
        const [data, source] = received;
        if (
          "hostname" in source && source.port === options.port &&
          (wanted === undefined || canonicalAddress(source.hostname) === wanted)
        ) {
          return data.slice();
        }
      }
    }
  } finally {
    socket.close();
    receiving?.catch(() => {});
  }
  throw new NoReplyError(target, attempts, timeoutMs);
}
