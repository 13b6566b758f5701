/**
 * The `--targets FILE` of `servers/forward.ts`: one target a line, as
 * haproxy's `server` lines and nginx's `upstream` block list them, with
 * its options after it:
 *
 * ```text
 * # web backends
 * tcp://10.0.0.1:80 weight=3
 * tcp://10.0.0.2:80
 * tcp://10.0.0.3:80 drain     # being taken out: no new clients
 * tcp://10.0.0.4:443 tls      # spoken to in TLS
 * unix:/run/spare.sock backup # only when no other is up
 * ```
 *
 * `weight=N` (1 to 256, default 1), `backup`, `drain`, `tls` (a `tcp://`
 * target spoken to in TLS, haproxy's `ssl` on a `server` line, with
 * `--ca`, `--servername`, `--to-cert` and `--to-key`); `#` starts a
 * comment; blank lines are skipped. Every mistake is one line naming the
 * file and line: `targets.conf:3: unknown option 'wieght=2' (expected
 * weight=N, backup, drain or tls)`.
 *
 * @module
 */

import { EndpointError, parseEndpoint } from "./endpoint.ts";
import { escapeControlChars } from "./escape_control_chars.ts";
import { readSmallTextFile } from "./files.ts";
import { MAX_WEIGHT, type TargetSpec } from "./targets.ts";

/**
 * A targets file (or one of its lines) that cannot be used.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { parseTargetsFile, TargetsFileError } from "./targets_file.ts";
 *
 * assertThrows(() => parseTargetsFile("10.0.0.1:80 weight=x", "t.conf"), TargetsFileError, "t.conf:1: invalid weight 'x'");
 * ```
 */
export class TargetsFileError extends Error {
  /** Builds the error; `message` names the file and line. */
  constructor(message: string) {
    super(message);
    this.name = "TargetsFileError";
  }
}

/**
 * Parses a targets file's `text` (`file` names it in messages). Throws
 * {@linkcode TargetsFileError} for the first bad line, or when it lists no
 * target or one twice.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseTargetsFile } from "./targets_file.ts";
 *
 * assertEquals(parseTargetsFile("tcp://10.0.0.1:80 weight=3\nunix:/run/b.sock backup # spare\n"), [
 *   { endpoint: { transport: "tcp", hostname: "10.0.0.1", port: 80 }, weight: 3, backup: false, drain: false, tls: false },
 *   { endpoint: { transport: "unix", path: "/run/b.sock" }, weight: 1, backup: true, drain: false, tls: false },
 * ]);
 * ```
 */
export function parseTargetsFile(
  text: string,
  file = "targets",
): TargetSpec[] {
  const specs: TargetSpec[] = [];
  const seen = new Map<string, number>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const where = `${file}:${i + 1}`;
    const words = lines[i].replace(/#.*$/, "").trim().split(/\s+/).filter(
      (word) => word !== "",
    );
    if (words.length === 0) continue;
    const [address, ...options] = words;
    let endpoint;
    try {
      endpoint = parseEndpoint(address);
    } catch (error) {
      if (!(error instanceof EndpointError)) throw error;
      throw new TargetsFileError(
        `${where}: ${escapeControlChars(error.message)}`,
      );
    }
    if (endpoint.transport === "unixpacket") {
      throw new TargetsFileError(
        `${where}: unixpacket: is not supported (tcp://, udp:// or unix:)`,
      );
    }
    const spec = {
      endpoint,
      weight: 1,
      backup: false,
      drain: false,
      tls: false,
    };
    for (const option of options) {
      const weight = /^weight=(.*)$/.exec(option);
      if (weight) {
        if (
          !/^[0-9]+$/.test(weight[1]) || Number(weight[1]) < 1 ||
          Number(weight[1]) > MAX_WEIGHT
        ) {
          throw new TargetsFileError(
            `${where}: invalid weight '${
              escapeControlChars(weight[1])
            }' (expected a whole number from 1 to ${MAX_WEIGHT})`,
          );
        }
        spec.weight = Number(weight[1]);
      } else if (option === "backup") {
        spec.backup = true;
      } else if (option === "drain") {
        spec.drain = true;
      } else if (option === "tls") {
        if (endpoint.transport !== "tcp") {
          throw new TargetsFileError(
            `${where}: tls needs a tcp:// target, not ${address}`,
          );
        }
        spec.tls = true;
      } else {
        throw new TargetsFileError(
          `${where}: unknown option '${
            escapeControlChars(option)
          }' (expected weight=N, backup, drain or tls)`,
        );
      }
    }
    const key = address.replace(/^tcp:\/\//, "");
    const earlier = seen.get(key);
    if (earlier !== undefined) {
      throw new TargetsFileError(
        `${where}: ${address} is listed twice (first on line ${earlier})`,
      );
    }
    seen.set(key, i + 1);
    specs.push(spec);
  }
  if (specs.length === 0) {
    throw new TargetsFileError(`${file}: no targets in it`);
  }
  return specs;
}

/**
 * Reads and parses the targets file at `path` (a regular file of at most
 * `MAX_SMALL_FILE_BYTES`): a file that cannot be read is a `FileReadError`
 * (`cannot read targets file 'x': no such file`), a bad line a
 * {@linkcode TargetsFileError}.
 *
 * @example
 * ```ts ignore
 * import { readTargetsFile } from "./targets_file.ts";
 *
 * const specs = readTargetsFile("targets.conf");
 * ```
 */
export function readTargetsFile(path: string): TargetSpec[] {
  return parseTargetsFile(readSmallTextFile(path, "targets file"), path);
}
