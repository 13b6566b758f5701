/**
 * The WebSocket bridge (websockify's job): `forward.ts ws://0.0.0.0:8080/PATH
 * tcp://127.0.0.1:5900` serves WebSocket clients with `Deno.serve` and
 * `Deno.upgradeWebSocket` and joins each to a connection of its own to the
 * target (`joinWebSocket`), bytes both ways. Before the upgrade, each
 * request goes through what the stream server judges a connection by:
 * the access list (403), then the admission pipeline's per-source and
 * server limits (503, `admission.ts`), plus the `Origin` allow-list (403:
 * a page on another site must not reach a private TCP service through
 * its visitor's browser) and the path (404). The target is dialled before
 * the upgrade too, so a target that is down is a 502 the client can read,
 * not an open socket that closes at once.
 *
 * Frames: binary by default (`framing: "text"` for text frames); a client
 * that offers the `binary` subprotocol gets it, and one that offers only
 * `base64` (old websockify clients, noVNC's choice) gets base64 text
 * frames, as websockify does. Pings go out every half `pingTimeoutMs` and
 * a client that has not answered within it is closed (1001); a message
 * larger than `maxMessageBytes` closes it (1009). Each client logs one
 * line when upgraded and one when it ends, with the close code and reason:
 * `closed 127.0.0.1:41234 (5 bytes in, 5 bytes out) to 127.0.0.1:15000,
 * 0.004 s, client closed first (1000 bye)`.
 *
 * With `webRoot`, other requests get the files under it
 * (`static_files.ts`), so a page and its socket come from one origin.
 *
 * @module
 */

import type { AccessPolicy } from "./access.ts";
import { Admission, isRefusal, type RefusalReason } from "./admission.ts";
import { formatSeconds } from "./units.ts";
import { formatAddr } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import {
  dialForClient,
  type DialledTarget,
  type ForwardPlan,
} from "./forward.ts";
import { FloodLog } from "./log.ts";
import { withoutOsError } from "./os_error.ts";
import { BaseServer } from "./server_base.ts";
import {
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_PER_SOURCE,
  type Server,
  type ServerOptions,
} from "./server_options.ts";
import { serveStaticFile } from "./static_files.ts";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  joinWebSocket,
  type WebSocketFraming,
} from "./websocket_join.ts";

/** The default {@linkcode WebSocketListenOptions.pingTimeoutMs}: 30 s, Deno's own. */
export const DEFAULT_PING_TIMEOUT_MS = 30_000;

/** What makes a listener a WebSocket bridge. */
export interface WebSocketListenOptions {
  /** Only upgrades to this path (`/vnc`); any path when absent or `/`. */
  path?: string;
  /**
   * The `Origin` values allowed (`https://example.com`, exactly as
   * browsers send them); any request, with an Origin or without, when
   * absent. Anything else is refused with 403 before the upgrade.
   */
  origins?: readonly string[];
  /** The frames a client that asks for no subprotocol gets. Default `binary`. */
  framing?: "binary" | "text";
  /**
   * Largest message from a client, in bytes; a larger one closes it
   * (1009).
   *
   * @default {@linkcode DEFAULT_MAX_MESSAGE_BYTES}
   */
  maxMessageBytes?: number;
  /**
   * A client that has not answered a ping within this long is closed
   * (a ping goes out every half of it); 0: no pings. Whole seconds.
   *
   * @default {@linkcode DEFAULT_PING_TIMEOUT_MS}
   */
  pingTimeoutMs?: number;
  /** Serve the files under this folder to requests that are not upgrades. */
  webRoot?: string;
}

/** A client being bridged: its socket, its target, when it ends. */
interface Bridged {
  socket: WebSocket;
  target: DialledTarget;
  done: Promise<void>;
}

/**
 * The subprotocol and framing for a client that offers `offered`
 * (`Sec-WebSocket-Protocol`), websockify's choice: `binary` if offered,
 * else `base64` if offered, else none and `fallback`.
 */
function chooseFraming(
  offered: string | null,
  fallback: WebSocketFraming,
): { protocol?: string; framing: WebSocketFraming } {
  const protocols = (offered ?? "").split(",").map((p) => p.trim());
  if (protocols.includes("binary")) {
    return { protocol: "binary", framing: "binary" };
  }
  if (protocols.includes("base64")) {
    return { protocol: "base64", framing: "base64" };
  }
  return { framing: fallback };
}

