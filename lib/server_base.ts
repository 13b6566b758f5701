/**
 * What the stream and the datagram server share: the `Server` face
 * (`ready`, `finished`, `shutdown()`, `[Symbol.asyncDispose]`), the log and
 * its label, the grace period, and the stop sequence that runs once,
 * whoever asks (a signal, `shutdown()`, a disposal).
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";
import { type Log, stderrLog } from "./log.ts";
import {
  DEFAULT_GRACE_MS,
  type Server,
  type ServerOptions,
  type ShutdownOptions,
} from "./server_options.ts";

/** Shared by both kinds of server: state, logging and the stop sequence. */
export abstract class BaseServer implements Server {
  readonly ready: Promise<void>;
  readonly finished: Promise<void>;
  readonly socketClosed: Promise<void>;
  protected readonly log: Log;
  protected readonly prefix: string;
  protected readonly gracePeriodMs: number;
  protected closing = false;
  #resolveFinished!: () => void;
  #resolveSocketClosed!: () => void;
  #shutdownStarted = false;

  constructor(options: ServerOptions, ready: Promise<void>) {
    this.log = options.log ?? stderrLog;
    // A label may come from a file (inetd.conf's service names).
    this.prefix = options.label ? `${escapeControlChars(options.label)}: ` : "";
    this.gracePeriodMs = options.gracePeriodMs ?? DEFAULT_GRACE_MS;
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    this.socketClosed = new Promise((resolve) =>
      this.#resolveSocketClosed = resolve
    );
    this.ready = ready;
    // A rejected `ready` also settles `finished`; a caller that never awaits
    // `ready` must not crash on an unhandled rejection.
    ready.catch(() => {
      this.closing = true;
      this.#resolveSocketClosed();
      this.#resolveFinished();
    });
    options.signal?.addEventListener("abort", () => this.shutdown(), {
      once: true,
    });
  }

  abstract get addr(): Deno.Addr;

  /**
   * Closes the socket and drains, giving connections in flight
   * `gracePeriodMs` (maybe `Infinity`); resolves when all is closed. Calls
   * {@linkcode BaseServer.socketClosedNow} once the socket is closed.
   */
  protected abstract stop(gracePeriodMs: number): Promise<void>;

  /**
   * For `stop()`: the socket is closed now, nothing pending on it any
   * more (settles `socketClosed`, which `stop()` ending settles too).
   */
  protected socketClosedNow(): void {
    this.#resolveSocketClosed();
  }

  /**
   * A shutdown under way was asked again with a shorter grace period:
   * connections still in flight get `gracePeriodMs` from now.
   */
  protected shortenGrace(_gracePeriodMs: number): void {}

  #stopGraceMs = Infinity;

  shutdown(options: ShutdownOptions = {}): Promise<void> {
    const graceMs = options.gracePeriodMs ?? this.gracePeriodMs;
    if (!this.#shutdownStarted) {
      this.#shutdownStarted = true;
      this.closing = true;
      this.#stopGraceMs = graceMs;
      this.ready.then(() => this.stop(graceMs), () => {}).finally(() => {
        this.#resolveSocketClosed();
        this.#resolveFinished();
      });
    } else if (graceMs < this.#stopGraceMs) {
      this.#stopGraceMs = graceMs;
      this.shortenGrace(graceMs);
    }
    return this.finished;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}
