/**
 * Quote of the Day server (RFC 865): sends one quotation, its lines ending
 * in CRLF, at most 512 bytes, and closes. With `--udp`, any datagram gets
 * one quotation. `--file FILE` serves your own: one quotation per paragraph
 * (paragraphs are separated by blank lines); each is picked at random. No
 * seed example: one of the RFC simple services the seed's servers are the
 * start of (the seed: the classic C socket examples page this toolkit
 * ports).
 *
 * As a user, on port 10017, where inetd puts it (`deno task qotd`), and
 * with quotations of your own (which need read permission):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10017 servers/qotd.ts --port=10017 &
 * listening on 0.0.0.0:10017
 * $ printf 'Talk is cheap.\n  -- Linus Torvalds\n' > quotes.txt
 * $ deno run --allow-net=127.0.0.1:10018 --allow-read=quotes.txt \
 *     servers/qotd.ts --hostname 127.0.0.1 --port 10018 --file quotes.txt &
 * listening on 127.0.0.1:10018
 * $ socat - TCP:127.0.0.1:10018
 * Talk is cheap.
 *   -- Linus Torvalds
 * accepted 127.0.0.1:50530
 * closed 127.0.0.1:50530 (0 bytes in, 37 bytes out)
 * ```
 *
 * UDP (replies go to whoever sent, so it needs host-wide net permission);
 * port 17 itself needs root:
 *
 * ```sh
 * $ deno run --unstable-net --allow-net --allow-read=quotes.txt \
 *     servers/qotd.ts --udp --port 10017 --file quotes.txt &
 * listening on 0.0.0.0:10017
 * $ echo | socat - UDP:127.0.0.1:10017,sourceport=40000
 * Talk is cheap.
 *   -- Linus Torvalds
 * $ deno run --allow-net=0.0.0.0:17 servers/qotd.ts &   # as root
 * listening on 0.0.0.0:17
 * $ deno install -g -f -n sock-qotd --config=deno.json --allow-net=0.0.0.0:10017 servers/qotd.ts -- --port=10017
 * ...
 * $ sock-qotd --help
 * usage: qotd.ts [options]
 * ...
 * ```
 *
 * A quotation longer than 512 bytes on the wire is refused when the file is
 * loaded, not cut on the wire: RFC 865 caps the message at 512 characters.
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:10017,127.0.0.1:9100 servers/qotd.ts \
 *     --port=10017 --stats 127.0.0.1:9100 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:10017
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_connections_open'
 * sockets_connections_open{service="qotd",transport="tcp"} 0
 * ```
 *
 * @module
 */

import {
  escapeControlChars,
  flag,
  flagsHelp,
  formatBytes,
  MAX_SIMPLE_DATAGRAM,
  MAX_SMALL_FILE_BYTES,
  readSmallTextFile,
  replyService,
  type Server,
  serverFlags,
  type ServerOptions,
  serverOptionsFromFlags,
  serveSimple,
  type Service,
  SIMPLE_SERVICE_PORTS,
  udpGuardHelp,
  userPortHelp,
} from "../mod.ts";
import { runServerScript } from "../lib/server_cli.ts";

/** The quotations served when no file is given (all in the public domain). */
export const DEFAULT_QUOTATIONS: readonly string[] = Object.freeze([
  "Be conservative in what you do, be liberal in what you accept from others.\n  -- Jon Postel, RFC 761",
  "The purpose of computing is insight, not numbers.\n  -- Richard Hamming",
  "Simplicity is prerequisite for reliability.\n  -- Edsger W. Dijkstra",
  "Well begun is half done.\n  -- Aristotle",
  "Where there is much light, the shadow is deep.\n  -- Johann Wolfgang von Goethe",
]);

/**
 * A quotation file is empty or holds a quotation that is too long.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { parseQuotations, QuotationError } from "./qotd.ts";
 *
 * assertThrows(() => parseQuotations("\n\n"), QuotationError);
 * ```
 */
export class QuotationError extends Error {
  /** Builds the error; `message` says which quotation and why. */
  constructor(message: string) {
    super(message);
    this.name = "QuotationError";
  }
}

const encoder = new TextEncoder();

/**
 * A quotation as it goes on the wire: every line ending in CRLF (trailing
 * blanks and blank lines at either end dropped).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { quotationBytes } from "./qotd.ts";
 *
 * const text = new TextDecoder().decode(quotationBytes("To be.\n  -- Someone\n"));
 * assertEquals(text, "To be.\r\n  -- Someone\r\n");
 * ```
 */
export function quotationBytes(quotation: string): Uint8Array {
  const lines = quotation.replace(/\r\n?/g, "\n").split("\n")
    .map((line) => line.trimEnd());
  while (lines.length > 0 && lines[0] === "") lines.shift();
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return encoder.encode(lines.map((line) => `${line}\r\n`).join(""));
}

