/**
 * The WebSocket bridge (websockify's job): `forward.ts ws://0.0.0.0:8080/PATH
 * tcp://127.0.0.1:5900` serves WebSocket clients on the stream server
 * (`stream_server.ts`, as every server here: access list, per-source and
 * server limits, `acceptProxy`, TLS with client certificates, idle
 * timeout, keepalive, stats) and joins each to a connection of its own to
 * the target, bytes both ways, with its own RFC 6455 server: the request
 * head read within limits (`http_head.ts`), the upgrade checked here, the
 * frames by `websocket_session.ts`. A client the stream server refuses
 * before anything is read gets a plain `403` (access) or `503` (limits)
 * first, unless it speaks TLS (refused before the handshake: no byte).
 *
 * Before the upgrade each request meets the path (404), the `Origin`
 * allow-list (403: a page on another site must not reach a private TCP
 * service through its visitor's browser), and a request that is not a
 * proper upgrade (400, as is one that declares a body: its bytes are
 * never taken for frames; 426 for a version other than 13). The target is
 * dialled before the 101, so a target that is down is a 502 the client
 * can read, not an open socket that closes at once.
 *
 * Frames: binary by default (`framing: "text"` for text frames); a client
 * that offers the `binary` subprotocol gets it, and one that offers only
 * `base64` (old websockify clients, noVNC's choice) gets base64 text
 * frames, as websockify does. Pings go out every half `pingTimeoutMs`;
 * a client that has not answered within it is closed (1001); a message
 * larger than `maxMessageBytes` closes it (1009). Each client logs one
 * line when upgraded (`upgraded 127.0.0.1:41234 (WebSocket /vnc,
 * binary)`) and its closing line says how it ended, with the close code
 * and reason: `closed 127.0.0.1:41234 (5 bytes in, 5 bytes out) to
 * 127.0.0.1:15000, 0.004 s, client closed first (1000 bye)`.
 *
 * With `webRoot`, other GET and HEAD requests get the files under it
 * (`static_files.ts`), so a page and its socket come from one origin,
 * other methods 405; without it they get 426. One request a connection.
 * What a client sends that ends up in a log line (its path, its close
 * reason, a refused Origin) is escaped there (`escape_control_chars.ts`).
 *
 * @module
 */

import type { RefusalReason } from "./admission.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import {
  dialForClient,
  type DialledTarget,
  forwardNote,
  type ForwardPlan,
} from "./forward.ts";
import {
  HttpRequestError,
  plainResponse,
  readRequestHead,
  type RequestHead,
  responseHead,
  writeResponse,
} from "./http_head.ts";
import { writeAll } from "./io.ts";
import { serve } from "./server.ts";
import type {
  ConnectionContext,
  Server,
  ServerOptions,
} from "./server_options.ts";
import { serveStaticFile } from "./static_files.ts";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  type WebSocketFraming,
} from "./websocket_join.ts";
import { WebSocketSession } from "./websocket_session.ts";

/** The default {@linkcode WebSocketListenOptions.pingTimeoutMs}: 30 s. */
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

/** RFC 6455 §1.3: what a client's key is hashed with. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** What a stream server's refusal at accept is answered with. */
const REFUSAL_STATUS: Record<RefusalReason, [number, string]> = {
  access: [403, "forbidden"],
  "per-source": [503, "too many connections from your address"],
  full: [503, "too many connections"],
  rate: [429, "too many requests"],
};

/**
 * The subprotocol and framing for a client that offers `offered`
 * (`Sec-WebSocket-Protocol`), websockify's choice: `binary` if offered,
 * else `base64` if offered, else none and `fallback`.
 */
function chooseFraming(
  offered: string | null,
  fallback: "binary" | "text",
): { protocol?: string; framing: Exclude<WebSocketFraming, "lines"> } {
  const protocols = (offered ?? "").split(",").map((p) => p.trim());
  if (protocols.includes("binary")) {
    return { protocol: "binary", framing: "binary" };
  }
  if (protocols.includes("base64")) {
    return { protocol: "base64", framing: "base64" };
  }
  return { framing: fallback };
}

/**
 * `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455
 * §4.2.2): the key and the protocol's GUID, SHA-1, base64.
 *
 * @example The RFC's own example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { webSocketAccept } from "./websocket_bridge.ts";
 *
 * assertEquals(await webSocketAccept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
 * ```
 */
