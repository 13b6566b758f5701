/**
 * Endpoints as strings: `tcp://host:port`, `udp://[::1]:7`, `unix:/path`,
 * `unixpacket:/path`, `ws://host:port/path` and `wss://`, and printing addresses the way the toolkit logs them
 * (`127.0.0.1:7`, `[::1]:7`, or a socket path).
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";

/** The transports the toolkit serves and connects over. */
export type Transport = "tcp" | "udp" | "unix" | "unixpacket";

/** A network endpoint: host and port over TCP or UDP. */
export interface NetEndpoint {
  /** `tcp` or `udp`. */
  transport: "tcp" | "udp";
  /** Host name or IP literal, IPv6 without brackets. */
  hostname: string;
  /** Port, 0 to 65535. */
  port: number;
}

/** A Unix-domain endpoint: a socket path. */
export interface UnixEndpoint {
  /** `unix` (stream) or `unixpacket` (datagram). */
  transport: "unix" | "unixpacket";
  /** Path of the socket file. */
  path: string;
}

/**
 * A WebSocket endpoint: `ws://host:port/path` or `wss://` (TLS), the
 * browser's socket (see `lib/websocket_bridge.ts` and
 * `lib/websocket_dial.ts`).
 */
export interface WebSocketEndpoint {
  /** `ws` or `wss` (over TLS). */
  transport: "ws" | "wss";
  /** Host name or IP literal, IPv6 without brackets. */
  hostname: string;
  /** Port, 0 to 65535; 80 for `ws` and 443 for `wss` when the URL has none. */
  port: number;
  /** The request target: path and query, `/` at least. */
  resource: string;
}

/** Where a server listens or a client connects. */
export type Endpoint = NetEndpoint | UnixEndpoint | WebSocketEndpoint;

/**
 * A string that is not a valid endpoint, port or address.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { EndpointError, parsePort } from "./endpoint.ts";
 *
 * const error = assertThrows(() => parsePort("70000"), EndpointError);
 * assertEquals(error.input, "70000");
 * ```
 */
export class EndpointError extends Error {
  /** The text that could not be parsed. */
  readonly input: string;

  /** Builds the error for `input` with a message saying what was expected. */
  constructor(message: string, input: string) {
    super(message);
    this.name = "EndpointError";
    this.input = input;
  }
}

/**
 * Parses a decimal port number, 0 to 65535 (0 asks the system for a free one).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parsePort } from "./endpoint.ts";
 *
 * assertEquals(parsePort("15000"), 15000);
 * ```
 */
export function parsePort(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) > 65535) {
    throw new EndpointError(
      `invalid port '${text}': expected a number from 0 to 65535`,
      text,
    );
  }
  return Number(text);
}

/**
 * Splits `host:port`, `[v6]:port` into host and port. The host keeps no
 * brackets. A bare IPv6 literal without brackets is refused: its last group
 * would read as a port.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { splitHostPort } from "./endpoint.ts";
 *
 * assertEquals(splitHostPort("[::1]:7"), { hostname: "::1", port: 7 });
 * assertEquals(splitHostPort("example.com:80"), { hostname: "example.com", port: 80 });
 * ```
 */
export function splitHostPort(
  text: string,
): { hostname: string; port: number } {
  let hostname: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1 || text[close + 1] !== ":") {
      throw new EndpointError(
        `invalid address '${text}': expected [IPv6]:PORT`,
        text,
      );
    }
    hostname = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!hostname.includes(":")) {
      throw new EndpointError(
        `invalid address '${text}': brackets are for IPv6 literals`,
        text,
      );
    }
  } else {
    const colon = text.lastIndexOf(":");
    if (colon === -1) {
      throw new EndpointError(
        `invalid address '${text}': expected HOST:PORT`,
        text,
      );
    }
    hostname = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (hostname.includes(":")) {
      throw new EndpointError(
        `invalid address '${text}': write IPv6 addresses in brackets, as [::1]:7`,
        text,
      );
    }
  }
  if (hostname === "" || /[\s/@?#\[\]]/.test(hostname)) {
    throw new EndpointError(`invalid host in '${text}'`, text);
  }
  return { hostname, port: parsePort(portText) };
}

/** What an endpoint string may name: a transport, or a WebSocket. */
export type EndpointKind = Endpoint["transport"];

/** How each kind of endpoint is written as a scheme. */
const SCHEMES: Record<EndpointKind, string> = {
  tcp: "tcp://",
  udp: "udp://",
  ws: "ws://",
  wss: "wss://",
  unix: "unix:",
  unixpacket: "unixpacket:",
};

/**
 * Parses an endpoint string: `tcp://host:port`, `udp://host:port` (IPv6 in
 * brackets), `ws://host[:port][/path]`, `wss://...`, `unix:/path`,
 * `unixpacket:/path`, or a bare `host:port` (TCP). `transports` are the
 * ones the caller serves (default all): any other scheme is refused, and
 * the message names only those, so a script never suggests one it then
 * refuses.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { EndpointError, parseEndpoint } from "./endpoint.ts";
 *
 * assertEquals(parseEndpoint("udp://[::1]:7"), { transport: "udp", hostname: "::1", port: 7 });
 * assertEquals(parseEndpoint("unix:/tmp/echo.sock"), { transport: "unix", path: "/tmp/echo.sock" });
 * assertThrows(
 *   () => parseEndpoint("unixpacket:/tmp/s", ["tcp", "unix"]),
 *   EndpointError,
 *   "expected tcp:// or unix:",
 * );
 * assertEquals(parseEndpoint("wss://example.com/vnc"), {
 *   transport: "wss", hostname: "example.com", port: 443, resource: "/vnc",
 * });
 * ```
 */
