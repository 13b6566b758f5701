/**
 * Helpers for the simple-service tests: UDP exchanges from a chosen source
 * address, a free range of ports for an inetd base, and xinetd's internal
 * services started on high ports as a real peer.
 *
 * @module
 */

import { SIMPLE_SERVICE_PORTS } from "../mod.ts";
import { bindable } from "./_helpers.ts";

/** Where a test datagram comes from and how long to wait for a reply. */
export interface UdpAskOptions {
  /** Server address. Default 127.0.0.1. */
  hostname?: string;
  /** Local address to send from. Default 127.0.0.1. */
  sourceHostname?: string;
  /** Local port to send from. Default 0 (any). */
  sourcePort?: number;
  /** How long to wait for the reply, in ms. Default 2000. */
  timeoutMs?: number;
}

/** Opens a UDP socket for a test (bound where `options` says). */
export function udpSocket(options: UdpAskOptions = {}): Deno.DatagramConn {
  return Deno.listenDatagram({
    transport: "udp",
    hostname: options.sourceHostname ?? "127.0.0.1",
    port: options.sourcePort ?? 0,
  });
}

/** Waits for one datagram on `socket`; `null` after `timeoutMs`. */
export async function receiveOrNull(
  socket: Deno.DatagramConn,
  timeoutMs: number,
): Promise<Uint8Array | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) =>
    timer = setTimeout(() => resolve(null), timeoutMs)
  );
  const receiving = socket.receive().then(([data]) => data);
  try {
    return await Promise.race([receiving, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Counts the datagrams `socket` receives until `windowMs` has passed since
 * the call, or `most` have come: a total window, not a silence between
 * replies (a reply a loaded machine delays is still counted).
 */
export async function countReplies(
  socket: Deno.DatagramConn,
  windowMs: number,
  most = Infinity,
): Promise<number> {
  return (await timeReplies(socket, windowMs, most)).count;
}

/**
 * {@linkcode countReplies}, and when the last reply came
 * (`performance.now()`; the call's start when none came): the end of the
 * time a rate limit had to refill in.
 */
export async function timeReplies(
  socket: Deno.DatagramConn,
  windowMs: number,
  most = Infinity,
): Promise<{ count: number; lastAt: number }> {
  const started = performance.now();
  const deadline = started + windowMs;
  let count = 0;
  let lastAt = started;
  while (count < most) {
    const left = deadline - performance.now();
    if (left <= 0 || !(await receiveOrNull(socket, left))) break;
    count++;
    lastAt = performance.now();
  }
  return { count, lastAt };
}

/**
 * Sends `payload` to `port` and returns the reply, or `null` when none came
 * within the timeout. The socket is closed afterwards.
 */
export async function udpAsk(
  port: number,
  payload: Uint8Array | string = "",
  options: UdpAskOptions = {},
): Promise<Uint8Array | null> {
  const socket = udpSocket(options);
  try {
    await socket.send(
      typeof payload === "string" ? new TextEncoder().encode(payload) : payload,
      { transport: "udp", hostname: options.hostname ?? "127.0.0.1", port },
    );
    return await receiveOrNull(socket, options.timeoutMs ?? 2000);
  } finally {
    socket.close();
  }
}

/** Reads from `conn` until `length` bytes or end of stream. */
export async function readUpTo(
  conn: Deno.Conn,
  length: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const n = await conn.read(out.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return out.subarray(0, filled);
}

/**
 * A base port B such that B + each simple service's port was free on TCP
 * and UDP a moment ago (below the ephemeral range, so clients do not take
 * them meanwhile).
 */
export function freeBase(hostname = "127.0.0.1"): number {
  for (let i = 0; i < 200; i++) {
    const base = 20000 + Math.floor(Math.random() * 12000);
    if (
      Object.values(SIMPLE_SERVICE_PORTS).every((port) =>
        bindable(hostname, base + port)
      )
    ) {
      return base;
    }
  }
  throw new Error("no free base found");
}

/** xinetd running its internal services at `base` + their ports. */
export interface Xinetd extends AsyncDisposable {
  /** The base its services listen at. */
  base: number;
  /** The xinetd process id. */
  pid: number;
}

/**
 * Starts xinetd (as root, in the foreground) with its internal echo,
 * discard, daytime, chargen and time services on TCP and UDP at a free
 * base on 127.0.0.1, under `TZ` (default UTC), and waits until they answer.
 * Disposing kills it by its pid.
 */
export async function startXinetd(tz = "UTC"): Promise<Xinetd> {
  const base = freeBase();
  const dir = await Deno.makeTempDir({ prefix: "simple5-xinetd-" });
  const services = ["echo", "discard", "daytime", "chargen", "time"] as const;
  let config = "defaults\n{\n}\n";
  for (const name of services) {
    for (
      const [socketType, protocol] of [["stream", "tcp"], ["dgram", "udp"]]
    ) {
      config += `service ${name}
{
  type        = INTERNAL UNLISTED
  id          = ${name}-${socketType}
  socket_type = ${socketType}
  protocol    = ${protocol}
  port        = ${base + SIMPLE_SERVICE_PORTS[name]}
  bind        = 127.0.0.1
  wait        = ${socketType === "dgram" ? "yes" : "no"}
  user        = root
}
`;
    }
  }
  await Deno.writeTextFile(`${dir}/xinetd.conf`, config);
  const child = new Deno.Command("xinetd", {
    args: [
      "-dontfork",
      "-f",
      `${dir}/xinetd.conf`,
      "-pidfile",
      `${dir}/xinetd.pid`,
      "-filelog",
      `${dir}/xinetd.log`,
    ],
    env: { TZ: tz },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      Deno.kill(child.pid, "SIGTERM");
    } catch {
      // Exited already.
    }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  };
  // Ready once the last service configured (time over TCP) accepts.
  const deadline = Date.now() + 10_000;
  while (true) {
    try {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: base + SIMPLE_SERVICE_PORTS.time,
      });
      conn.close();
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`xinetd did not start: ${error}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { base, pid: child.pid, [Symbol.asyncDispose]: stop };
}
