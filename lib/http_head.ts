/**
 * Just enough HTTP/1.1 for a WebSocket endpoint on a plain connection: a
 * request's head read within a size and a time limit
 * ({@linkcode readRequestHead}; anything malformed a
 * {@linkcode HttpRequestError} with the status to answer), and a response
 * written to the connection ({@linkcode writeResponse}), always followed
 * by the connection's end: one request a connection, no keep-alive, no
 * bodies from clients.
 *
 * @module
 */

import { writeAll } from "./io.ts";

/** The default {@linkcode RequestHeadOptions.maxBytes}: 8 KiB, as nginx's default buffer. */
export const DEFAULT_MAX_REQUEST_HEAD_BYTES = 8 * 1024;

/** The default {@linkcode RequestHeadOptions.timeoutMs}: 10 s. */
export const DEFAULT_REQUEST_HEAD_TIMEOUT_MS = 10_000;

/** The reason phrases of the statuses written here. */
const REASONS: Record<number, string> = {
  101: "Switching Protocols",
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

/**
 * A request the server will not take: `status` is the answer, the
 * message the one line for the log.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { HttpRequestError } from "./http_head.ts";
 *
 * const error = new HttpRequestError(404, "path /x is not /vnc");
 * assertEquals(error.status, 404);
 * ```
 */
export class HttpRequestError extends Error {
  /** The status to answer with. */
  readonly status: number;
  /** Headers to answer with besides the usual ones. */
  readonly headers: Record<string, string>;

  /** A refusal answered with `status` (and `headers`). */
  constructor(
    status: number,
    message: string,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpRequestError";
    this.status = status;
    this.headers = headers;
  }
}

/** A request's head, as {@linkcode readRequestHead} read it. */
export interface RequestHead {
  /** `GET`, `HEAD`... as sent. */
  method: string;
  /** The request target as sent: `/path?query` (or absolute: `http://host/path`). */
  target: string;
  /** The HTTP version: `1.1` or `1.0`. */
  version: "1.1" | "1.0";
  /** Its header fields. */
  headers: Headers;
  /** Bytes that came after the head (a client's first frames). */
  rest: Uint8Array;
}

/** Limits for {@linkcode readRequestHead}. */
export interface RequestHeadOptions {
  /**
   * Largest head, request line and fields, in bytes; a larger one is a
   * 431.
   *
   * @default {@linkcode DEFAULT_MAX_REQUEST_HEAD_BYTES}
   */
  maxBytes?: number;
  /**
   * The whole head must have come this long after the call, in ms; if
   * not, a 408.
   *
   * @default {@linkcode DEFAULT_REQUEST_HEAD_TIMEOUT_MS}
   */
  timeoutMs?: number;
}

/** Where `\r\n\r\n` ends in `bytes`, looked for from `from`; -1 if nowhere. */
function headEnd(bytes: Uint8Array, from: number): number {
  for (let i = Math.max(0, from - 3); i + 3 < bytes.length; i++) {
    if (
      bytes[i] === 13 && bytes[i + 1] === 10 &&
      bytes[i + 2] === 13 && bytes[i + 3] === 10
    ) return i + 4;
  }
  return -1;
}

/**
 * `bytes` as ISO-8859-1, a character each, as HTTP/1.1 reads a field's
 * obs-text. Not `TextDecoder("latin1")`: that is windows-1252 (WHATWG),
 * which makes 0x80-0x9f other characters, and `Headers` refused a value
 * holding one (a UTF-8 "€" in a User-Agent was a 400).
 */
function isoLatin1(bytes: Uint8Array): string {
  let text = "";
  // In slices: a spread of the whole head could pass the call's argument limit.
  for (let at = 0; at < bytes.length; at += 4096) {
    text += String.fromCharCode(...bytes.subarray(at, at + 4096));
  }
  return text;
}

/** The head's text (ISO-8859-1, as HTTP/1.1 fields are) parsed. */
function parseHead(text: string): Omit<RequestHead, "rest"> {
  const lines = text.split("\r\n");
  const requestLine = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/(\d\.\d)$/
    .exec(lines[0]);
  if (!requestLine) {
    throw new HttpRequestError(400, "not an HTTP request");
  }
  const [, method, target, version] = requestLine;
  if (version !== "1.1" && version !== "1.0") {
    throw new HttpRequestError(505, `HTTP/${version}`);
  }
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    const name = line.slice(0, colon);
    if (colon <= 0 || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new HttpRequestError(400, "a malformed header field");
    }
    try {
      // Headers strips the value's spaces and tabs itself (HTTP's OWS);
      // trim() took an obs-text NBSP (0xa0) from its ends too.
      headers.append(name, line.slice(colon + 1));
    } catch {
      throw new HttpRequestError(400, "a malformed header field");
    }
  }
  return { method, target, version, headers };
}

