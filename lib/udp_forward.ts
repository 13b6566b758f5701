/**
 * Forwarding UDP, as `socat UDP-LISTEN:P,fork UDP:HOST:Q` and nginx's
 * `stream` module do: each client address gets a session, a socket of its
 * own towards the target, so the target's answers go back to the client
 * that asked; a session ends once idle for a while. The protections every
 * UDP server here keeps stay on: no datagram from a source port below 1024
 * is forwarded (loops with echo or chargen, CVE-1999-0103), answers to one
 * client address are rate-limited (amplification with a spoofed source),
 * the number of sessions is bounded, in all and from one source address
 * (so one host's many source ports cannot take them all), a client that
 * sends our answers straight back, round after round (an echo server, a
 * loop), is dropped by the loop guard of `datagram_guard.ts`, and a datagram from one of the
 * forwarder's own session sockets (a target that is the forwarder itself)
 * is dropped.
 *
 * @module
 */

import { unmapIPv4 } from "./address.ts";
import { formatSeconds } from "./units.ts";
import { resolveHost } from "./dial.ts";
import { formatAddr, joinHostPort } from "./endpoint.ts";
import { FloodLog, type Log, stderrLog } from "./log.ts";
import { DatagramMetrics } from "./server_metrics.ts";
import type { AccessPolicy } from "./access.ts";
import { ListenError } from "./bind.ts";
import { LoopGuard, loopRate, SourceRateLimiter } from "./datagram_guard.ts";
import { sourceKey } from "./source_key.ts";
import { DEFAULT_UDP_RATE, type Server } from "./server_options.ts";
import type { PoolTarget, Taken, TargetPool } from "./targets.ts";
import { withoutOsError } from "./os_error.ts";
import { canConnectDatagram, connectDatagram } from "./udp_connect.ts";
import { ffiFlag } from "./libc.ts";

/** How long an idle UDP session lives unless told otherwise, in ms. */
export const DEFAULT_UDP_SESSION_TIMEOUT_MS = 30_000;

/**
 * Sessions at once unless told otherwise: each holds a socket and a
 * receive buffer of {@linkcode MAX_DATAGRAM_BYTES}.
 */
export const DEFAULT_UDP_SESSIONS = 1024;

/**
 * Sessions at once from one source ({@linkcode sourceKey}: an IPv4
 * address, an IPv6 /64) unless told otherwise: a sixteenth of
 * {@linkcode DEFAULT_UDP_SESSIONS}, as the stream servers' per-source
 * default is of theirs, so one host using many source ports cannot hold
 * every session; at least 16 hosts must collude to fill the forwarder.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { DEFAULT_UDP_SESSIONS, DEFAULT_UDP_SESSIONS_PER_SOURCE } from "./udp_forward.ts";
 *
 * assertEquals(DEFAULT_UDP_SESSIONS_PER_SOURCE, DEFAULT_UDP_SESSIONS / 16);
 * ```
 */
export const DEFAULT_UDP_SESSIONS_PER_SOURCE = DEFAULT_UDP_SESSIONS / 16;

/** The largest datagram forwarded (the largest IPv4 UDP payload, 65507, fits). */
export const MAX_DATAGRAM_BYTES = 65_536;

/** Datagrams held per session while its socket is being set up. */
const PENDING_DATAGRAMS = 8;