function plainResponse(
  status: number,
  text: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(`${text}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

const REFUSAL_STATUS: Record<RefusalReason, number> = {
  access: 403,
  "per-source": 503,
  full: 503,
  rate: 429,
};

/** The bridge: a `Deno.serve` server and the clients it joined to targets. */
class WebSocketBridge extends BaseServer {
  readonly #http: Deno.HttpServer<Deno.NetAddr>;
  readonly #plan: ForwardPlan;
  readonly #websocket: WebSocketListenOptions;
  readonly #access?: AccessPolicy;
  readonly #admission: Admission;
  readonly #bridged = new Set<Bridged>();
  /** Upgrades under way (the target being dialled): they hold a slot. */
  #opening = 0;
  readonly #refused = new FloodLog(this.log, `${this.prefix}refused`);

  constructor(
    options: ServerOptions,
    websocket: WebSocketListenOptions,
    plan: ForwardPlan,
  ) {
    super(options, Promise.resolve());
    this.#plan = plan;
    this.#websocket = websocket;
    this.#access = options.access;
    this.#admission = new Admission({
      access: options.access,
      perSource: options.perSource ?? DEFAULT_PER_SOURCE,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      open: () => this.#bridged.size + this.#opening,
    });
    this.#http = Deno.serve({
      hostname: options.hostname ?? "0.0.0.0",
      port: options.port ?? 0,
      ...(options.tls && { cert: options.tls.cert, key: options.tls.key }),
      onListen: () => {},
      onError: (error) => {
        this.log(
          `${this.prefix}error: ${
            escapeControlChars(withoutOsError((error as Error).message))
          }`,
        );
        return plainResponse(500, "internal error");
      },
    }, (request, info) => this.#request(request, info.remoteAddr));
  }

  get addr(): Deno.Addr {
    return this.#http.addr;
  }

  async #request(request: Request, client: Deno.NetAddr): Promise<Response> {
    const peer = formatAddr(client);
    if (this.#access && !this.#access.allows(client)) {
      this.#refused.event(`${peer}: not allowed`);
      return plainResponse(403, "forbidden");
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      if (this.#websocket.webRoot !== undefined) {
        return await serveStaticFile(this.#websocket.webRoot, request);
      }
      return plainResponse(426, "this is a WebSocket endpoint", {
        upgrade: "websocket",
      });
    }
    if (!request.headers.has("sec-websocket-key")) {
      this.#refused.event(`${peer}: not a WebSocket upgrade (no key)`);
      return plainResponse(400, "bad WebSocket upgrade");
    }
    const url = new URL(request.url);
    const path = this.#websocket.path;
    if (path !== undefined && path !== "/" && url.pathname !== path) {
      this.#refused.event(
        `${peer}: path ${escapeControlChars(url.pathname)} is not ${path}`,
      );
      return plainResponse(404, "not found");
    }
    const origin = request.headers.get("origin");
    const origins = this.#websocket.origins;
    if (
      origins !== undefined && (origin === null || !origins.includes(origin))
    ) {
      this.#refused.event(
        `${peer}: Origin ${
          origin === null ? "missing" : `'${escapeControlChars(origin)}'`
        } not allowed`,
      );
      return plainResponse(403, "origin not allowed");
    }
    if (this.closing) return plainResponse(503, "shutting down");
    const verdict = this.#admission.admit(client);
    if (isRefusal(verdict)) {
      this.#refused.event(`${peer}: ${verdict.why}`);
      return plainResponse(REFUSAL_STATUS[verdict.reason], verdict.why);
    }
    this.#opening++;
    try {
      return await this.#upgrade(request, client, peer, verdict.source);
    } finally {
      this.#opening--;
    }
  }

  /**
   * Dials the target for an admitted client, then upgrades it and joins
   * the two; the closing line when the join ends.
   */
  async #upgrade(
    request: Request,
    client: Deno.NetAddr,
    peer: string,
    source: string | undefined,
  ): Promise<Response> {
    const began = performance.now();
    const { protocol, framing } = chooseFraming(
      request.headers.get("sec-websocket-protocol"),
      this.#websocket.framing ?? "binary",
    );
    let target: DialledTarget;
    try {
      target = await dialForClient(this.#plan, {
        remoteAddr: client,
        localAddr: this.#http.addr,
      });
    } catch (error) {
      this.#admission.release(source);
      this.log(
        `${this.prefix}closed ${peer} (0 bytes in, 0 bytes out): ${
          escapeControlChars((error as Error).message)
        }`,
      );
      return plainResponse(502, "target unreachable");
    }
    let upgrade: Deno.WebSocketUpgrade;
    try {
      upgrade = Deno.upgradeWebSocket(request, {
        protocol,
        idleTimeout: (this.#websocket.pingTimeoutMs ??
          DEFAULT_PING_TIMEOUT_MS) / 1000,
      });
    } catch (error) {
      target.conn.close();
      target.release?.();
      this.#admission.release(source);
      this.#refused.event(
        `${peer}: not a WebSocket upgrade: ${
          escapeControlChars((error as Error).message)
        }`,
      );
      return plainResponse(400, "bad WebSocket upgrade");
    }
    const socket = upgrade.socket;
    this.log(
      `${this.prefix}accepted ${peer} (WebSocket ${
        escapeControlChars(url(request))
      }, ${framing})`,
    );
    const bridged: Bridged = {
      socket,
      target,
      done: joinWebSocket(target.conn, socket, {
        framing,
        maxMessageBytes: this.#websocket.maxMessageBytes ??
          DEFAULT_MAX_MESSAGE_BYTES,
        streamName: "target",
        socketName: "client",
      }).then((result) => {
        try {
          target.conn.close();
        } catch {
          // Closed by a failure already.
        }
        target.release?.();
        this.#bridged.delete(bridged);
        this.#admission.release(source);
        this.log(
          `${this.prefix}closed ${peer} (${result.bytesToStream} bytes in, ${result.bytesToSocket} bytes out) to ${
            escapeControlChars(target.address)
          }, ${formatSeconds(performance.now() - began)}, ${result.end}${
            target.warning ? ` ${target.warning}` : ""
          }`,
        );
      }),
    };
    this.#bridged.add(bridged);
    return upgrade.response;
  }

  protected async stop(gracePeriodMs: number): Promise<void> {
    const stopped = this.#http.shutdown();
    const all = () => Promise.all([...this.#bridged].map((b) => b.done));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      all(),
      new Promise((resolve) => {
        if (Number.isFinite(gracePeriodMs)) {
          timer = setTimeout(resolve, gracePeriodMs);
        }
      }),
    ]);
    clearTimeout(timer);
    for (const { socket } of this.#bridged) {
      try {
        socket.close(1001, "server shutting down");
      } catch {
        // Already closing.
      }
    }
    await all();
    await stopped;
    this.#refused.flush();
  }
}

/** The request's path and query, as logged. */
function url(request: Request): string {
  const { pathname, search } = new URL(request.url);
  return pathname + search;
}

/**
 * Starts a WebSocket bridge: listens on `options.hostname` and `port`
 * (`options.tls` for `wss://`) and joins each WebSocket client to its own
 * connection to the target `plan` names (see the module doc). What
 * `serveForward` does for a `ws://` LISTEN.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serveWebSocketBridge } from "./websocket_bridge.ts";
 * import { serveEcho } from "../servers/echo.ts";
 *
 * await using echo = serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * await using bridge = serveWebSocketBridge(
 *   { hostname: "127.0.0.1", port: 0, log: () => {} },
 *   {},
 *   {
 *     target: { transport: "tcp", hostname: "127.0.0.1", port: (echo.addr as Deno.NetAddr).port },
 *     connectTimeoutMs: 1000,
 *   },
 * );
 * const socket = new WebSocket(`ws://127.0.0.1:${(bridge.addr as Deno.NetAddr).port}/`);
 * socket.binaryType = "arraybuffer";
 * socket.onopen = () => socket.send(new TextEncoder().encode("hi"));
 * const reply = await new Promise<ArrayBuffer>((resolve) =>
 *   socket.onmessage = (event) => resolve(event.data)
 * );
 * socket.close();
 * await new Promise((resolve) => socket.onclose = resolve);
 * assertEquals(new TextDecoder().decode(reply), "hi");
 * ```
 */
export function serveWebSocketBridge(
  options: ServerOptions,
  websocket: WebSocketListenOptions,
  plan: ForwardPlan,
): Server {
  if ((options.transport ?? "tcp") !== "tcp") {
    throw new TypeError("a WebSocket bridge listens on TCP");
  }
  for (
    const name of ["acceptProxy", "idleTimeoutMs", "keepAlive"] as const
  ) {
    if (options[name]) {
      throw new TypeError(`${name} does not apply to a WebSocket bridge`);
    }
  }
  if ((options.workers ?? 1) > 1) {
    throw new TypeError("workers does not apply to a WebSocket bridge");
  }
  const pingMs = websocket.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS;
  if (!(Number.isInteger(pingMs / 1000) && pingMs >= 0)) {
    throw new RangeError(
      `pingTimeoutMs must be whole seconds, 0 or more: ${pingMs}`,
    );
  }
  return new WebSocketBridge(options, websocket, plan);
}
