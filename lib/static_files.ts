/**
 * Static files beside a WebSocket endpoint (`forward.ts --web DIR`, as
 * websockify's `--web`): GET and HEAD of the regular files under one
 * folder, so a page and its socket come from one origin. Nothing outside
 * the folder is served: a path with a `..`, `.` or empty segment, a
 * backslash or a NUL (encoded or not), or a name starting with a dot is
 * refused (404), and a file reached through a symbolic link must still be
 * inside the folder once resolved. `/` and a folder serve its
 * `index.html`. No listings, no ranges, no caching headers: a small
 * safe handler, not a web server.
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";
import { formatBytes } from "./units.ts";

/** Content types by file extension; anything else is `application/octet-stream`. */
const CONTENT_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  htm: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json",
  txt: "text/plain; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  ico: "image/x-icon",
  wasm: "application/wasm",
};

/** Largest file served, in bytes: a page and its scripts, not downloads. */
export const MAX_STATIC_FILE_BYTES = 16 * 1024 * 1024;

function status(code: number, text: string): Response {
  return new Response(`${text}\n`, {
    status: code,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/**
 * The path under `root` that `pathname` (a URL's, still percent-encoded)
 * names, or `undefined` when it could name something outside it.
 */
function safeRelativePath(pathname: string): string[] | undefined {
  const segments = pathname.split("/").slice(1);
  const decoded: string[] = [];
  for (const [index, raw] of segments.entries()) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return undefined;
    }
    // A trailing slash names the folder's index.
    if (segment === "" && index === segments.length - 1) break;
    if (
      segment === "" || segment.startsWith(".") || /[\/\\\0]/.test(segment)
    ) {
      return undefined;
    }
    decoded.push(segment);
  }
  return decoded;
}

/**
 * Answers `request` from the files under `root` (see the module doc): 200
 * with the file, 404 for anything not served, 403 for a file larger than
 * {@linkcode MAX_STATIC_FILE_BYTES}, 405 for a method other than GET and
 * HEAD.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serveStaticFile } from "./static_files.ts";
 *
 * const root = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${root}/index.html`, "<p>hi</p>");
 * const page = await serveStaticFile(root, new Request("http://x/"));
 * assertEquals(await page.text(), "<p>hi</p>");
 * const outside = await serveStaticFile(root, new Request("http://x/%2e%2e/etc/passwd"));
 * assertEquals(outside.status, 404);
 * await outside.body?.cancel();
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function serveStaticFile(
  root: string,
  request: Request,
): Promise<Response> {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return status(405, "method not allowed");
  }
  const segments = safeRelativePath(new URL(request.url).pathname);
  if (segments === undefined) return status(404, "not found");
  let path = [root, ...segments].join("/");
  try {
    const realRoot = await Deno.realPath(root);
    let info = await Deno.stat(path);
    if (info.isDirectory) {
      path += "/index.html";
      info = await Deno.stat(path);
    }
    const real = await Deno.realPath(path);
    if (!info.isFile || !real.startsWith(`${realRoot}/`)) {
      return status(404, "not found");
    }
    if (info.size > MAX_STATIC_FILE_BYTES) {
      // There, but refused: a 404 would send its owner looking for a typo.
      return status(403, `larger than ${formatBytes(MAX_STATIC_FILE_BYTES)}`);
    }
    const extension = /\.([a-z0-9]+)$/i.exec(real)?.[1].toLowerCase() ?? "";
    const headers = {
      "content-type": CONTENT_TYPES[extension] ?? "application/octet-stream",
      "content-length": String(info.size),
      "x-content-type-options": "nosniff",
    };
    if (request.method === "HEAD") return new Response(null, { headers });
    const file = await Deno.open(real);
    return new Response(file.readable, { headers });
  } catch (error) {
    if (
      error instanceof Deno.errors.NotFound ||
      error instanceof Deno.errors.NotADirectory
    ) {
      return status(404, "not found");
    }
    return status(
      500,
      `cannot read ${escapeControlChars(segments.join("/"))}`,
    );
  }
}