/** Options for {@linkcode serveDatagramForward}. */
export interface DatagramForwardOptions {
  /** Address to listen on. Default `0.0.0.0`. */
  hostname?: string;
  /** Port to listen on; 0 picks a free one. Default 0. */
  port?: number;
  /** Where each client's datagrams go: a host name or IP, and a port. */
  target: { hostname: string; port: number };
  /** A session idle (no datagram either way) this long ends, in ms. Default 30000. */
  sessionTimeoutMs?: number;
  /** Most sessions at once; datagrams of a new client past that are dropped. Default 1024. */
  maxSessions?: number;
  /**
   * Most sessions at once from one source (an IPv4 address, an IPv6 /64:
   * one host has all its ports, and a whole /64); datagrams of its next
   * client address past that are dropped (logged, counted). 0: no limit.
   * Default {@linkcode DEFAULT_UDP_SESSIONS_PER_SOURCE}.
   */
  maxSessionsPerSource?: number;
  /** Which clients may use it; everyone when absent. */
  access?: AccessPolicy;
  /** Forward datagrams from source ports below 1024 too. Default `false`. */
  allowLowPorts?: boolean;
  /** Answers per second to one client address. Default 100; 0: no limit. */
  udpRatePerSecond?: number;
  /**
   * The loop guard of every datagram server here (`LoopGuard` in
   * `lib/datagram_guard.ts`), on unless `false`: a client whose datagrams
   * are our answers to it coming back with no think time, a few hundred
   * rounds faster than the rate limit lets a client go (an echo server
   * given as the source of a spoofed datagram, with the target another),
   * is a loop, and its datagrams are dropped until it slows down.
   */
  loopGuard?: boolean;
  /** Where log lines go. Default stderr. */
  log?: Log;
  /** Label for log lines (`forward/udp`). */
  label?: string;
  /** Aborting this shuts the forwarder down. */
  signal?: AbortSignal;
  /**
   * Many targets: each session goes to the one the pool picks when it
   * starts (`target` is then not used); no target up drops the session.
   * A target that answers ICMP port unreachable (nothing listens there)
   * counts as a failure for the pool (its `fall`th in a row marks it
   * down), and the session's next datagram goes to another target: the
   * session sockets are connected to their target for that, through libc
   * (FFI access to it; without, only active checks notice, and one line
   * says so).
   */
  pool?: TargetPool;
}

/** One client's session. */
class Session {
  readonly client: Deno.NetAddr;
  readonly peer: string;
  /** Its source, for `maxSessionsPerSource` ({@linkcode sourceKey}). */
  readonly source: string;
  readonly began = performance.now();
  lastActive = performance.now();
  socket?: Deno.DatagramConn;
  /** The target's address, once resolved. */
  target?: Deno.NetAddr;
  /** Datagrams that came before the socket was ready (bounded). */
  pending: Uint8Array[] = [];
  bytesIn = 0;
  bytesOut = 0;
  closed = false;
  /** Where it goes, for its closing line (a pool's pick). */
  targetText?: string;
  /** Tells the pool the session has ended. */
  release?: () => void;
  /** A pool's target for it. */
  taken?: Taken<PoolTarget>;
  /** The targets that refused its datagrams, and why (its closing line). */
  readonly refusedBy: PoolTarget[] = [];
  /** Its target has answered it (once: the pool forgets the target's failures). */
  answered = false;

  constructor(client: Deno.NetAddr) {
    this.client = client;
    this.peer = formatAddr(client);
    this.source = sourceKey(client);
  }
}

function sameHost(a: string, b: string): boolean {
  return unmapIPv4(a) === unmapIPv4(b);
}

function isLoopback(host: string): boolean {
  const bare = unmapIPv4(host);
  return bare === "::1" || bare.startsWith("127.");
}

/**
 * Starts a UDP forwarder (see the module doc): binds before it returns,
 * then forwards each client's datagrams to `options.target` through a
 * socket of that client's session, and the target's answers back to the
 * client. One log line when a session starts (`accepted CLIENT`) and one
 * when it ends (`closed CLIENT (N bytes in, M bytes out) to TARGET, D s,
 * idle for S s`). Needs `--unstable-net`, net permission for the listen
 * address, `0.0.0.0:0` (or `[::]:0`) for the session sockets, the target,
 * and every client an answer goes to (so, in practice, `--allow-net`).
 *
 * @example A session through to a UDP echo socket
 * ```ts
 * import { serveDatagramForward } from "./udp_forward.ts";
 *
 * const echo = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * const echoing = echo.receive().then(([data, from]) => echo.send(data, from));
 * await using forwarder = serveDatagramForward({
 *   hostname: "127.0.0.1",
 *   target: { hostname: "127.0.0.1", port: (echo.addr as Deno.NetAddr).port },
 *   log: () => {},
 * });
 * const client = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * await client.send(new TextEncoder().encode("ping"), forwarder.addr);
 * const [reply] = await client.receive();
 * await echoing;
 * client.close();
 * echo.close();
 * if (new TextDecoder().decode(reply) !== "ping") throw new Error("no echo");
 * ```
 */