export async function webSocketAccept(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key + ACCEPT_GUID),
  );
  return new Uint8Array(digest).toBase64();
}

/** Whether a header's comma-separated tokens include `token` (any case). */
function hasToken(value: string | null, token: string): boolean {
  return (value ?? "").split(",").some((t) => t.trim().toLowerCase() === token);
}

/**
 * A request target in origin form (`/vnc?x`): as sent, or an absolute
 * one's path and query (`http://host/vnc?x`: a server must take that
 * form too, RFC 9112 §3.2.2); `undefined` for anything else (`*`,
 * `host:port`).
 */
function originForm(target: string): string | undefined {
  if (target.startsWith("/")) return target;
  if (!/^(?:https?|wss?):\/\//i.test(target) || !URL.canParse(target)) {
    return undefined;
  }
  const url = new URL(target);
  return url.pathname + url.search;
}

/**
 * The checks an upgrade request meets (see the module doc), in order;
 * each refusal a {@linkcode HttpRequestError} with its status.
 */
function checkUpgrade(head: RequestHead, websocket: WebSocketListenOptions): {
  key: string;
  pathname: string;
} {
  const headers = head.headers;
  if (head.method !== "GET") {
    throw new HttpRequestError(400, `an upgrade by ${head.method}, not GET`);
  }
  // RFC 6455 §4.1: the handshake is an HTTP/1.1 request; 1.0 has no
  // Upgrade.
  if (head.version !== "1.1") {
    throw new HttpRequestError(400, `an upgrade over HTTP/${head.version}`);
  }
  if (!hasToken(headers.get("connection"), "upgrade")) {
    throw new HttpRequestError(400, "an upgrade without Connection: upgrade");
  }
  const version = headers.get("sec-websocket-version");
  if (version !== "13") {
    throw new HttpRequestError(
      426,
      `WebSocket version ${version ?? "missing"}, not 13`,
      { "sec-websocket-version": "13" },
    );
  }
  // A GET has no body; one declared here is refused rather than its
  // bytes taken for the client's first frames (what a proxy in front
  // would frame as a body, we would read as frames: request smuggling).
  const transferEncoding = headers.get("transfer-encoding");
  const contentLength = headers.get("content-length");
  if (
    transferEncoding !== null ||
    (contentLength !== null && contentLength !== "0")
  ) {
    throw new HttpRequestError(
      400,
      `an upgrade request with a body (${
        transferEncoding !== null
          ? `Transfer-Encoding: ${transferEncoding}`
          : `Content-Length: ${contentLength}`
      })`,
    );
  }
  const key = headers.get("sec-websocket-key") ?? "";
  if (!/^[A-Za-z0-9+/]{21}[AQgw]==$/.test(key)) {
    throw new HttpRequestError(
      400,
      "not a WebSocket upgrade (no valid Sec-WebSocket-Key)",
    );
  }
  const form = originForm(head.target);
  if (form === undefined) {
    throw new HttpRequestError(400, "a request target that is not a path");
  }
  const pathname = form.replace(/\?.*$/s, "");
  const path = websocket.path;
  if (path !== undefined && path !== "/" && pathname !== path) {
    throw new HttpRequestError(404, `path ${pathname} is not ${path}`);
  }
  const origin = headers.get("origin");
  const origins = websocket.origins;
  if (origins !== undefined && (origin === null || !origins.includes(origin))) {
    throw new HttpRequestError(
      403,
      `Origin ${origin === null ? "missing" : `'${origin}'`} not allowed`,
    );
  }
  return { key, pathname };
}

/** Answers `status` in plain text, as far as the client still listens. */
async function answer(
  conn: Deno.Conn,
  error: HttpRequestError,
  withBody = true,
): Promise<void> {
  const words: Record<number, string> = {
    403: "forbidden",
    405: "method not allowed",
    404: "not found",
    426: "this is a WebSocket endpoint",
    502: "target unreachable",
  };
  try {
    await writeAll(
      conn,
      plainResponse(
        error.status,
        words[error.status] ?? "bad request",
        error.headers,
        withBody,
      ),
    );
  } catch {
    // Gone already: the closing line says why it was refused.
  }
}

/** What each client of one bridge is served by. */
interface Bridge {
  websocket: WebSocketListenOptions;
  plan: ForwardPlan;
}