/**
 * Reads a request's head from `conn` (see {@linkcode RequestHeadOptions}
 * for its limits); `null` when the connection ends, or its time is up,
 * before a byte came.
 * Throws {@linkcode HttpRequestError} for a head that is malformed, too
 * large, too slow or cut short.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { readRequestHead } from "./http_head.ts";
 *
 * const bytes = new TextEncoder().encode("GET /a HTTP/1.1\r\nHost: x\r\n\r\nrest");
 * let given = false;
 * const head = await readRequestHead({
 *   read: (buffer) => {
 *     if (given) return Promise.resolve(null);
 *     given = true;
 *     buffer.set(bytes);
 *     return Promise.resolve(bytes.length);
 *   },
 * });
 * assertEquals([head?.method, head?.target, head?.headers.get("host")], ["GET", "/a", "x"]);
 * assertEquals(new TextDecoder().decode(head?.rest), "rest");
 * ```
 */
export async function readRequestHead(
  conn: { read(buffer: Uint8Array): Promise<number | null> },
  options: RequestHeadOptions = {},
): Promise<RequestHead | null> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_REQUEST_HEAD_BYTES;
  const timeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_HEAD_TIMEOUT_MS;
  // Room for the head and the first frames that may follow it at once.
  const buffer = new Uint8Array(maxBytes + 4096);
  let held = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) =>
    timer = setTimeout(() => resolve("late"), timeoutMs)
  );
  try {
    for (;;) {
      const n = await Promise.race([conn.read(buffer.subarray(held)), late]);
      if (n === "late") {
        // Nothing at all: a browser's spare connection, opened in case.
        if (held === 0) return null;
        throw new HttpRequestError(
          408,
          `no whole request head within ${timeoutMs / 1000} s`,
        );
      }
      if (n === null) {
        if (held === 0) return null;
        throw new HttpRequestError(400, "the request head cut short");
      }
      const from = held;
      held += n;
      const end = headEnd(buffer.subarray(0, held), from);
      if (end > maxBytes || (end === -1 && held >= maxBytes)) {
        throw new HttpRequestError(
          431,
          `a request head over ${maxBytes} bytes`,
        );
      }
      if (end !== -1) {
        const text = isoLatin1(buffer.subarray(0, end - 4));
        return { ...parseHead(text), rest: buffer.slice(end, held) };
      }
    }
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A response's head: status line and fields, `connection: close` added.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { responseHead } from "./http_head.ts";
 *
 * assertEquals(
 *   new TextDecoder().decode(responseHead(404, { "content-length": "0" })),
 *   "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
 * );
 * ```
 */
export function responseHead(
  status: number,
  headers: Record<string, string> | Headers,
  close = true,
): Uint8Array {
  let text = `HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}\r\n`;
  const entries = headers instanceof Headers
    ? headers.entries()
    : Object.entries(headers);
  for (const [name, value] of entries) text += `${name}: ${value}\r\n`;
  if (close) text += "connection: close\r\n";
  return new TextEncoder().encode(`${text}\r\n`);
}

/**
 * A short plain-text answer (`403 origin not allowed`), head and body in
 * one buffer; the head alone when not `withBody` (the answer to a HEAD,
 * which says the body's length but does not send it).
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { plainResponse } from "./http_head.ts";
 *
 * const text = new TextDecoder().decode(plainResponse(503, "too many connections"));
 * assertStringIncludes(text, "HTTP/1.1 503 Service Unavailable\r\n");
 * ```
 */
export function plainResponse(
  status: number,
  text: string,
  headers: Record<string, string> = {},
  withBody = true,
): Uint8Array {
  const body = new TextEncoder().encode(`${text}\n`);
  const head = responseHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": String(body.length),
    ...headers,
  });
  if (!withBody) return head;
  const bytes = new Uint8Array(head.length + body.length);
  bytes.set(head);
  bytes.set(body, head.length);
  return bytes;
}

/**
 * Writes `response` to `conn` (its body only when `withBody`: not for
 * HEAD), with its length, and `connection: close`: the connection ends
 * after it. A body longer than its `content-length` is cut there.
 *
 * @example
 * ```ts
 * import { assertStringIncludes } from "@std/assert";
 * import { writeResponse } from "./http_head.ts";
 *
 * const chunks: Uint8Array[] = [];
 * await writeResponse({
 *   write: (bytes) => {
 *     chunks.push(bytes.slice());
 *     return Promise.resolve(bytes.length);
 *   },
 * }, new Response("hi"), true);
 * const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
 * assertStringIncludes(text, "content-length: 2\r\n");
 * ```
 */
export async function writeResponse(
  conn: { write(bytes: Uint8Array): Promise<number> },
  response: Response,
  withBody: boolean,
): Promise<void> {
  const headers = new Headers(response.headers);
  let body: Uint8Array | undefined;
  if (!headers.has("content-length")) {
    body = new Uint8Array(await response.arrayBuffer());
    headers.set("content-length", String(body.length));
  }
  await writeAll(conn, responseHead(response.status, headers));
  if (!withBody) {
    await response.body?.cancel();
    return;
  }
  if (body) {
    await writeAll(conn, body);
    return;
  }
  if (!response.body) return;
  // No more than the length said: a file that grew after its size was
  // taken would else send bytes past the response's end.
  let left = Number(headers.get("content-length"));
  for await (const chunk of response.body) {
    await writeAll(conn, chunk.subarray(0, left));
    left -= Math.min(left, chunk.length);
    if (left === 0) break;
  }
}