export function serveDatagramForward(options: DatagramForwardOptions): Server {
  return new DatagramForwarder(options);
}

class DatagramForwarder implements Server {
  readonly addr: Deno.NetAddr;
  readonly ready: Promise<void> = Promise.resolve();
  readonly finished: Promise<void>;
  readonly socketClosed: Promise<void>;
  readonly #socket: Deno.DatagramConn;
  readonly #options: DatagramForwardOptions;
  readonly #log: Log;
  readonly #prefix: string;
  readonly #target: { hostname: string; port: number };
  readonly #targetText: string;
  readonly #timeoutMs: number;
  readonly #maxSessions: number;
  readonly #perSource: number;
  readonly #rate: SourceRateLimiter;
  /** Absent when it is off. */
  readonly #loopGuard?: LoopGuard;
  readonly #sessions = new Map<string, Session>();
  /** Open sessions by source, for `maxSessionsPerSource`. */
  readonly #bySource = new Map<string, number>();
  /** Local ports of our session sockets, to spot our own datagrams. */
  readonly #ownPorts = new Set<number>();
  /** Counted drops, one flood log per reason (as the datagram servers). */
  readonly #dropped: Record<
    "lowPort" | "loop" | "notReady" | "send" | "stranger" | "rate" | "answer",
    FloodLog
  >;
  readonly #refused: FloodLog;
  readonly #failed: FloodLog;
  /** What `--stats` and SIGUSR2 show. */
  readonly #metrics: DatagramMetrics;
  readonly #sweep: ReturnType<typeof setInterval>;
  readonly #loopDone: Promise<void>;
  /** A pool's session sockets are connected, to hear port unreachable. */
  readonly #connectSessions: boolean;
  #closing = false;
  #resolveFinished!: () => void;
  #resolveSocketClosed!: () => void;
  #stopping?: Promise<void>;