/**
 * Serves one connection of the bridge: reads its request, answers it
 * (files, 426, a refusal) or upgrades it and joins it to its target;
 * sets the byte counts and the closing line's note. Throws the one-line
 * reason of a refusal, after its answer.
 */
async function serveBridgeClient(
  conn: Deno.Conn,
  context: ConnectionContext,
  bridge: Bridge,
): Promise<void> {
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  let head: RequestHead | null;
  try {
    head = await readRequestHead(conn);
  } catch (error) {
    if (!(error instanceof HttpRequestError)) throw error;
    await answer(conn, error);
    throw new Error(`bad request: ${error.message} (${error.status})`);
  }
  if (head === null) {
    context.note = "no request";
    return;
  }
  if (!hasToken(head.headers.get("upgrade"), "websocket")) {
    return await serveOtherRequest(conn, context, head, bridge.websocket);
  }
  let key: string;
  let pathname: string;
  try {
    ({ key, pathname } = checkUpgrade(head, bridge.websocket));
  } catch (error) {
    if (!(error instanceof HttpRequestError)) throw error;
    await answer(conn, error);
    throw new Error(`${error.message} (${error.status})`);
  }
  const began = performance.now();
  let target: DialledTarget;
  try {
    target = await dialForClient(bridge.plan, context);
  } catch (error) {
    await answer(conn, new HttpRequestError(502, ""));
    throw error;
  }
  const { protocol, framing } = chooseFraming(
    head.headers.get("sec-websocket-protocol"),
    bridge.websocket.framing ?? "binary",
  );
  try {
    await writeAll(
      conn,
      responseHead(101, {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-accept": await webSocketAccept(key),
        ...(protocol && { "sec-websocket-protocol": protocol }),
      }, false),
    );
  } catch (error) {
    target.conn.close();
    target.release?.();
    throw error;
  }
  context.log(
    `upgraded ${context.peer} (WebSocket ${
      escapeControlChars(pathname)
    }, ${framing})`,
  );
  const session = new WebSocketSession(conn, target.conn, {
    framing,
    maxMessageBytes: bridge.websocket.maxMessageBytes ??
      DEFAULT_MAX_MESSAGE_BYTES,
    pingTimeoutMs: bridge.websocket.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
    leftover: head.rest.length > 0 ? head.rest : undefined,
    onActivity: () => context.active(),
  });
  context.onShutdown = () => session.stop();
  // Returned, not awaited: as forwardConnection, no suspended function
  // for the client's whole life.
  return session.done.then((result) => {
    target.release?.();
    context.bytesIn = result.bytesToTarget;
    context.bytesOut = result.bytesToClient;
    context.note = forwardNote(target, began, result.end);
  });
}

/** A request that is not an upgrade: a file under `webRoot`, or 426. */
async function serveOtherRequest(
  conn: Deno.Conn,
  context: ConnectionContext,
  head: RequestHead,
  websocket: WebSocketListenOptions,
): Promise<void> {
  let status: number;
  const form = originForm(head.target);
  if (websocket.webRoot === undefined || form === undefined) {
    status = 426;
    await answer(
      conn,
      new HttpRequestError(426, "", { upgrade: "websocket" }),
      head.method !== "HEAD",
    );
  } else if (head.method !== "GET" && head.method !== "HEAD") {
    // Before a Request is made: fetch throws for TRACE, TRACK and
    // CONNECT, which left the client unanswered.
    status = 405;
    await answer(conn, new HttpRequestError(405, "", { allow: "GET, HEAD" }));
  } else {
    const response = await serveStaticFile(
      websocket.webRoot,
      new Request(`http://localhost${form}`, { method: head.method }),
    );
    status = response.status;
    await writeResponse(conn, response, head.method !== "HEAD");
  }
  context.note = `HTTP ${head.method} ${head.target.slice(0, 200)} ${status}`;
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
  const pingMs = websocket.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS;
  if (!(Number.isInteger(pingMs / 1000) && pingMs >= 0)) {
    throw new RangeError(
      `pingTimeoutMs must be whole seconds, 0 or more: ${pingMs}`,
    );
  }
  const bridge: Bridge = { websocket, plan };
  return serve({
    name: "forward",
    defaultPort: 0,
    // The target's socket.
    descriptorsPerConnection: 1,
    stream: (conn, context) => serveBridgeClient(conn, context, bridge),
    refusal: (reason) => {
      const [status, text] = REFUSAL_STATUS[reason];
      return plainResponse(status, text);
    },
  }, options);
}
