/**
 * The datagram server (UDP, Unix datagram sockets): one datagram, one
 * answer, behind the guards that keep it from being turned against others
 * or itself: no replies to low or service source ports (CVE-1999-0103), an
 * access list, a reply rate per source and the loop guard of
 * `datagram_guard.ts` (a source whose datagrams are our replies coming
 * back with no think time, faster than the rate limit lets a client go,
 * for a few hundred round trips: never a datagram's bytes alone).
 * Stopping lets the datagram in hand be answered.
 *
 * @module
 */

import type { AccessPolicy } from "./access.ts";
import { bindDatagram, type Binding } from "./bind.ts";
import { LoopGuard, loopRate, SourceRateLimiter } from "./datagram_guard.ts";
import { sourceKey } from "./source_key.ts";
import { formatAddr } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { closeQuietly, sameBytes } from "./io.ts";
import { FloodLog } from "./log.ts";
import { BaseServer } from "./server_base.ts";
import { DatagramMetrics, serviceLabel } from "./server_metrics.ts";
import {
  type DatagramHandler,
  DEFAULT_UDP_RATE,
  type ServerOptions,
  type Service,
} from "./server_options.ts";
import { socketFileOwner } from "./unix.ts";

/** A server of datagrams: UDP or a Unix datagram socket. */
export class DatagramServer extends BaseServer {
  #socket?: Deno.DatagramConn;
  readonly #handler: DatagramHandler;
  readonly #binding: Binding<Deno.DatagramConn>;
  readonly #allowLowPorts: boolean;
  readonly #dropSourcePorts: ReadonlySet<number>;
  readonly #access?: AccessPolicy;
  readonly #rate: SourceRateLimiter;
  /** Absent when it is off. */
  readonly #loopGuard?: LoopGuard;
  /** What `--stats` and the SIGUSR2 dump show. */
  readonly #metrics: DatagramMetrics;
  readonly #droppedLowPort = new FloodLog(this.log, `${this.prefix}dropped`);
  readonly #droppedRate = new FloodLog(this.log, `${this.prefix}dropped`);
  readonly #droppedLoop = new FloodLog(this.log, `${this.prefix}dropped`);
  readonly #refusedAccess = new FloodLog(this.log, `${this.prefix}refused`);
  #loopDone: Promise<void> = Promise.resolve();
  /** Whether a datagram is being answered (its handler, its reply). */
  #answering = false;
  /** Called once it has been, while `stop()` waits for that. */
  #answered?: () => void;

