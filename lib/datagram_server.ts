/**
 * The datagram server (UDP, Unix datagram sockets): one datagram, one
 * answer, behind the guards that keep it from being turned against others
 * or itself: no replies to low or service source ports (CVE-1999-0103), an
 * access list, a reply rate per source and the loop guard of
 * `datagram_guard.ts`. Stopping lets the datagram in hand be answered.
 *
 * @module
 */

import type { AccessPolicy } from "./access.ts";
import { bindDatagram, type Binding } from "./bind.ts";
import {
  ReplyMemory,
  serviceReplyKind,
  sourceKey,
  SourceRateLimiter,
} from "./datagram_guard.ts";
import { formatAddr } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { closeQuietly } from "./io.ts";
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
  /** For the loop guard; absent when it is off. */
  readonly #replies?: ReplyMemory;
  readonly #droppedLowPort = new FloodLog(this.log, `${this.prefix}dropped`);
  readonly #droppedRate = new FloodLog(this.log, `${this.prefix}dropped`);
  readonly #droppedLoop = new FloodLog(this.log, `${this.prefix}dropped`);
  readonly #refusedAccess = new FloodLog(this.log, `${this.prefix}refused`);
  #loopDone: Promise<void> = Promise.resolve();
  /** Settles once the datagram being handled has been answered. */
  #inFlight?: Promise<void>;
  /** What `--stats` and SIGUSR1 show. */
  readonly #metrics: DatagramMetrics;

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
    if (options.loopGuard !== false) this.#replies = new ReplyMemory();
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
      let data: Uint8Array;
      let source: Deno.Addr;
      try {
        [data, source] = await socket.receive(buffer);
      } catch (error) {
        if (this.closing) break;
        this.log(`${this.prefix}receive failed: ${(error as Error).message}`);
        continue;
      }
      this.#metrics.received.value++;
      this.#metrics.bytesIn.value += data.byteLength;
      const peer = formatAddr(source);
      if (this.#drops(source, peer, data)) continue;
      let answered!: () => void;
      this.#inFlight = new Promise((resolve) => answered = resolve);
      try {
        await this.#answer(socket, data, source, peer);
      } catch (error) {
        if (this.closing) break;
        this.log(
          `${this.prefix}reply to ${peer} failed: ${(error as Error).message}`,
        );
      } finally {
        this.#inFlight = undefined;
        answered();
      }
    }
  }

  /**
   * Whether a datagram is dropped before its handler sees it: from a port
   * that must not be answered, not allowed, from an unbound Unix socket,
   * or our own reply bounced back (each logged, counted).
   */
  #drops(source: Deno.Addr, peer: string, data: Uint8Array): boolean {
    if ("port" in source && source.port < 1024 && !this.#allowLowPorts) {
      // CVE-1999-0103: a reply to a privileged port (echo, chargen...)
      // can start an endless loop between two services.
      this.#droppedLowPort.event(
        `datagram from ${peer}: source port below 1024`,
      );
      this.#metrics.dropped["low-port"].value++;
      return true;
    }
    if ("port" in source && this.#dropSourcePorts.has(source.port)) {
      this.#droppedLowPort.event(
        `datagram from ${peer}: source port is a service port (loop protection)`,
      );
      this.#metrics.dropped["low-port"].value++;
      return true;
    }
    if (this.#access && !this.#access.allows(source)) {
      this.#refusedAccess.event(`datagram from ${peer}: not allowed`);
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
    if (this.#replies?.bouncedBack(peer, data)) {
      // Our own reply, back from a server that answers anything: answering
      // it would start a loop (two echo servers: forever).
      this.#droppedLoop.event(
        `datagram from ${peer}: the reply just sent to it, bounced back (loop protection)`,
      );
      this.#metrics.dropped.loop.value++;
      return true;
    }
    return false;
  }

  /**
   * Runs the handler and sends its reply, unless the loop guard or the
   * rate limit holds it back (logged, counted).
   */
  async #answer(
    socket: Deno.DatagramConn,
    data: Uint8Array,
    source: Deno.Addr,
    peer: string,
  ): Promise<void> {
    const reply = await this.#handler(data, source);
    if (!reply) return;
    const kind = this.#replies && !sameBytes(reply, data)
      ? serviceReplyKind(data)
      : undefined;
    if (kind) {
      // A service whose reply ignores the request, asked by another
      // such service's reply: the two would answer each other forever.
      this.#droppedLoop.event(
        `datagram from ${peer}: ${kind}, another service's reply (loop protection)`,
      );
      this.#metrics.dropped.loop.value++;
      return;
    }
    const from = sourceKey(source);
    if (!this.#rate.take(from)) {
      this.#droppedRate.event(
        `reply to ${peer}: over ${this.#rate.perSecond} replies/s to ${
          escapeControlChars(from)
        }`,
      );
      this.#metrics.dropped.rate.value++;
      return;
    }
    await socket.send(reply, source);
    this.#metrics.sent.value++;
    this.#metrics.bytesOut.value += reply.byteLength;
    this.#replies?.sent(peer, reply);
  }

  protected async stop(gracePeriodMs: number): Promise<void> {
    // A datagram being answered (a handler may even call `shutdown()`, as
    // `--once` does) gets its reply before the socket closes, within the
    // grace period, as stream connections in flight do (never longer than
    // the server's own: a reply is no long-lived connection).
    if (this.#inFlight) {
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#inFlight,
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
    await this.#loopDone;
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

/**
 * `@std/bytes`' `equals`, which lib/ cannot import: `deno install` and
 * `deno compile` run the scripts without deno.json's import map.
 */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