  constructor(options: DatagramForwardOptions) {
    const hostname = options.hostname ?? "0.0.0.0";
    const port = options.port ?? 0;
    try {
      this.#socket = Deno.listenDatagram({ transport: "udp", hostname, port });
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      const address = joinHostPort(hostname, port);
      throw new ListenError(
        error instanceof Deno.errors.AddrInUse
          ? `address ${address} is already in use`
          : `cannot listen on ${address}: ${
            withoutOsError((error as Error).message)
          }`,
        address,
        error,
      );
    }
    this.addr = this.#socket.addr as Deno.NetAddr;
    this.#options = options;
    this.#log = options.log ?? stderrLog;
    this.#prefix = options.label ? `${options.label}: ` : "";
    this.#target = options.target;
    this.#targetText = joinHostPort(
      options.target.hostname,
      options.target.port,
    );
    this.#timeoutMs = options.sessionTimeoutMs ??
      DEFAULT_UDP_SESSION_TIMEOUT_MS;
    this.#maxSessions = options.maxSessions ?? DEFAULT_UDP_SESSIONS;
    this.#perSource = options.maxSessionsPerSource ??
      DEFAULT_UDP_SESSIONS_PER_SOURCE;
    if (!Number.isInteger(this.#perSource) || this.#perSource < 0) {
      throw new RangeError(
        `maxSessionsPerSource must be a whole number, 0 or more: ${options.maxSessionsPerSource}`,
      );
    }
    this.#rate = new SourceRateLimiter(
      options.udpRatePerSecond ?? DEFAULT_UDP_RATE,
    );
    if (options.loopGuard !== false) {
      this.#loopGuard = new LoopGuard(
        loopRate(this.#rate.perSecond, DEFAULT_UDP_RATE),
      );
    }
    const dropped = () => new FloodLog(this.#log, `${this.#prefix}dropped`);
    this.#dropped = {
      lowPort: dropped(),
      loop: dropped(),
      notReady: dropped(),
      send: dropped(),
      stranger: dropped(),
      rate: dropped(),
      answer: dropped(),
    };
    this.#refused = new FloodLog(this.#log, `${this.#prefix}refused`);
    this.#metrics = new DatagramMetrics({
      service: options.label?.replace(/\/udp$/, "") ?? "forward",
      transport: "udp",
    });
    this.#failed = new FloodLog(this.#log, `${this.#prefix}closed`);
    this.#connectSessions = options.pool !== undefined && canConnectDatagram();
    if (options.pool && !this.#connectSessions) {
      this.#log(
        `${this.#prefix}note: a target that answers port unreachable is noticed by active checks only (to notice it from the sessions' datagrams: ${ffiFlag()})`,
      );
    }
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.socketClosed = new Promise((resolve) =>
      this.#resolveSocketClosed = resolve
    );
    // One timer for every session, as the stream servers' idle sweep.
    const tickMs = Math.max(10, Math.min(1000, this.#timeoutMs / 4));
    this.#sweep = setInterval(() => this.#expire(), tickMs);
    this.#loopDone = this.#receiveLoop();
    options.signal?.addEventListener("abort", () => this.shutdown(), {
      once: true,
    });
  }

  async #receiveLoop(): Promise<void> {
    const buffer = new Uint8Array(MAX_DATAGRAM_BYTES);
    while (!this.#closing) {
      let data: Uint8Array;
      let source: Deno.NetAddr;
      try {
        const [received, from] = await this.#socket.receive(buffer);
        data = received;
        source = from as Deno.NetAddr;
      } catch (error) {
        if (this.#closing) break;
        this.#log(`${this.#prefix}receive failed: ${(error as Error).message}`);
        continue;
      }
      this.#metrics.received.value++;
      this.#metrics.bytesIn.value += data.byteLength;
      const peer = formatAddr(source);
      if (source.port < 1024 && !this.#options.allowLowPorts) {
        this.#metrics.dropped["low-port"].value++;
        // CVE-1999-0103: answers to a privileged port (echo, chargen...)
        // can start an endless loop.
        this.#dropped.lowPort.event(
          `datagram from ${peer}: source port below 1024`,
        );
        continue;
      }
      if (
        this.#ownPorts.has(source.port) &&
        (isLoopback(source.hostname) ||
          sameHost(source.hostname, this.addr.hostname))
      ) {
        this.#metrics.dropped.loop.value++;
        this.#dropped.loop.event(
          `datagram from ${peer}: one of this forwarder's own sessions (the target leads back here: loop protection)`,
        );
        continue;
      }
      if (this.#options.access && !this.#options.access.allows(source)) {
        this.#metrics.dropped.access.value++;
        this.#refused.event(`datagram from ${peer}: not allowed`);
        continue;
      }
      if (this.#loopGuard?.isLoop(source, data)) {
        // Forwarded, it would come back as the target's answer, which
        // goes back to the client, and so on.
        this.#dropped.loop.event(
          `datagram from ${peer}: a loop (${
            this.#loopGuard.score(source)
          } answers came back with no think time, faster than ${this.#loopGuard.rate}/s: loop protection)`,
        );
        continue;
      }
      let session = this.#sessions.get(peer);
      if (!session) {
        if (this.#sessions.size >= this.#maxSessions) {
          this.#metrics.dropped.full.value++;
          this.#refused.event(
            `datagram from ${peer}: too many sessions (max ${this.#maxSessions})`,
          );
          continue;
        }
        session = new Session(source);
        const held = this.#bySource.get(session.source) ?? 0;
        if (this.#perSource > 0 && held >= this.#perSource) {
          this.#refused.event(
            `datagram from ${peer}: too many sessions from ${session.source} (max ${this.#perSource} per source)`,
          );
          continue;
        }
        this.#bySource.set(session.source, held + 1);
        this.#sessions.set(peer, session);
        this.#log(`${this.#prefix}accepted ${peer}`);
        this.#open(session);
      }
      session.lastActive = performance.now();
      session.bytesIn += data.byteLength;
      if (!session.socket || !session.target) {
        if (session.pending.length < PENDING_DATAGRAMS) {
          session.pending.push(data.slice());
        } else {
          this.#dropped.notReady.event(
            `datagram from ${peer}: its session is not ready yet`,
          );
        }
        continue;
      }
      await this.#send(session, data);
    }
  }

  async #send(session: Session, data: Uint8Array): Promise<void> {
    const socket = session.socket!;
    try {
      await socket.send(data, session.target!);
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionRefused && session.taken) {
        // An earlier datagram met port unreachable: this one goes on to
        // the next target.
        this.#moveSession(session, socket, data);
      } else if (!session.closed && session.socket === socket) {
        this.#dropped.send.event(
          `datagram from ${session.peer} to ${formatAddr(session.target!)}: ${
            (error as Error).message
          }`,
        );
      }
    }
  }

  /** Resolves the target and opens the session's socket. */
  async #open(session: Session): Promise<void> {
    let where = this.#target;
    if (this.#options.pool) {
      const taken = this.#options.pool.takeSession(
        session.client.hostname,
        new Set(session.refusedBy),
      );
      if (!taken) return this.#close(session, "no target up", true);
      where = taken.target.endpoint as { hostname: string; port: number };
      session.taken = taken;
      session.release = taken.release;
      session.targetText = taken.target.name;
    }
    try {
      // Resolved per session, as a stream forwarder dials per connection:
      // the resolver's first answer (its RFC 6724 choice), as `nc -u`.
      const [address] = await resolveHost(where.hostname);
      const v6 = address.includes(":");
      const socket = Deno.listenDatagram({
        transport: "udp",
        hostname: v6 ? "::" : "0.0.0.0",
        port: 0,
      });
      if (session.closed) {
        socket.close();
        return;
      }
      session.socket = socket;
      session.target = {
        transport: "udp",
        hostname: address,
        port: where.port,
      };
      this.#ownPorts.add((socket.addr as Deno.NetAddr).port);
      if (this.#connectSessions) connectDatagram(socket, session.target);
    } catch (error) {
      this.#close(session, (error as Error).message, true);
      return;
    }
    for (const data of session.pending.splice(0)) {
      await this.#send(session, data);
    }
    this.#answerLoop(session);
  }

  /** Sends the target's answers back to the session's client. */
  async #answerLoop(session: Session): Promise<void> {
    const socket = session.socket!;
    const target = session.target!;
    const buffer = new Uint8Array(MAX_DATAGRAM_BYTES);
    const rateKey = sourceKey(session.client);
    while (!session.closed) {
      let data: Uint8Array;
      let from: Deno.NetAddr;
      try {
        const [received, source] = await socket.receive(buffer);
        data = received;
        from = source as Deno.NetAddr;
      } catch (error) {
        if (session.socket !== socket) return; // moved to another target
        if (error instanceof Deno.errors.ConnectionRefused && session.taken) {
          this.#moveSession(session, socket);
          return;
        }
        if (!session.closed) this.#close(session, (error as Error).message);
        return;
      }
      if (
        from.port !== target.port || !sameHost(from.hostname, target.hostname)
      ) {
        this.#dropped.stranger.event(
          `datagram from ${
            formatAddr(from)
          } to the session of ${session.peer}: not from the target`,
        );
        continue;
      }
      session.lastActive = performance.now();
      if (!session.answered) {
        session.answered = true;
        session.taken?.answered();
      }
      if (!this.#rate.take(rateKey)) {
        this.#metrics.dropped.rate.value++;
        this.#dropped.rate.event(
          `answer to ${session.peer}: over ${this.#rate.perSecond} answers/s`,
        );
        continue;
      }
      try {
        await this.#socket.send(data, session.client);
        this.#loopGuard?.sent(session.client, data, true);
        session.bytesOut += data.byteLength;
        this.#metrics.sent.value++;
        this.#metrics.bytesOut.value += data.byteLength;
      } catch (error) {
        if (this.#closing) return;
        this.#dropped.answer.event(
          `answer to ${session.peer}: ${(error as Error).message}`,
        );
      }
    }
  }

  /**
   * The session's target answered port unreachable (on `socket`, unless
   * the session has moved since): a failure for the pool, and the session
   * goes on to another target, `refused` (the datagram whose send found
   * it out) first.
   */
  #moveSession(
    session: Session,
    socket: Deno.DatagramConn,
    refused?: Uint8Array,
  ): void {
    if (session.closed || session.socket !== socket || !session.taken) return;
    const { target, release } = session.taken;
    this.#options.pool!.failed(target, "port unreachable", "datagram");
    session.refusedBy.push(target);
    release();
    session.taken = session.release = undefined;
    session.answered = false;
    this.#ownPorts.delete((socket.addr as Deno.NetAddr).port);
    session.socket = session.target = undefined;
    try {
      socket.close();
    } catch {
      // Already closed.
    }
    if (refused) session.pending.unshift(refused.slice());
    this.#open(session);
  }

  #expire(): void {
    const now = performance.now();
    for (const session of this.#sessions.values()) {
      if (now - session.lastActive >= this.#timeoutMs) {
        this.#close(session, `idle for ${formatSeconds(this.#timeoutMs)}`);
      }
    }
  }

  /** Ends a session with its one closing line (counted when it failed). */
  #close(session: Session, why: string, failed = false): void {
    if (session.closed) return;
    session.closed = true;
    session.release?.();
    this.#sessions.delete(session.peer);
    const held = this.#bySource.get(session.source)! - 1;
    if (held > 0) this.#bySource.set(session.source, held);
    else this.#bySource.delete(session.source);
    if (session.socket) {
      this.#ownPorts.delete((session.socket.addr as Deno.NetAddr).port);
      try {
        session.socket.close();
      } catch {
        // Already closed.
      }
    }
    // A session moved on, as a retried client's line: `to B (after A:
    // port unreachable)`.
    const after = session.refusedBy.length === 0
      ? ""
      : ` (after ${
        session.refusedBy.map((t) => `${t.name}: port unreachable`).join("; ")
      })`;
    const line =
      `${session.peer} (${session.bytesIn} bytes in, ${session.bytesOut} bytes out) to ${
        session.target
          ? formatAddr(session.target)
          : session.targetText ?? this.#targetText
      }${after}, ${formatSeconds(performance.now() - session.began)}, ${why}`;
    if (failed) this.#failed.event(line);
    else this.#log(`${this.#prefix}closed ${line}`);
  }

  shutdown(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.finished;
  }

  async #stop(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#sweep);
    try {
      this.#socket.close();
    } catch {
      // Already closed.
    }
    // A receive() still pending holds the socket until it has been
    // cancelled: closed for real once the loop has seen that.
    await this.#loopDone;
    this.#resolveSocketClosed();
    // A datagram has no "in flight" to wait for: sessions end at once.
    for (const session of [...this.#sessions.values()]) {
      this.#close(session, "shutdown");
    }
    for (const log of Object.values(this.#dropped)) log.flush();
    this.#refused.flush();
    this.#failed.flush();
    this.#resolveFinished();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}