  constructor(
    service: Service,
    handler: DatagramHandler,
    transport: "udp" | "unixpacket",
    options: ServerOptions,
  ) {
    const binding = bindDatagram(service, transport, options);
    super(options, binding.ready);
    this.#binding = binding;
    this.#handler = handler;
    this.#allowLowPorts = options.allowLowPorts ?? false;
    this.#dropSourcePorts = new Set(options.dropSourcePorts ?? []);
    this.#access = options.access;
    this.#rate = new SourceRateLimiter(
      options.udpRatePerSecond ?? DEFAULT_UDP_RATE,
    );
    if (options.loopGuard !== false) {
      this.#loopGuard = new LoopGuard(
        loopRate(this.#rate.perSecond, DEFAULT_UDP_RATE),
      );
    }
    this.#metrics = new DatagramMetrics({
      service: serviceLabel(service.name, transport, options.label),
      transport,
    });
    const start = (s: Deno.DatagramConn) => {
      this.#socket = s;
      if (this.closing) s.close();
      else this.#loopDone = this.#receiveLoop(s);
    };
    const socket = binding.socket();
    if (socket) start(socket);
    else this.ready.then(() => start(binding.socket()!), () => {});
  }

  get addr(): Deno.Addr {
    return this.#binding.addr;
  }

  async #receiveLoop(socket: Deno.DatagramConn): Promise<void> {
    const buffer = new Uint8Array(65536);
    while (!this.closing) {
      let received: [Uint8Array, Deno.Addr];
      try {
        received = await socket.receive(buffer);
      } catch (error) {
        if (this.closing) break;
        this.log(`${this.prefix}receive failed: ${(error as Error).message}`);
        continue;
      }
      const data = received[0];
      const source = received[1];
      this.#metrics.received.value++;
      this.#metrics.bytesIn.value += data.byteLength;
      this.#answering = true;
      try {
        // The synchronous part in a method of its own, which the engine
        // optimizes (this loop, resumed after each await, runs unoptimized).
        const answer = this.#answer(data, source);
        const reply = answer instanceof Promise
          ? await this.#settle(answer, source)
          : answer;
        if (reply) {
          // Whether the reply is the request itself (an echo): then only
          // the same bytes coming back count as a loop's round.
          const echoed = reply === data || sameBytes(reply, data);
          await socket.send(reply, source);
          this.#metrics.sent.value++;
          this.#metrics.bytesOut.value += reply.byteLength;
          this.#loopGuard?.sent(source, reply, echoed);
        }
      } catch (error) {
        if (this.closing) break;
        this.log(
          `${this.prefix}reply to ${formatAddr(source)} failed: ${
            (error as Error).message
          }`,
        );
      } finally {
        this.#answering = false;
        this.#answered?.();
      }
    }
  }

  /**
   * A datagram's reply, unless it is dropped (see #drops), its handler
   * has none or the rate limit holds it back: `null` then; a promise when
   * the handler returns one (see #settle).
   */
  #answer(
    data: Uint8Array,
    source: Deno.Addr,
  ): Uint8Array | Promise<Uint8Array | null | undefined> | null {
    if (this.#drops(source, data)) return null;
    const reply = this.#handler(data, source);
    if (reply instanceof Promise) return reply;
    return reply && this.#mayReply(source) ? reply : null;
  }

  /** An asynchronous handler's reply, if the rate limit lets it go. */
  async #settle(
    answer: Promise<Uint8Array | null | undefined>,
    source: Deno.Addr,
  ): Promise<Uint8Array | null> {
    const reply = await answer;
    return reply && this.#mayReply(source) ? reply : null;
  }

  /**
   * Whether a datagram is dropped before its handler sees it (its source
   * formatted only for a log line: no string is built a datagram): from a port
   * that must not be answered, not allowed, from an unbound Unix socket,
   * or from a peer the loop guard takes for a loop (each logged, counted).
   */
  #drops(source: Deno.Addr, data: Uint8Array): boolean {
    const port = (source as Deno.NetAddr).port;
    if (port < 1024 && !this.#allowLowPorts) {
      // CVE-1999-0103: a reply to a privileged port (echo, chargen...)
      // can start an endless loop between two services.
      this.#droppedLowPort.event(
        `datagram from ${formatAddr(source)}: source port below 1024`,
      );
      this.#metrics.dropped["low-port"].value++;
      return true;
    }
    if (port !== undefined && this.#dropSourcePorts.has(port)) {
      this.#droppedLowPort.event(
        `datagram from ${
          formatAddr(source)
        }: source port is a service port (loop protection)`,
      );
      this.#metrics.dropped["low-port"].value++;
      return true;
    }
    if (this.#access && !this.#access.allows(source)) {
      this.#refusedAccess.event(
        `datagram from ${formatAddr(source)}: not allowed`,
      );
      this.#metrics.dropped.access.value++;
      return true;
    }
    if ("path" in source && !source.path) {
      this.#droppedRate.event(
        `datagram from an unbound Unix socket: no address to reply to`,
      );
      this.#metrics.dropped.unbound.value++;
      return true;
    }
    if (this.#loopGuard?.isLoop(source, data)) {
      // Answering would keep a loop between two servers going (two echo
      // servers: forever, with no rate limit).
      this.#droppedLoop.event(
        `datagram from ${formatAddr(source)}: a loop (${
          this.#loopGuard.score(source)
        } replies came back with no think time, faster than ${this.#loopGuard.rate}/s: loop protection)`,
      );
      this.#metrics.dropped.loop.value++;
      return true;
    }
    return false;
  }

  /** Whether the rate limit lets a reply go to `source` (a drop is logged, counted). */
  #mayReply(source: Deno.Addr): boolean {
    if (this.#rate.perSecond <= 0) return true;
    const from = sourceKey(source);
    if (this.#rate.take(from)) return true;
    this.#droppedRate.event(
      `reply to ${
        formatAddr(source)
      }: over ${this.#rate.perSecond} replies/s to ${escapeControlChars(from)}`,
    );
    this.#metrics.dropped.rate.value++;
    return false;
  }

  protected async stop(gracePeriodMs: number): Promise<void> {
    // A datagram being answered (a handler may even call `shutdown()`, as
    // `--once` does) gets its reply before the socket closes, within the
    // grace period, as stream connections in flight do (never longer than
    // the server's own: a reply is no long-lived connection).
    if (this.#answering) {
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#answered = resolve),
        new Promise((resolve) =>
          graceTimer = setTimeout(
            resolve,
            Math.min(gracePeriodMs, this.gracePeriodMs),
          )
        ),
      ]);
      clearTimeout(graceTimer);
    }
    if (this.#socket) closeQuietly(this.#socket);
    // A receive() still pending holds the socket until it has been
    // cancelled: closed for real once the loop has seen that.
    await this.#loopDone;
    this.socketClosedNow();
    const addr = this.addr;
    if ("path" in addr) {
      // Remove only the socket this server created: whatever replaced it
      // meanwhile (a file, another server's socket) is not ours to delete.
      if (socketFileOwner(addr.path, this.#binding.inode()) === "ours") {
        try {
          Deno.removeSync(addr.path);
        } catch {
          // Gone meanwhile.
        }
      }
    }
    this.#droppedLowPort.flush();
    this.#droppedRate.flush();
    this.#droppedLoop.flush();
    this.#refusedAccess.flush();
  }
}
