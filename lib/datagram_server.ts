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
import { bind, unixPath } from "./bind.ts";
import {
  ReplyMemory,
  serviceReplyKind,
  sourceKey,
  SourceRateLimiter,
} from "./datagram_guard.ts";
import { formatAddr } from "./endpoint.ts";
import { FloodLog } from "./log.ts";
import { BaseServer } from "./server_base.ts";
import {
  type DatagramHandler,
  DEFAULT_UDP_RATE,
  type ServerOptions,
  type Service,
} from "./server_options.ts";
import { createUnixSocket, prepareUnixPath, socketFileOwner } from "./unix.ts";

/** A server of datagrams: UDP or a Unix datagram socket. */
export class DatagramServer extends BaseServer {
  #socket?: Deno.DatagramConn;
  readonly #handler: DatagramHandler;
  readonly #allowLowPorts: boolean;
  readonly #dropSourcePorts: ReadonlySet<number>;
  readonly #access?: AccessPolicy;
  readonly #rate: SourceRateLimiter;
  /** For the loop guard; absent when it is off. */
  readonly #replies?: ReplyMemory;
  readonly #droppedLowPort: FloodLog;
  readonly #droppedRate: FloodLog;
  readonly #droppedLoop: FloodLog;
  readonly #refusedAccess: FloodLog;
  readonly #addr: Deno.Addr;
  /** The inode of the socket file this server created, once bound. */
  readonly #socketFile: () => number | undefined;
  #loopDone: Promise<void> = Promise.resolve();
  /** Settles once the datagram being handled has been answered. */
  #inFlight?: Promise<void>;

  constructor(
    service: Service,
    handler: DatagramHandler,
    transport: "udp" | "unixpacket",
    options: ServerOptions,
  ) {
    let socket: Deno.DatagramConn | undefined;
    let socketFile: number | undefined;
    let ready: Promise<void>;
    let addr: Deno.Addr;
    if (transport === "udp") {
      const hostname = options.hostname ?? service.defaultHostname ??
        "0.0.0.0";
      const port = options.port ?? service.defaultPort;
      socket = bind(
        () => Deno.listenDatagram({ transport: "udp", hostname, port }),
        hostname,
        port,
      );
      addr = socket.addr;
      ready = Promise.resolve();
    } else {
      const path = unixPath(transport, options);
      addr = { transport: "unixpacket", path };
      ready = prepareUnixPath(path).then(() => {
        socket = bind(
          () =>
            createUnixSocket(
              path,
              () => Deno.listenDatagram({ transport: "unixpacket", path }),
              options.mode,
            ),
          path,
        );
        socketFile = Deno.lstatSync(path).ino ?? undefined;
      });
    }
    super(options, ready);
    this.#addr = addr;
    this.#socketFile = () => socketFile;
    this.#handler = handler;
    this.#allowLowPorts = options.allowLowPorts ?? false;
    this.#dropSourcePorts = new Set(options.dropSourcePorts ?? []);
    this.#access = options.access;
    this.#rate = new SourceRateLimiter(
      options.udpRatePerSecond ?? DEFAULT_UDP_RATE,
    );
    this.#droppedLowPort = new FloodLog(this.log, `${this.prefix}dropped`);
    this.#droppedRate = new FloodLog(this.log, `${this.prefix}dropped`);
    if (options.loopGuard !== false) this.#replies = new ReplyMemory();
    this.#droppedLoop = new FloodLog(this.log, `${this.prefix}dropped`);
    this.#refusedAccess = new FloodLog(this.log, `${this.prefix}refused`);
    const start = (s: Deno.DatagramConn) => {
      this.#socket = s;
      if (this.closing) s.close();
      else this.#loopDone = this.#receiveLoop(s);
    };
    if (socket) start(socket);
    else ready.then(() => start(socket!), () => {});
  }

  get addr(): Deno.Addr {
    return this.#addr;
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
      const peer = formatAddr(source);
      if ("port" in source && source.port < 1024 && !this.#allowLowPorts) {
        // CVE-1999-0103: a reply to a privileged port (echo, chargen...)
        // can start an endless loop between two services.
        this.#droppedLowPort.event(
          `datagram from ${peer}: source port below 1024`,
        );
        continue;
      }
      if ("port" in source && this.#dropSourcePorts.has(source.port)) {
        this.#droppedLowPort.event(
          `datagram from ${peer}: source port is a service port (loop protection)`,
        );
        continue;
      }
      if (this.#access && !this.#access.allows(source)) {
        this.#refusedAccess.event(`datagram from ${peer}: not allowed`);
        continue;
      }
      if ("path" in source && !source.path) {
        this.#droppedRate.event(
          `datagram from an unbound Unix socket: no address to reply to`,
        );
        continue;
      }
      if (this.#replies?.bouncedBack(peer, data)) {
        // Our own reply, back from a server that answers anything: answering
        // it would start a loop (two echo servers: forever).
        this.#droppedLoop.event(
          `datagram from ${peer}: the reply just sent to it, bounced back (loop protection)`,
        );
        continue;
      }
      let answered!: () => void;
      this.#inFlight = new Promise((resolve) => answered = resolve);
      try {
        const reply = await this.#handler(data, source);
        if (!reply) continue;
        const kind = this.#replies && !sameBytes(reply, data)
          ? serviceReplyKind(data)
          : undefined;
        if (kind) {
          // A service whose reply ignores the request, asked by another
          // such service's reply: the two would answer each other forever.
          this.#droppedLoop.event(
            `datagram from ${peer}: ${kind}, another service's reply (loop protection)`,
          );
          continue;
        }
        const from = sourceKey(source);
        if (!this.#rate.take(from)) {
          this.#droppedRate.event(
            `reply to ${peer}: over ${this.#rate.perSecond} replies/s to ${from}`,
          );
          continue;
        }
        await socket.send(reply, source);
        this.#replies?.sent(peer, reply);
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

  protected async stop(): Promise<void> {
    // A datagram being answered (a handler may even call `shutdown()`, as
    // `--once` does) gets its reply before the socket closes, within the
    // grace period, as stream connections in flight do.
    if (this.#inFlight) {
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#inFlight,
        new Promise((resolve) =>
          graceTimer = setTimeout(resolve, this.gracePeriodMs)
        ),
      ]);
      clearTimeout(graceTimer);
    }
    try {
      this.#socket?.close();
    } catch {
      // Already closed.
    }
    await this.#loopDone;
    if ("path" in this.#addr) {
      // Remove only the socket this server created: whatever replaced it
      // meanwhile (a file, another server's socket) is not ours to delete.
      if (socketFileOwner(this.#addr.path, this.#socketFile()) === "ours") {
        try {
          Deno.removeSync(this.#addr.path);
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