/**
 * Splits a quotation file into its paragraphs (separated by blank lines)
 * and encodes each with {@linkcode quotationBytes}. Throws
 * {@linkcode QuotationError} when there is none, or when one is longer
 * than 512 bytes on the wire (RFC 865's limit), naming it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseQuotations } from "./qotd.ts";
 *
 * assertEquals(parseQuotations("One.\n -- A\n\n\nTwo.\n -- B\n").length, 2);
 * ```
 */
export function parseQuotations(text: string): Uint8Array[] {
  const paragraphs = text.replace(/\r\n?/g, "\n").split(/\n[ \t]*\n/)
    .filter((paragraph) => paragraph.trim() !== "");
  if (paragraphs.length === 0) {
    throw new QuotationError(
      "no quotations (expected one per paragraph, separated by blank lines)",
    );
  }
  return paragraphs.map((paragraph, index) => {
    const bytes = quotationBytes(paragraph);
    if (bytes.byteLength > MAX_SIMPLE_DATAGRAM) {
      // Escaped: the file's control bytes must not reach the terminal.
      throw new QuotationError(
        `quotation ${index + 1} ("${
          escapeControlChars(paragraph.trim().slice(0, 30))
        }...") is ${bytes.byteLength} bytes with CRLF line ends; RFC 865 allows at most ${MAX_SIMPLE_DATAGRAM}`,
      );
    }
    return bytes;
  });
}

/**
 * The RFC 865 qotd service, for {@linkcode serveSimple} or an inetd: each
 * reply is one of `quotations` (already encoded, e.g. by
 * {@linkcode parseQuotations}), picked at random.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseQuotations, qotdService } from "./qotd.ts";
 *
 * const service = qotdService(parseQuotations("Only one.\n"));
 * const reply = await service.datagram!(new Uint8Array(0), {
 *   transport: "udp",
 *   hostname: "127.0.0.1",
 *   port: 5000,
 * });
 * assertEquals(new TextDecoder().decode(reply!), "Only one.\r\n");
 * ```
 */
export function qotdService(
  quotations: readonly Uint8Array[] = DEFAULT_QUOTATIONS.map(quotationBytes),
): Service {
  if (quotations.length === 0) throw new QuotationError("no quotations");
  return replyService(
    "qotd",
    SIMPLE_SERVICE_PORTS.qotd,
    () => quotations[Math.floor(Math.random() * quotations.length)],
  );
}

/** Options for {@linkcode serveQotd}. */
export interface QotdOptions extends ServerOptions {
  /** Encoded quotations (see {@linkcode parseQuotations}); default the built-in ones. */
  quotations?: readonly Uint8Array[];
}

/**
 * Starts a qotd server (default TCP on 0.0.0.0:17).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseQuotations, serveQotd } from "./qotd.ts";
 * import { readExact } from "../mod.ts";
 *
 * await using server = serveQotd({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   quotations: parseQuotations("Hello.\n"),
 *   log: () => {},
 * });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * assertEquals(new TextDecoder().decode(await readExact(conn, 8)), "Hello.\r\n");
 * ```
 */
export function serveQotd(options: QotdOptions = {}): Server {
  const { quotations, ...rest } = options;
  return serveSimple(qotdService(quotations), rest);
}

/**
 * Reads and parses a quotation file (see {@linkcode parseQuotations}): a
 * regular file of at most 1 MiB, else a `FileReadError` (from `mod.ts`);
 * every error names the file, its control characters escaped.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { loadQuotations } from "./qotd.ts";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "First.\n\nSecond.\n");
 * assertEquals((await loadQuotations(path)).length, 2);
 * await Deno.remove(path);
 * ```
 */
export function loadQuotations(path: string): Promise<Uint8Array[]> {
  try {
    // A FIFO or /dev/zero is refused before it is opened (no hang, no
    // unbounded read).
    const text = readSmallTextFile(path, "quotation file");
    return Promise.resolve(parseQuotations(text));
  } catch (error) {
    return Promise.reject(
      error instanceof QuotationError
        ? new QuotationError(`${escapeControlChars(path)}: ${error.message}`)
        : error,
    );
  }
}

const FLAGS = {
  file: flag.string(
    "FILE",
    `serve the quotations in FILE, one per paragraph (a\nregular file of at most ${
      formatBytes(MAX_SMALL_FILE_BYTES)
    })`,
  ),
  ...serverFlags({ port: SIMPLE_SERVICE_PORTS.qotd }),
};

const USAGE = `usage: qotd.ts [options]

Quote of the Day server (RFC 865): sends one quotation (at most 512 bytes,
CRLF line ends) and closes; with --udp, answers each datagram.

${flagsHelp(FLAGS)}

${udpGuardHelp()}

${userPortHelp("qotd")}
Permissions: --allow-net=HOST:PORT for TCP (plus --allow-read=FILE with
--file); for --udp, --unstable-net and --allow-net (replies go to any sender).`;

if (import.meta.main) {
  await runServerScript(USAGE, FLAGS, async (values) => {
    const options = serverOptionsFromFlags(values);
    const quotations = values.file === undefined
      ? undefined
      : await loadQuotations(values.file);
    return serveQotd({ ...options, quotations });
  });
}
