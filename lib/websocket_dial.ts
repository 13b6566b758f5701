/**
 * The WebSocket as a target and as a client (websocat's job): opening a
 * `ws://` or `wss://` endpoint with Deno's `WebSocket` (verified against
 * extra CA certificates and for another name when asked, as `--to-tls`
 * does for TCP), and forwarding one accepted TCP client over it
 * (`forward.ts tcp://0.0.0.0:9000 wss://host/path`).
 *
 * @module
 */

import { formatSeconds } from "./units.ts";
import {
  formatEndpoint,
  joinHostPort,
  type WebSocketEndpoint,
} from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import type { ConnectionContext } from "./server_options.ts";
import {
  type JoinOptions,
  joinWebSocket,
  type WebSocketFraming,
} from "./websocket_join.ts";

/**
 * How long, after its client's stream ends, a forwarded WebSocket waits
 * for no message to come before its close frame, by default, in ms:
 * WebSocket has no half-close, and the target's answer may be on its way.
 */
export const DEFAULT_CLOSE_LINGER_MS = 1000;

/** How to open a WebSocket: see {@linkcode dialWebSocket}. */
export interface WebSocketDialOptions {
  /**
   * `wss://`: PEM CA certificates to trust besides Deno's default roots
   * (Deno's WebSocket client always verifies the server).
   */
  caCerts?: string[];
  /** Give up opening (connect, TLS, upgrade) after this long, in ms. */
  timeoutMs?: number;
  /** Subprotocols to offer (`Sec-WebSocket-Protocol`). */
  protocols?: string[];
}

/**
 * A WebSocket could not be opened: refused, not verified, not upgraded,
 * or too slow. The message is the one line a user sees.
 *
 * @example
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { dialWebSocket, WebSocketDialError } from "./websocket_dial.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const port = listener.addr.port;
 * listener.close();
 * await assertRejects(
 *   () => dialWebSocket({ transport: "ws", hostname: "127.0.0.1", port, resource: "/" }),
 *   WebSocketDialError,
 * );
 * ```
 */
export class WebSocketDialError extends Error {
  /** The endpoint, as `ws://host:port/path`. */
  readonly target: string;

  /** Builds the error for `target`. */
  constructor(message: string, target: string) {
    super(message);
    this.name = "WebSocketDialError";
    this.target = target;
  }
}

/**
 * Opens a WebSocket to `endpoint` and resolves once it is open; every
 * failure is a {@linkcode WebSocketDialError}. The certificate of a
 * `wss://` server is verified for the URL's host: there is no way to name
 * another (Deno's WebSocket client takes no server name, and through
 * `Deno.createHttpClient`'s TCP proxy, which could have carried one, Deno
 * 2.9 sent a `wss://` upgrade in cleartext: a websockify that takes both
 * answered it, one with `--ssl-only` refused it).
 *
 * @example
 * ```ts
 * import { dialWebSocket } from "./websocket_dial.ts";
 *
 * await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
 *   const { socket, response } = Deno.upgradeWebSocket(request);
 *   socket.onmessage = (event) => socket.send(event.data);
 *   return response;
 * });
 * const socket = await dialWebSocket({
 *   transport: "ws", hostname: "127.0.0.1", port: server.addr.port, resource: "/",
 * });
 * socket.close();
 * await new Promise((resolve) => socket.onclose = resolve);
 * ```
 */
export async function dialWebSocket(
  endpoint: WebSocketEndpoint,
  options: WebSocketDialOptions = {},
): Promise<WebSocket> {
  const where = formatEndpoint(endpoint);
  const url = `${endpoint.transport}://${
    joinHostPort(endpoint.hostname, endpoint.port)
  }${endpoint.resource}`;
  const client = options.caCerts
    ? Deno.createHttpClient({ caCerts: options.caCerts })
    : undefined;
  let socket: WebSocket;
  try {
    socket = new WebSocket(url, { protocols: options.protocols, client });
  } catch (error) {
    client?.close();
    throw new WebSocketDialError(
      `cannot open ${where}: ${(error as Error).message}`,
      where,
    );
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = (event) =>
        reject(
          new WebSocketDialError(
            `cannot open ${where}: ${
              escapeControlChars((event as ErrorEvent).message ?? "failed")
            }`,
            where,
          ),
        );
      socket.onclose = (event) =>
        reject(
          new WebSocketDialError(
            `cannot open ${where}: closed (${event.code})`,
            where,
          ),
        );
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          reject(
            new WebSocketDialError(
              `timed out after ${
                formatSeconds(options.timeoutMs!)
              } opening ${where}`,
              where,
            ),
          );
          socket.close();
        }, options.timeoutMs);
      }
    });
  } finally {
    clearTimeout(timer);
    socket.onopen = socket.onerror = socket.onclose = null;
    // The client's connections stay with the socket; its pool is closed.
    client?.close();
  }
  return socket;
}

/** How `forward.ts` carries each client over a WebSocket target. */
export interface WebSocketForwardPlan {
  /** The target. */
  target: WebSocketEndpoint;
  /** How to open it; `timeoutMs` is the connect timeout. */
  dial: WebSocketDialOptions;
  /** Message framing and limits (default binary frames). */
  join?: JoinOptions;
}

/**
 * Forwards one accepted stream client over its own WebSocket to
 * `plan.target`: opens it, joins the two (see `joinWebSocket`: the
 * client's end becomes a close frame once no message has come for
 * {@linkcode DEFAULT_CLOSE_LINGER_MS}), and sets the byte counts and
 * `context.note` for the closing line.
 *
 * @example
 * ```ts ignore
 * serve({ name: "forward", defaultPort: 0, stream: (conn, context) =>
 *   forwardToWebSocket(conn, context, { target, dial: {} }) }, options);
 * ```
 */
export async function forwardToWebSocket(
  conn: Deno.Conn,
  context: ConnectionContext,
  plan: WebSocketForwardPlan,
): Promise<void> {
  const began = performance.now();
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  const socket = await dialWebSocket(plan.target, plan.dial);
  const framing: WebSocketFraming = plan.join?.framing ?? "binary";
  const result = await joinWebSocket(conn, socket, {
    lingerMs: DEFAULT_CLOSE_LINGER_MS,
    ...plan.join,
    framing,
    streamName: "client",
    socketName: "target",
    onActivity: () => context.active(),
  });
  context.bytesIn = result.bytesToSocket;
  context.bytesOut = result.bytesToStream;
  context.note = `to ${formatEndpoint(plan.target)}, ${
    formatSeconds(performance.now() - began)
  }, ${result.end}`;
}
