/**
 * The command line of `servers/forward.ts`'s WebSocket endpoints: the flags
 * only a `ws://` or `wss://` LISTEN takes (`--origin`, `--ws-frames`,
 * `--max-message`, `--ping`, `--web`), the bridge's options from them, and
 * the checks a `ws://` or `wss://` TARGET's flags get. Every misuse is a
 * one-line `UsageError`.
 *
 * @module
 */

import { flag, UsageError } from "./cli.ts";
import type { Endpoint } from "./endpoint.ts";
import {
  DEFAULT_PING_TIMEOUT_MS,
  type WebSocketListenOptions,
} from "./websocket_bridge.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./websocket_join.ts";

/** The parsed flags these checks read (a subset of forward.ts's). */
export interface WebSocketFlagValues {
  origin?: string[];
  "ws-frames"?: "binary" | "text";
  "max-message"?: number;
  ping?: number;
  web?: string;
  "to-tls"?: boolean;
  "send-proxy"?: unknown;
  insecure?: boolean;
  servername?: string;
  ca?: string;
  targets?: string;
}

function webSocketFrames(text: string, name: string): "binary" | "text" {
  if (text === "binary" || text === "text") return text;
  throw new UsageError(
    `invalid value '${text}' for ${name}: expected binary or text`,
  );
}

function pingSeconds(text: string, name: string): number {
  if (!/^[0-9]{1,6}$/.test(text)) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected whole seconds, 0 for no pings`,
    );
  }
  return Number(text) * 1000;
}

/**
 * The largest `--max-message`: 64 MiB, Deno's own WebSocket limit (and a
 * base64 message is held whole until decoded).
 */
const MAX_MESSAGE_LIMIT_BYTES = 64 * 1024 * 1024;

/**
 * The flags only a ws:// or wss:// LISTEN takes.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseCommandLine } from "./cli.ts";
 * import { WEBSOCKET_LISTEN_FLAGS } from "./websocket_flags.ts";
 *
 * const { values } = parseCommandLine(["--ping", "10"], { usage: "", flags: WEBSOCKET_LISTEN_FLAGS });
 * assertEquals(values.ping, 10_000);
 * ```
 */
export const WEBSOCKET_LISTEN_FLAGS = {
  origin: flag.list(
    "ORIGIN",
    "ws:// LISTEN: upgrade only requests whose Origin is\nORIGIN (https://example.com; repeatable); others get\n403 before the upgrade (default: any)",
  ),
  "ws-frames": flag.custom(
    "KIND",
    "ws:// LISTEN: the frames for clients that ask for no\nsubprotocol, binary or text (those offering base64 get\nbase64) {default}",
    webSocketFrames,
    { shown: "binary" },
  ),
  "max-message": flag.integer(
    "BYTES",
    "ws:// LISTEN: close a client whose message is larger\n(1009) {default}",
    {
      min: 1,
      max: MAX_MESSAGE_LIMIT_BYTES,
      shown: String(DEFAULT_MAX_MESSAGE_BYTES),
    },
  ),
  ping: flag.custom(
    "S",
    "ws:// LISTEN: ping every S/2 seconds, close a client\nthat has not answered within S (whole seconds; 0: no\npings) {default}",
    pingSeconds,
    { shown: String(DEFAULT_PING_TIMEOUT_MS / 1000) },
  ),
  web: flag.string(
    "DIR",
    "ws:// LISTEN: serve the files under DIR to requests\nthat are not upgrades (needs --allow-read=DIR)",
  ),
};

/**
 * A ws:// or wss:// LISTEN's options from its flags; its own flags
 * refused elsewhere.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { UsageError } from "./cli.ts";
 * import { parseEndpoint } from "./endpoint.ts";
 * import { webSocketListenOptions } from "./websocket_flags.ts";
 *
 * const listen = parseEndpoint("ws://0.0.0.0:8080/vnc");
 * assertEquals(webSocketListenOptions(listen, { origin: ["https://a.example"] })?.path, "/vnc");
 * assertThrows(
 *   () => webSocketListenOptions(parseEndpoint("tcp://0.0.0.0:8080"), { web: "site" }),
 *   UsageError,
 *   "--web applies to a ws:// or wss:// LISTEN",
 * );
 * ```
 */
export function webSocketListenOptions(
  listen: Endpoint,
  values: WebSocketFlagValues,
): WebSocketListenOptions | undefined {
  const own = Object.keys(WEBSOCKET_LISTEN_FLAGS) as (
    keyof typeof WEBSOCKET_LISTEN_FLAGS
  )[];
  if (listen.transport !== "ws" && listen.transport !== "wss") {
    for (const name of own) {
      if (values[name] !== undefined) {
        throw new UsageError(`--${name} applies to a ws:// or wss:// LISTEN`);
      }
    }
    return undefined;
  }
  return {
    path: listen.resource.replace(/\?.*$/, ""),
    origins: values.origin,
    framing: values["ws-frames"],
    maxMessageBytes: values["max-message"],
    pingTimeoutMs: values.ping,
    webRoot: values.web,
  };
}

/**
 * A ws:// or wss:// TARGET: one, behind a plain LISTEN, with its TLS flags.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { UsageError } from "./cli.ts";
 * import { parseEndpoint } from "./endpoint.ts";
 * import { checkWebSocketTarget } from "./websocket_flags.ts";
 *
 * const listen = parseEndpoint("tcp://127.0.0.1:9000");
 * const specs = [{ endpoint: parseEndpoint("wss://example.com/tunnel") }];
 * checkWebSocketTarget(listen, specs, { ca: "ca.pem" });
 * assertThrows(() => checkWebSocketTarget(listen, specs, { "to-tls": true }), UsageError);
 * ```
 */
export function checkWebSocketTarget(
  listen: Endpoint,
  specs: readonly { endpoint: Endpoint }[],
  values: WebSocketFlagValues,
): void {
  const webSocket = specs.filter(({ endpoint }) =>
    endpoint.transport === "ws" || endpoint.transport === "wss"
  );
  if (webSocket.length === 0) return;
  if (specs.length > 1 || values.targets !== undefined) {
    throw new UsageError(
      "a ws:// or wss:// TARGET must be the only one (no --targets)",
    );
  }
  if (listen.transport !== "tcp" && listen.transport !== "unix") {
    throw new UsageError(
      "a ws:// or wss:// TARGET takes a tcp:// or unix: LISTEN",
    );
  }
  const target = webSocket[0].endpoint;
  for (const name of ["to-tls", "send-proxy", "insecure"] as const) {
    if (values[name]) {
      throw new UsageError(
        `--${name} does not apply to a ${target.transport}:// TARGET${
          name === "to-tls" ? " (wss:// is TLS)" : ""
        }`,
      );
    }
  }
  if (values.servername !== undefined) {
    // Deno's WebSocket client verifies the URL's host and takes no other
    // name (see dialWebSocket).
    throw new UsageError(
      `--servername does not apply to a ${target.transport}:// TARGET: write the name in it (${target.transport}://NAME:PORT/..., --allow-net=NAME:PORT)`,
    );
  }
  if (target.transport === "ws" && values.ca !== undefined) {
    throw new UsageError("--ca needs a wss:// TARGET (or --to-tls)");
  }
}