export function parseEndpoint(
  text: string,
  transports: readonly EndpointKind[] = [
    "tcp",
    "udp",
    "ws",
    "wss",
    "unix",
    "unixpacket",
  ],
): Endpoint {
  const endpoint = parseKnownScheme(text);
  if (endpoint === undefined || !transports.includes(endpoint.transport)) {
    const names = transports.map((t) => SCHEMES[t]);
    const expected = names.length > 1
      ? `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`
      : names[0];
    throw new EndpointError(
      `unsupported scheme in '${text}': expected ${expected}`,
      text,
    );
  }
  return endpoint;
}

/** `text` as an endpoint of any transport; `undefined`: an unknown scheme. */
function parseKnownScheme(text: string): Endpoint | undefined {
  const scheme = /^(tcp|udp):\/\/(.*)$/s.exec(text);
  if (scheme) {
    const { hostname, port } = splitHostPort(scheme[2]);
    return { transport: scheme[1] as "tcp" | "udp", hostname, port };
  }
  const webSocket = /^(wss?):\/\/([^/?#]*)(.*)$/s.exec(text);
  if (webSocket) return parseWebSocketEndpoint(webSocket, text);
  const unix = /^(unix|unixpacket):(.*)$/s.exec(text);
  if (unix) {
    const path = unix[2].replace(/^\/\/(?=\/)/, "");
    if (path === "" || path.includes("\0")) {
      throw new EndpointError(
        `invalid socket path in '${text}': expected ${unix[1]}:/path`,
        text,
      );
    }
    return { transport: unix[1] as "unix" | "unixpacket", path };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return undefined;
  const { hostname, port } = splitHostPort(text);
  return { transport: "tcp", hostname, port };
}

/**
 * `ws://HOST[:PORT][/PATH]`'s parts, as a WebSocket URL has them (the
 * port its scheme's when absent); a fragment, spaces or control
 * characters in the path are refused.
 */
function parseWebSocketEndpoint(
  [, scheme, authority, resource]: RegExpExecArray,
  text: string,
): WebSocketEndpoint {
  const transport = scheme as "ws" | "wss";
  const defaultPort = transport === "ws" ? 80 : 443;
  const bare = /^(\[[^\]]*\]|[^:]*)$/.test(authority);
  const { hostname, port } = splitHostPort(
    bare ? `${authority}:${defaultPort}` : authority,
  );
  if (resource !== "" && !/^[/?][\x21-\x7e]*$/.test(resource)) {
    throw new EndpointError(
      `invalid path in '${text}': expected /PATH without spaces or #`,
      text,
    );
  }
  if (resource.includes("#")) {
    throw new EndpointError(
      `invalid path in '${text}': a WebSocket URL has no #fragment`,
      text,
    );
  }
  return {
    transport,
    hostname,
    port,
    resource: resource.startsWith("/") ? resource : `/${resource}`,
  };
}

/**
 * Formats a host and port as the toolkit prints them: `127.0.0.1:7`,
 * `[::1]:7`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { joinHostPort } from "./endpoint.ts";
 *
 * assertEquals(joinHostPort("::1", 7), "[::1]:7");
 * assertEquals(joinHostPort("127.0.0.1", 7), "127.0.0.1:7");
 * ```
 */
export function joinHostPort(hostname: string, port: number): string {
  return hostname.includes(":")
    ? `[${hostname}]:${port}`
    : `${hostname}:${port}`;
}

/**
 * Formats a {@linkcode Deno.Addr} as the toolkit logs it: `127.0.0.1:7`,
 * `[::1]:7`, or the Unix socket path (`(unnamed)` for an unbound peer).
 * What a peer chose (the path it bound, or the one in its PROXY header)
 * is escaped with `escapeControlChars`: a path may hold any byte but NUL,
 * a line break and a terminal's escape sequences included.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { formatAddr } from "./endpoint.ts";
 *
 * assertEquals(formatAddr({ transport: "tcp", hostname: "::1", port: 7 }), "[::1]:7");
 * assertEquals(formatAddr({ transport: "unix", path: "" }), "(unnamed)");
 * assertEquals(formatAddr({ transport: "unix", path: "/x\nclosed" }), "/x\\nclosed");
 * ```
 */
export function formatAddr(addr: Deno.Addr): string {
  if ("hostname" in addr) {
    return joinHostPort(escapeControlChars(addr.hostname), addr.port);
  }
  if ("path" in addr) {
    return addr.path ? escapeControlChars(addr.path) : "(unnamed)";
  }
  return `${addr.transport}:${addr.cid}:${addr.port}`;
}

/**
 * Formats an {@linkcode Endpoint} as a string {@linkcode parseEndpoint}
 * reads back.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { formatEndpoint, parseEndpoint } from "./endpoint.ts";
 *
 * assertEquals(formatEndpoint(parseEndpoint("udp://[::1]:7")), "udp://[::1]:7");
 * ```
 */
export function formatEndpoint(endpoint: Endpoint): string {
  if ("path" in endpoint) return `${endpoint.transport}:${endpoint.path}`;
  return `${endpoint.transport}://${
    joinHostPort(endpoint.hostname, endpoint.port)
  }${"resource" in endpoint ? endpoint.resource : ""}`;
}
